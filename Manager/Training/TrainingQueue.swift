import Foundation
import Prometheus
import Logging
import LoupeProto
import LoupeSegmentation
import LoupeWire
import Synchronization

/// Central training: jobs run one at a time (or `concurrency` at a time) on
/// the manager's training data for their inspection type. Progress goes to
/// whoever asked, as TrainingProgress events carrying the job id. A job that
/// succeeds becomes a signed version in the registry and, when a camera
/// asked for it, is pushed to that camera; a failed or cancelled job changes
/// no model anywhere.
public final class TrainingQueue: Sendable {
    struct Job: Sendable {
        var id: String
        var request: Loupe_V1_TrainingStart
        var requester: String
        var requesterIsCamera: Bool
        var control = TrainingControl()
        var listeners: [WireConnection]
        var progress = Loupe_V1_TrainingProgress()
    }

    private let data: any TrainingDataStoring
    private let registry: any ModelRegistryStoring
    private let logger: Logger
    private let concurrency: Int
    private let threadCount: Int
    private struct State {
        var waiting: [Job] = []
        var running: [String: Job] = [:]
        var counter = 0
        /// Every job of this run of the manager, for status and logs, oldest first.
        var records: [Loupe_V1_TrainingJob] = []
        /// Operators following a job (besides the one who started it).
        var followers: [String: [WireConnection]] = [:]
    }
    /// Progress updates kept per job for `loupe train logs`.
    public static let historyLimit = 500
    /// Finished jobs kept for status.
    public static let finishedLimit = 100
    private let state = Mutex(State())
    /// Every job thread is in this group while it runs.
    private let threads = DispatchGroup()

    private let metrics: ManagerMetrics?
    /// Called after a finished job assigned its model to the camera that asked (the offers wake on it).
    private let onAssigned: @Sendable () -> Void
    /// Progress to send, in the order it was made; one task sends it, so a job's thread never waits on a peer.
    private let outgoing: AsyncStream<(Loupe_V1_TrainingProgress, [WireConnection])>.Continuation
    private let sender: Task<Void, Never>

    public init(data: any TrainingDataStoring, registry: any ModelRegistryStoring, concurrency: Int, threads: Int, metrics: ManagerMetrics? = nil,
                logger: Logger, onAssigned: @escaping @Sendable () -> Void = {}) {
        self.metrics = metrics
        self.onAssigned = onAssigned
        let (updates, outgoing) = AsyncStream<(Loupe_V1_TrainingProgress, [WireConnection])>.makeStream()
        self.outgoing = outgoing
        sender = Task {
            for await (progress, listeners) in updates { await Self.send(progress, to: listeners) }
        }
        self.data = data
        self.registry = registry
        self.concurrency = max(1, concurrency)
        self.threadCount = max(1, threads)
        self.logger = logger
    }

    /// Jobs waiting and running now.
    public var counts: (queued: Int, running: Int) { state.withLock { ($0.waiting.count, $0.running.count) } }

    /// Queues a job and returns its first progress (QUEUED, with the job id).
    public func submit(_ request: Loupe_V1_TrainingStart, requester: String, isCamera: Bool, connection: WireConnection) async throws -> Loupe_V1_TrainingProgress {
        guard !request.inspectionType.isEmpty else { throw WireError.refused(code: .invalidArgument, message: "inspection_type is required") }
        guard request.iterations <= 10_000, request.timeBudgetSeconds <= 7 * 86_400 else {
            throw WireError.refused(code: .invalidArgument, message: "iterations must be at most 10000 and time_budget_seconds at most a week")
        }
        // Refused now, by name, rather than queued to fail when the job starts.
        let held: Int
        do { held = try await data.count(cameraId: nil, inspectionType: request.inspectionType) } catch {
            throw WireError.refused(code: .unavailable, message: "cannot read the training data: \(error)")
        }
        guard held > 0 else {
            throw WireError.refused(code: .notFound, message: "no labelled ROIs of inspection type \(request.inspectionType) are held; upload some before training")
        }
        let (job, started) = state.withLock { state -> (Job, Bool) in
            state.counter += 1
            var job = Job(id: "job-\(Int(Date().timeIntervalSince1970))-\(state.counter)", request: request, requester: requester,
                          requesterIsCamera: isCamera, listeners: [connection])
            job.progress.jobID = job.id
            job.progress.state = .queued
            job.progress.passesTotal = request.iterations
            state.waiting.append(job)
            var record = Loupe_V1_TrainingJob()
            record.jobID = job.id
            record.inspectionType = request.inspectionType
            record.requester = requester
            record.queuedUnixMs = UInt64(Date().timeIntervalSince1970 * 1000)
            record.progress = job.progress
            record.history = [job.progress]
            record.request = request
            state.records.append(record)
            let finished = state.records.filter { [.succeeded, .failed, .cancelled].contains($0.progress.state) }
            if finished.count > Self.finishedLimit, let oldest = finished.first {
                state.records.removeAll { $0.jobID == oldest.jobID }
            }
            return (job, state.running.count < concurrency)
        }
        logger.info("training job queued", metadata: ["job": "\(job.id)", "type": "\(request.inspectionType)", "by": "\(requester)"])
        if started { startNext() }
        return job.progress
    }

