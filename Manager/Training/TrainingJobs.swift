public import Foundation
public import LoupeProto
import LoupeWire
import Synchronization

/// One training job as the queue keeps it: what was asked, by whom, where it stands, and who holds it.
public struct TrainingJobRecord: Sendable, Equatable {
    public var id: String
    public var request: Loupe_V1_TrainingStart
    public var requester: String
    public var requesterIsCamera: Bool
    public var queuedAt: Date
    /// The latest progress; its state is the job's state.
    public var progress: Loupe_V1_TrainingProgress
    /// The latest updates, oldest first (at most `TrainingJobRecord.historyLimit`).
    public var history: [Loupe_V1_TrainingProgress]
    /// Every update this job has had, the ones dropped from `history` included: who relays progress sends the
    /// updates after the count it last sent.
    public var updates: Int
    /// Who holds the job while it runs (a worker's certificate name, or `manager:ID`), and until when.
    public var holder: String?
    public var leaseUntil: Date?
    /// Claims so far: 1 while its first holder runs it.
    public var attempts: Int
    public var cancelRequested: Bool

    /// Progress updates kept per job for `loupe train logs`.
    public static let historyLimit = 500
    /// Finished jobs kept for status.
    public static let finishedLimit = 100

    public init(id: String, request: Loupe_V1_TrainingStart, requester: String, requesterIsCamera: Bool, queuedAt: Date = Date()) {
        self.id = id
        self.request = request
        self.requester = requester
        self.requesterIsCamera = requesterIsCamera
        self.queuedAt = queuedAt
        var progress = Loupe_V1_TrainingProgress()
        progress.jobID = id
        progress.state = .queued
        progress.passesTotal = request.iterations
        self.progress = progress
        history = [progress]
        updates = 1
        attempts = 0
        cancelRequested = false
    }

    public var state: Loupe_V1_TrainingProgress.State { progress.state }
    public var hasEnded: Bool { Self.ended.contains(progress.state) }
    public static let ended: Set<Loupe_V1_TrainingProgress.State> = [.succeeded, .failed, .cancelled]

    /// Adds an update (its job id set to this job's).
    public mutating func note(_ update: Loupe_V1_TrainingProgress) {
        var update = update
        update.jobID = id
        progress = update
        history.append(update)
        if history.count > Self.historyLimit { history.removeFirst(history.count - Self.historyLimit) }
        updates += 1
    }

    /// The rules of a claim, for every store: running, held by `holder` until `until`, one more attempt; or, when
    /// the job has used up its attempts, failed naming why (and not claimed).
    mutating func claimed(by holder: String, until: Date, maxAttempts: Int) -> Bool {
        if attempts >= maxAttempts {
            var failed = progress
            failed.state = .failed
            failed.message = "its holder (\(self.holder ?? "?")) stopped reporting \(attempts) times; the job is not tried again"
            note(failed)
            self.holder = nil
            leaseUntil = nil
            return false
        }
        attempts += 1
        self.holder = holder
        leaseUntil = until
        var running = progress
        running.state = .running
        running.message = attempts > 1 ? "attempt \(attempts), on \(holder)" : "on \(holder)"
        note(running)
        return true
    }

    /// As the wire's status query shows it.
    public var wire: Loupe_V1_TrainingJob {
        var job = Loupe_V1_TrainingJob()
        job.jobID = id
        job.inspectionType = request.inspectionType
        job.requester = requester
        job.queuedUnixMs = UInt64(queuedAt.timeIntervalSince1970 * 1000)
        job.progress = progress
        job.history = history
        job.request = request
        return job
    }
}

/// What a renewal found.
public enum TrainingLease: Sendable, Equatable {
    /// Still held; `cancelRequested` when someone asked to cancel it.
    case held(TrainingJobRecord)
    /// Not (or no longer) held by this holder: its lease ran out and another took it, or it ended.
    case lost(String)
    /// There is no such job (never queued, or finished long enough ago to be forgotten).
    case missing
}

/// The queue of training jobs: a table in the manager's database (PostgreSQL: every manager and worker of the
/// plant claims from it), or the manager's memory (SQLite: one manager, jobs as long as it runs). A claim takes
/// the oldest job that is queued, or whose holder's lease ran out; a holder renews its lease with each report.
public protocol TrainingJobStoring: Sendable {
    func enqueue(_ job: TrainingJobRecord) async throws
    /// The oldest claimable job, now held by `holder` for `lease`; nil when there is none.
    func claim(holder: String, lease: Duration, maxAttempts: Int) async throws -> TrainingJobRecord?
    /// Adds `updates` to a job `holder` holds and extends its lease.
    func renew(_ id: String, holder: String, updates: [Loupe_V1_TrainingProgress], lease: Duration) async throws -> TrainingLease
    /// Ends a job `holder` holds with its last update (SUCCEEDED, FAILED or CANCELLED).
    func finish(_ id: String, holder: String, last: Loupe_V1_TrainingProgress) async throws -> TrainingLease
    /// Gives a held job back to the queue at once (its holder is shutting down), its attempt not counted.
    func release(_ id: String, holder: String) async throws
    /// Cancels a queued job at once; marks a running one for its holder to stop. nil: no such job that has not ended.
    func requestCancel(_ id: String) async throws -> TrainingJobRecord?
    func job(_ id: String) async throws -> TrainingJobRecord?
    /// Jobs newest first, at most `limit`.
    func jobs(limit: Int) async throws -> [TrainingJobRecord]
    /// Jobs one requester has queued or running.
    func active(requester: String) async throws -> Int
    func counts() async throws -> (queued: Int, running: Int)
}

