import Foundation
import LoupeProto
import LoupeSegmentation
import Synchronization
import Testing

extension SegmentationTests {
    /// The one training-job type the camera, the manager and a worker share.
    @Suite struct TrainingJobTests {
        private let classes = ClassInfo.defaults(count: 3)

        /// The calling thread's name, as the kernel knows it.
        static func threadName() -> String {
            ((try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? "?").trimmingCharacters(
                in: .whitespacesAndNewlines)
        }

        @Test func aJobTrainsOnItsOwnThreadReportsAtMostEveryIntervalAndStampsItsModel() async throws {
            let data = try ToyData.dataset(count: 12)
            let job = try TrainingJob(images: data, classes: classes, request: TrainingRequest(iterations: 3, seed: 4), threads: 1)
            let before = Date()
            let seen = Mutex<[(update: TrainingProgress, thread: String?, at: ContinuousClock.Instant)]>([])
            job.start(
                name: "test-training", description: "trained in a test",
                progress: { update in
                    seen.withLock { $0.append((update, Self.threadName(), .now)) }
                })
            guard case .trained(let model, let passes) = await job.outcome() else {
                Issue.record("the job did not train")
                return
            }
            let updates = seen.withLock { $0 }
            #expect(passes == 3)
            #expect(model.metadata.passes == 3 && model.metadata.createdAt >= before)
            #expect(model.metadata.description.hasPrefix("trained in a test; up to 3 passes; batch "), "\(model.metadata.description)")
            #expect(
                !updates.isEmpty && updates.allSatisfy { $0.thread == "test-training" },
                "updates come from the job's own thread: \(Set(updates.map(\.thread)))")
            #expect(updates.filter { $0.update.validationIoU != nil }.count >= 3, "every validation is reported")
            #expect(updates.last?.update.phase == .finished)
            // Between two step updates there is at least the interval; validations and the end may come sooner.
            for (previous, next) in zip(updates, updates.dropFirst()) where next.update.phase == .training {
                #expect(next.at - previous.at >= TrainingJob.updateInterval, "step updates \(next.at - previous.at) apart")
            }
            // Asking again for the outcome answers at once, with the same model.
            guard case .trained(let again, _) = await job.outcome() else {
                Issue.record("the outcome changed")
                return
            }
            #expect(again.metadata.createdAt == model.metadata.createdAt)
        }

        @Test func aCancelBeforeTheJobStartsOrWhileItTrainsEndsItCancelled() async throws {
            let data = try ToyData.dataset(count: 12)
            // Cancelled while its set was still being read: the job never trains a step.
            let early = TrainingControl()
            early.cancel()
            let first = try TrainingJob(
                images: data, classes: classes, request: TrainingRequest(iterations: 50), threads: 1, control: early)
            first.start(name: "test-cancelled-early", description: "test")
            guard case .cancelled = await first.outcome() else {
                Issue.record("a job cancelled before it started did not end cancelled")
                return
            }
            // Cancelled mid-run: it stops at its next step and leaves no model.
            let second = try TrainingJob(images: data, classes: classes, request: TrainingRequest(timeBudgetSeconds: 600), threads: 1)
            let trained = Atomic<Int>(0)
            second.start(name: "test-cancelled", description: "test", progress: { _ in trained.add(1, ordering: .relaxed) })
            let deadline = ContinuousClock.now + .seconds(60)
            while trained.load(ordering: .relaxed) < 2, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
            second.cancel()
            let started = ContinuousClock.now
            guard case .cancelled = await second.outcome() else {
                Issue.record("a job cancelled mid-run did not end cancelled")
                return
            }
            #expect(ContinuousClock.now - started < .seconds(30), "a 600 s job stopped soon after its cancel")
        }

        @Test(arguments: [
            (TrainingRequest(iterations: 0), "iterations must be 1…10000, not 0"),
            (TrainingRequest(iterations: 20_000), "iterations must be 1…10000, not 20000"),
            (TrainingRequest(timeBudgetSeconds: -1), "the time budget must be more than 0 seconds"),
            (TrainingRequest(timeBudgetSeconds: .nan), "the time budget must be more than 0 seconds"),
            (TrainingRequest(timeBudgetSeconds: 8 * 86_400), "at most a week"),
            (TrainingRequest(augmentation: Augmentation(rotationDegrees: 500)), "rotation 0…180 degrees"),
            (TrainingRequest(augmentation: Augmentation(brightness: -0.5)), "brightness and contrast 0…1"),
        ])
        func requestsOutOfRangeAreRefusedByNameBeforeAThreadStarts(request: TrainingRequest, named: String) throws {
            let data = try ToyData.dataset(count: 4)
            let error = #expect(throws: SegmentationError.self) {
                try TrainingJob(images: data, classes: classes, request: request, threads: 1)
            }
            guard case .invalidRequest(let why)? = error else {
                Issue.record("refused as \(String(describing: error)), not as an invalid request")
                return
            }
            #expect(why.contains(named), "\(why)")
            // The same rule refuses it from the wire (where 0 passes means "not set", the default).
            guard request.iterations != 0 else { return }
            let start = Loupe_V1_TrainingStart(inspectionType: "disc", request: request)
            #expect(throws: SegmentationError.self) { try TrainingRequest(start).validate() }
        }

        @Test func aSetThatDoesNotMatchItsClassNamesIsRefused() throws {
            let data = try ToyData.dataset(count: 4)
            #expect(throws: SegmentationError.self) {
                try TrainingJob(images: data, classes: ClassInfo.defaults(count: 2), request: TrainingRequest(), threads: 1)
            }
        }

        @Test func aRequestCrossesTheWireUnchanged() {
            let full = TrainingRequest(
                iterations: 12, timeBudgetSeconds: 90,
                augmentation: Augmentation(flipHorizontal: false, flipVertical: true, rotationDegrees: 12, brightness: 0.25, contrast: 0.5),
                seed: 7)
            #expect(TrainingRequest(Loupe_V1_TrainingStart(inspectionType: "disc", request: full)) == full)
            // Nothing set stays nothing set (0 on the wire), so each side applies its default.
            let empty = Loupe_V1_TrainingStart(inspectionType: "disc", request: TrainingRequest())
            #expect(empty.iterations == 0 && empty.timeBudgetSeconds == 0 && empty.seed == 0 && !empty.hasAugmentation)
            #expect(TrainingRequest(empty) == TrainingRequest())
            // The wire counts whole seconds: a budget under a second stays a budget (not "none", which meant 30 passes).
            let short = Loupe_V1_TrainingStart(inspectionType: "disc", request: TrainingRequest(timeBudgetSeconds: 0.4))
            #expect(short.timeBudgetSeconds == 1)
            #expect(Loupe_V1_TrainingStart(inspectionType: "disc", request: TrainingRequest(timeBudgetSeconds: 2.2)).timeBudgetSeconds == 3)
        }
    }
}