    /// Jobs one requester has queued or running.
    public func activeJobs(requestedBy requester: String) -> Int {
        state.withLock { state in
            state.waiting.filter { $0.requester == requester }.count + state.running.values.filter { $0.requester == requester }.count
        }
    }

    /// Cancels a queued or running job; with `requester`, only one that requester asked for.
    public func cancel(jobId: String, onlyIfRequestedBy requester: String? = nil) throws {
        if let requester {
            let owner = state.withLock { state in
                state.waiting.first { $0.id == jobId }?.requester ?? state.running[jobId]?.requester
            }
            if let owner, owner != requester {
                throw WireError.refused(code: .permissionDenied, message: "training job \(jobId) was asked for by \(owner); camera \(requester) may cancel only its own jobs")
            }
        }
        let found = state.withLock { state -> Bool in
            if let index = state.waiting.firstIndex(where: { $0.id == jobId }) {
                var job = state.waiting.remove(at: index)
                job.progress.state = .cancelled
                job.progress.message = "cancelled before it started"
                Self.note(job.progress, in: &state)
                let progress = job.progress, listeners = job.listeners + state.followers[jobId, default: []]
                Task { await Self.send(progress, to: listeners) }
                return true
            }
            guard let job = state.running[jobId] else { return false }
            job.control.cancel()
            return true
        }
        guard found else { throw WireError.refused(code: .notFound, message: "no queued or running training job \(jobId)") }
    }

    /// At shutdown: drops queued jobs, cancels running ones and waits for
    /// their threads, so the process never exits under a training step.
    public func shutdown() async {
        state.withLock { state in
            state.waiting.removeAll()
            for job in state.running.values { job.control.cancel() }
        }
        await withCheckedContinuation { continuation in
            threads.notify(queue: .global()) { continuation.resume() }
        }
        // The jobs' last words go out before the queue is done.
        outgoing.finish()
        await sender.value
    }

    private func startNext() {
        let next = state.withLock { state -> Job? in
            guard state.running.count < concurrency, !state.waiting.isEmpty else { return nil }
            let job = state.waiting.removeFirst()
            state.running[job.id] = job
            return job
        }
        guard let job = next else { return }
        threads.enter()
        let thread = Thread { [self] in
            run(job)
            _ = state.withLock { $0.running.removeValue(forKey: job.id) }
            startNext()
            threads.leave()
        }
        thread.name = "loupe-train-\(job.id)"
        thread.start()
    }

    private static func send(_ progress: Loupe_V1_TrainingProgress, to listeners: [WireConnection]) async {
        for connection in listeners where !connection.isClosed {
            try? await connection.send(event: .trainingProgress(progress))
        }
    }

    /// Jobs newest first; one job with its progress history.
    public func status(jobId: String?) throws -> [Loupe_V1_TrainingJob] {
        let records = state.withLock { $0.records }
        guard let jobId else {
            return records.reversed().map { record in
                var record = record
                record.history = []
                return record
            }
        }
        guard let record = records.first(where: { $0.jobID == jobId }) else {
            throw WireError.refused(code: .notFound, message: "no training job \(jobId) in this run of the manager (jobs are kept until it restarts)")
        }
        return [record]
    }

    /// Sends this job's further progress to `connection` too.
    public func follow(jobId: String, connection: WireConnection) {
        state.withLock { state in
            state.followers[jobId, default: []].removeAll { $0.isClosed }
            state.followers[jobId, default: []].append(connection)
        }
    }

    private static func note(_ progress: Loupe_V1_TrainingProgress, in state: inout State) {
        guard let index = state.records.firstIndex(where: { $0.jobID == progress.jobID }) else { return }
        state.records[index].progress = progress
        state.records[index].history.append(progress)
        if state.records[index].history.count > historyLimit { state.records[index].history.removeFirst() }
    }

    private func publish(_ progress: Loupe_V1_TrainingProgress, job: Job) {
        let listeners = state.withLock { state -> [WireConnection] in
            state.running[job.id]?.progress = progress
            Self.note(progress, in: &state)
            let ended = [.succeeded, .failed, .cancelled].contains(progress.state)
            let followers = state.followers[job.id, default: []]
            if ended { state.followers[job.id] = nil }
            return (state.running[job.id]?.listeners ?? job.listeners) + followers
        }
        outgoing.yield((progress, listeners))
    }