/// The queue in the manager's memory: one manager (SQLite storage); its jobs end with the process.
public final class MemoryTrainingJobs: TrainingJobStoring {
    private let jobsByAge = Mutex<[TrainingJobRecord]>([])

    public init() {}

    public func enqueue(_ job: TrainingJobRecord) async throws {
        jobsByAge.withLock { jobs in
            jobs.append(job)
            let finished = jobs.filter(\.hasEnded)
            if finished.count > TrainingJobRecord.finishedLimit {
                let drop = Set(finished.prefix(finished.count - TrainingJobRecord.finishedLimit).map(\.id))
                jobs.removeAll { drop.contains($0.id) }
            }
        }
    }

    public func claim(holder: String, lease: Duration, maxAttempts: Int) async throws -> TrainingJobRecord? {
        let now = Date()
        return jobsByAge.withLock { jobs -> TrainingJobRecord? in
            // Oldest first, as the database orders them (queued time, then id).
            for index in jobs.indices.sorted(by: { (jobs[$0].queuedAt, jobs[$0].id) < (jobs[$1].queuedAt, jobs[$1].id) }) {
                let job = jobs[index]
                let claimable = job.state == .queued || (job.state == .running && (job.leaseUntil ?? .distantPast) < now)
                guard claimable else { continue }
                if jobs[index].claimed(by: holder, until: now.addingTimeInterval(lease.seconds), maxAttempts: maxAttempts) {
                    return jobs[index]
                }
            }
            return nil
        }
    }

    public func renew(_ id: String, holder: String, updates: [Loupe_V1_TrainingProgress], lease: Duration) async throws -> TrainingLease {
        jobsByAge.withLock { jobs in
            guard let index = jobs.firstIndex(where: { $0.id == id }) else { return .missing }
            guard jobs[index].state == .running, jobs[index].holder == holder else {
                return .lost(
                    "training job \(id) is not held by \(holder) (\(jobs[index].holder.map { "held by \($0)" } ?? "\(jobs[index].state)"))")
            }
            for update in updates { jobs[index].note(update) }
            jobs[index].leaseUntil = Date().addingTimeInterval(lease.seconds)
            return .held(jobs[index])
        }
    }

    public func finish(_ id: String, holder: String, last: Loupe_V1_TrainingProgress) async throws -> TrainingLease {
        jobsByAge.withLock { jobs in
            guard let index = jobs.firstIndex(where: { $0.id == id }) else { return .missing }
            guard jobs[index].state == .running, jobs[index].holder == holder else {
                return .lost("training job \(id) is not held by \(holder)")
            }
            jobs[index].note(last)
            jobs[index].leaseUntil = nil
            return .held(jobs[index])
        }
    }

    public func release(_ id: String, holder: String) async throws {
        jobsByAge.withLock { jobs in
            guard let index = jobs.firstIndex(where: { $0.id == id }), jobs[index].state == .running, jobs[index].holder == holder else {
                return
            }
            jobs[index].release()
        }
    }

    public func requestCancel(_ id: String) async throws -> TrainingJobRecord? {
        jobsByAge.withLock { jobs in
            guard let index = jobs.firstIndex(where: { $0.id == id }), !jobs[index].hasEnded else { return nil }
            jobs[index].cancel()
            return jobs[index]
        }
    }

    public func job(_ id: String) async throws -> TrainingJobRecord? { jobsByAge.withLock { $0.first { $0.id == id } } }

    public func jobs(limit: Int) async throws -> [TrainingJobRecord] {
        jobsByAge.withLock { jobs in Array(jobs.sorted { ($0.queuedAt, $0.id) > ($1.queuedAt, $1.id) }.prefix(limit)) }
    }

    public func active(requester: String) async throws -> Int {
        jobsByAge.withLock { $0.filter { $0.requester == requester && !$0.hasEnded }.count }
    }

    public func counts() async throws -> (queued: Int, running: Int) {
        jobsByAge.withLock { jobs in (jobs.filter { $0.state == .queued }.count, jobs.filter { $0.state == .running }.count) }
    }
}

extension TrainingJobRecord {
    /// Back to the queue, as a holder that shuts down leaves it: the attempt it had is given back.
    mutating func release() {
        var queued = progress
        queued.state = .queued
        queued.message = "given back by \(holder ?? "?"), queued again"
        note(queued)
        holder = nil
        leaseUntil = nil
        attempts = max(0, attempts - 1)
    }

    /// A queued job ends cancelled; a running one is marked for its holder to stop.
    mutating func cancel() {
        if state == .queued {
            var cancelled = progress
            cancelled.state = .cancelled
            cancelled.message = "cancelled before it started"
            note(cancelled)
        } else {
            cancelRequested = true
        }
    }
}
