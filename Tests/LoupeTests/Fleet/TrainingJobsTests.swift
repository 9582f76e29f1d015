import Foundation
import LoupeManager
import LoupeProto
import LoupeTesting
import Testing

/// The training queue's rules on both backends: the memory queue of a SQLite manager, and the table in
/// PostgreSQL that every manager and worker of a plant claims from.
@Suite struct TrainingJobsTests {
    static func job(_ id: String, requester: String = "alice", at seconds: Double) -> TrainingJobRecord {
        var request = Loupe_V1_TrainingStart()
        request.inspectionType = "disc"
        request.iterations = 3
        return TrainingJobRecord(
            id: id, request: request, requester: requester, requesterIsCamera: false,
            queuedAt: Date(timeIntervalSince1970: 1_800_000_000 + seconds))
    }

    @Test(arguments: StoreBackend.all)
    func claimsTakeTheOldestJobAndLeasesRunOutIntoAnotherAttempt(_ kind: StoreBackend.Kind) async throws {
        let backend = try await StoreBackend(kind)
        let jobs = try await backend.trainingJobs()
        try await jobs.enqueue(Self.job("job-b", at: 2))
        try await jobs.enqueue(Self.job("job-a", requester: "cam-1", at: 1))
        #expect(try await jobs.counts() == (2, 0))
        #expect(try await jobs.active(requester: "cam-1") == 1)

        // Leases long enough that none runs out before the test shortens it (a loaded run takes seconds here).
        let first = try #require(try await jobs.claim(holder: "worker w1", lease: .seconds(30), maxAttempts: 2))
        #expect(first.id == "job-a" && first.state == .running && first.holder == "worker w1" && first.attempts == 1)
        let second = try #require(try await jobs.claim(holder: "worker w2", lease: .seconds(30), maxAttempts: 2))
        #expect(second.id == "job-b")
        #expect(try await jobs.claim(holder: "worker w3", lease: .seconds(30), maxAttempts: 2) == nil, "both jobs are held")

        // Only the holder renews; its updates join the history.
        var update = Loupe_V1_TrainingProgress()
        update.state = .running
        update.pass = 1
        guard case .held(let renewed) = try await jobs.renew("job-b", holder: "worker w2", updates: [update, update], lease: .seconds(30))
        else {
            Issue.record("the holder's renewal was refused")
            return
        }
        #expect(renewed.updates == second.updates + 2 && renewed.progress.pass == 1 && renewed.progress.jobID == "job-b")
        guard case .lost(let why) = try await jobs.renew("job-b", holder: "worker w3", updates: [], lease: .seconds(30)) else {
            Issue.record("a stranger renewed another worker's job")
            return
        }
        #expect(why.contains("not held by worker w3") && why.contains("held by worker w2"), "\(why)")

        // w1's last report asks for 1 s more, then it stops reporting: after that lease the job is claimed again,
        // attempt 2, and w1's late report is refused.
        guard case .held = try await jobs.renew("job-a", holder: "worker w1", updates: [], lease: .seconds(1)) else {
            Issue.record("the holder's renewal was refused")
            return
        }
        try await Task.sleep(for: .milliseconds(1500))
        let again = try #require(try await jobs.claim(holder: "worker w3", lease: .seconds(1), maxAttempts: 2))
        #expect(again.id == "job-a" && again.attempts == 2 && again.holder == "worker w3")
        #expect(again.progress.message.contains("attempt 2"), "\(again.progress.message)")
        if case .held = try await jobs.renew("job-a", holder: "worker w1", updates: [update], lease: .seconds(30)) {
            Issue.record("a holder whose lease ran out renewed it")
        }
        // Out of attempts: the next claim fails it by name instead of handing it out a third time.
        try await Task.sleep(for: .milliseconds(1500))
        #expect(try await jobs.claim(holder: "worker w4", lease: .seconds(30), maxAttempts: 2) == nil)
        let failed = try #require(try await jobs.job("job-a"))
        #expect(failed.state == .failed && failed.progress.message.contains("stopped reporting 2 times"), "\(failed.progress.message)")
        #expect(try await jobs.active(requester: "cam-1") == 0)

        // The holder ends its job; after that it holds nothing.
        var done = update
        done.state = .succeeded
        done.modelVersion = "disc-v1"
        guard case .held(let ended) = try await jobs.finish("job-b", holder: "worker w2", last: done) else {
            Issue.record("the holder could not end its job")
            return
        }
        #expect(ended.state == .succeeded && ended.progress.modelVersion == "disc-v1" && ended.history.last?.state == .succeeded)
        if case .held = try await jobs.finish("job-b", holder: "worker w2", last: done) { Issue.record("a job ended twice") }
        #expect(try await jobs.jobs(limit: 10).map(\.id) == ["job-b", "job-a"], "newest first")
    }

    @Test(arguments: StoreBackend.all)
    func cancelsAndGivingBackFollowTheJobsState(_ kind: StoreBackend.Kind) async throws {
        let backend = try await StoreBackend(kind)
        let jobs = try await backend.trainingJobs()
        try await jobs.enqueue(Self.job("job-q", at: 1))
        try await jobs.enqueue(Self.job("job-r", at: 2))
        // A queued job ends cancelled at once, and is never claimed.
        let cancelled = try #require(try await jobs.requestCancel("job-q"))
        #expect(cancelled.state == .cancelled && cancelled.progress.message == "cancelled before it started")
        #expect(try await jobs.requestCancel("job-q") == nil, "an ended job cannot be cancelled again")
        let running = try #require(try await jobs.claim(holder: "manager a", lease: .seconds(30), maxAttempts: 3))
        #expect(running.id == "job-r")
        // A running one is marked for its holder, which learns it from its next renewal; the lease stays.
        #expect(try await jobs.requestCancel("job-r")?.cancelRequested == true)
        guard case .held(let marked) = try await jobs.renew("job-r", holder: "manager a", updates: [], lease: .seconds(30)) else {
            Issue.record("the holder lost a job marked for cancelling")
            return
        }
        #expect(marked.cancelRequested && marked.state == .running)
        // Given back at shutdown: queued again at once, the attempt not counted.
        try await jobs.release("job-r", holder: "manager a")
        let back = try #require(try await jobs.job("job-r"))
        #expect(back.state == .queued && back.holder == nil && back.attempts == 0)
        #expect(try await jobs.claim(holder: "worker w1", lease: .seconds(30), maxAttempts: 3)?.attempts == 1)
    }

    /// Many claims at once, from two openings of the queue (two managers), never hand one job out twice.
    @Test(arguments: StoreBackend.all)
    func concurrentClaimsNeverShareAJob(_ kind: StoreBackend.Kind) async throws {
        let backend = try await StoreBackend(kind)
        let (one, two) = (try await backend.trainingJobs(), try await backend.trainingJobs())
        let count = 12
        for index in 0..<count { try await one.enqueue(Self.job("job-\(index)", at: Double(index))) }
        let claimed = try await withThrowingTaskGroup(of: String?.self) { group in
            for index in 0..<(count + 4) {
                let queue = index.isMultiple(of: 2) ? one : two
                group.addTask { try await queue.claim(holder: "worker w\(index)", lease: .seconds(30), maxAttempts: 3)?.id }
            }
            var ids: [String] = []
            for try await id in group { if let id { ids.append(id) } }
            return ids
        }
        #expect(claimed.count == count && Set(claimed).count == count, "\(claimed.sorted())")
        #expect(try await one.counts() == (0, count))
    }
}