    /// Runs async work from the job's own thread (never a task-pool thread) and waits for it: the job's steps
    /// are sequential, and the database behind the store may be a network away.
    static func waitOnThisThread<T: Sendable>(_ work: @escaping @Sendable () async throws -> T) throws -> T {
        let done = DispatchSemaphore(value: 0)
        let outcome = Mutex<Result<T, any Error>?>(nil)
        Task {
            let result: Result<T, any Error>
            do { result = .success(try await work()) } catch { result = .failure(error) }
            outcome.withLock { $0 = result }
            done.signal()
        }
        done.wait()
        guard let result = outcome.withLock({ $0 }) else { throw CancellationError() }
        return try result.get()
    }

    /// The training configuration in words, kept with the model version.
    static func describe(_ c: TrainingConfiguration) -> String {
        var parts: [String] = []
        parts.append("up to \(c.passes) passes")
        if let budget = c.timeBudgetSeconds { parts.append(String(format: "time budget %.0f s", budget)) }
        parts.append("batch \(c.batchSize), crop \(c.cropSize) px, peak learning rate \(c.optimizer.learningRate)")
        let a = c.augmentation
        parts.append("augmentation: flip \(a.flipHorizontal ? "h" : "-")\(a.flipVertical ? "v" : "-"), rotation ±\(a.rotationDegrees)°, brightness ±\(a.brightness), contrast ±\(a.contrast)")
        parts.append("validation share \(c.validationFraction), seed \(c.seed), \(c.threads) threads")
        return parts.joined(separator: "; ")
    }

    private func run(_ job: Job) {
        var progress = job.progress
        progress.state = .running
        publish(progress, job: job)
        let request = job.request
        do {
            let data = self.data
            let (dataset, classNames, datasetHash) = try Self.waitOnThisThread { try await data.dataset(inspectionType: request.inspectionType) }
            var augmentation: Augmentation?
            if request.hasAugmentation {
                let a = request.augmentation
                augmentation = Augmentation(flipHorizontal: a.flipHorizontal, flipVertical: a.flipVertical, rotationDegrees: Double(a.rotationDegrees),
                                            brightness: Double(a.brightness), contrast: Double(a.contrast))
            }
            let configuration = try TrainingConfiguration.fitted(
                to: dataset, passes: request.iterations == 0 ? nil : Int(request.iterations),
                timeBudgetSeconds: request.timeBudgetSeconds == 0 ? nil : Double(request.timeBudgetSeconds),
                augmentation: augmentation, seed: request.seed == 0 ? nil : request.seed, threads: threadCount)
            let classes = ClassInfo.defaults(count: classNames.count, names: classNames)
            var lastSent = Date.distantPast
            let result = try Trainer(configuration: configuration, classes: classes).train(dataset, control: job.control) { update in
                progress.pass = UInt32(update.pass)
                progress.passesTotal = UInt32(update.passes ?? 0)
                progress.loss = update.loss
                progress.imagesPerSecond = Float(update.imagesPerSecond)
                progress.etaSeconds = Float(update.etaSeconds)
                if let iou = update.validationIoU {
                    progress.validationClassIou = iou
                    progress.validationMiou = update.validationMIoU ?? 0
                }
                if update.validationIoU != nil || Date().timeIntervalSince(lastSent) > 0.5 {
                    lastSent = Date()
                    self.publish(progress, job: job)
                }
            }
            var model = result.model
            model.metadata.createdAt = Date()
            model.metadata.datasetSHA256 = datasetHash
            model.metadata.description = "trained centrally on \(dataset.items.count) ROIs of \(request.inspectionType) (job \(job.id), asked by \(job.requester)); "
                + Self.describe(configuration)
            let modelFile = try ModelFile.encode(model)
            let (registry, requester, assign) = (self.registry, job.requester, job.requesterIsCamera)
            let record = try Self.waitOnThisThread {
                let record = try await registry.publish(modelFile, inspectionType: request.inspectionType)
                if assign { try await registry.assign(record.version, to: [requester]) }
                return record
            }
            if assign { onAssigned() }
            progress.state = .succeeded
            progress.modelVersion = record.version
            logger.info("training job succeeded", metadata: ["job": "\(job.id)", "version": "\(record.version)", "rois": "\(dataset.items.count)"])
        } catch {
            progress.state = job.control.isCancelled ? .cancelled : .failed
            progress.message = job.control.isCancelled ? "cancelled; the models in use were kept" : "\(error)"
            logger.error("training job ended without a model", metadata: ["job": "\(job.id)", "state": "\(progress.state)", "error": "\(error)"])
        }
        switch progress.state {
        case .succeeded: metrics?.trainingSucceeded.increment()
        case .cancelled: metrics?.trainingCancelled.increment()
        default: metrics?.trainingFailed.increment()
        }
        publish(progress, job: job)
    }
}
