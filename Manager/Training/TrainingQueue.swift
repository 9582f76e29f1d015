import Crypto
import Foundation
import Prometheus
public import Logging
public import LoupeProto
import LoupeSegmentation
import LoupeStorage
public import LoupeWire
import Synchronization

/// Why the training queue could not do what was asked of it.
public enum TrainingQueueError: Error, CustomStringConvertible {
    case database(String)

    public var description: String {
        switch self {
        case .database(let why): "training queue: \(why)"
        }
    }
}

/// Central training. Jobs wait in a `TrainingJobStoring` queue (the plant's database with PostgreSQL storage,
/// shared by every manager; memory with SQLite) and are claimed by whoever is free: this manager, when it
/// trains (`concurrency` jobs at once, 0 to leave training to workers), or a `loupe worker` connected to any
/// manager. A holder renews its lease with each report; a job whose holder stops reporting goes back to the
/// queue when its lease runs out. Progress goes to whoever asked and whoever follows, as TrainingProgress events
/// carrying the job id, from whichever manager they are connected to. A job that succeeds becomes a version
/// signed by this manager's registry and, when a camera asked for it, is pushed to that camera; a failed or
/// cancelled job changes no model anywhere.
public final class TrainingQueue: Sendable {
    public struct Settings: Sendable {
        /// Jobs this manager trains itself at once; 0 leaves every job to workers.
        public var concurrency: Int
        /// Threads per job this manager trains.
        public var threads: Int
        /// How long a holder's lease lasts without a report.
        public var lease: Duration
        /// Claims a job gets before it fails (a worker killed mid-job costs one).
        public var maxAttempts = 3
        /// This manager as a holder of jobs.
        public var holder: String
        /// How often queued jobs and listened progress are looked for (a submit here wakes the loop at once).
        public var tick: Duration = .milliseconds(500)
        /// Where the training set of a job trained here is spooled while it trains.
        public var scratchDirectory: String

        public init(concurrency: Int, threads: Int, lease: Duration = .seconds(30), holder: String, scratchDirectory: String) {
            (self.concurrency, self.threads, self.lease, self.holder) = (max(0, concurrency), max(1, threads), lease, holder)
            self.scratchDirectory = scratchDirectory
        }
    }

    /// A connection that hears a job's progress, and how many of the job's updates it has had.
    private struct Listener {
        var connection: WireConnection
        var heard: Int
    }

    /// A job this manager trains itself.
    private struct Local {
        var control = TrainingControl()
        /// Updates made since the last renewal.
        var pending: [Loupe_V1_TrainingProgress] = []
        var renewedAt = ContinuousClock.now
        /// The manager is stopping: the job goes back to the queue instead of ending cancelled.
        var releasing = false
    }

    /// A worker's model file arriving in pieces.
    private struct Upload {
        var holder: String
        var connection: ObjectIdentifier
        var data = Data()
    }

    private struct State {
        var local: [String: Local] = [:]
        var listeners: [String: [Listener]] = [:]
        var uploads: [String: Upload] = [:]
        var counter = 0
        var stopping = false
    }

    public let settings: Settings
    let jobs: any TrainingJobStoring
    private let data: any TrainingDataStoring
    private let registry: any ModelRegistryStoring
    private let logger: Logger
    private let state = Mutex(State())
    /// Every job this manager trains is in this group while it runs.
    private let threads = DispatchGroup()
    private let metrics: ManagerMetrics?
    /// Called after a finished job assigned its model to the camera that asked (the offers wake on it).
    private let onAssigned: @Sendable () -> Void
    /// Progress to send, in the order it was made; one task sends it, so no job waits on a peer.
    private let outgoing: AsyncStream<(Loupe_V1_TrainingProgress, [WireConnection])>.Continuation
    private let sender: Task<Void, Never>
    /// Wakes the claim loop and the workers waiting for a job.
    private let wakeup = Wakeup()

    public init(
        jobs: any TrainingJobStoring, data: any TrainingDataStoring, registry: any ModelRegistryStoring, settings: Settings,
        metrics: ManagerMetrics? = nil, logger: Logger, onAssigned: @escaping @Sendable () -> Void = {}
    ) {
        self.jobs = jobs
        self.settings = settings
        self.metrics = metrics
        self.onAssigned = onAssigned
        let (updates, outgoing) = AsyncStream<(Loupe_V1_TrainingProgress, [WireConnection])>.makeStream()
        self.outgoing = outgoing
        sender = Task {
            for await (progress, listeners) in updates {
                for connection in listeners where !connection.isClosed { try? await connection.send(event: .trainingProgress(progress)) }
            }
        }
        self.data = data
        self.registry = registry
        self.logger = logger
    }

    /// Every failure of the queue's store, refused by name.
    private static func queue<T: Sendable>(_ body: () async throws -> T) async throws(WireError) -> T {
        do { return try await body() } catch let error as WireError { throw error } catch {
            throw .refused(code: .unavailable, message: "\(error)")
        }
    }

    /// Jobs waiting and running now, in the whole queue.
    public func counts() async -> (queued: Int, running: Int) { (try? await jobs.counts()) ?? (0, 0) }

    // MARK: Asking for training

    /// Queues a job and returns its first progress (QUEUED, with the job id).
    public func submit(
        _ request: Loupe_V1_TrainingStart, requester: String, isCamera: Bool, connection: WireConnection
    ) async throws -> Loupe_V1_TrainingProgress {
        guard !request.inspectionType.isEmpty else {
            throw WireError.refused(code: .invalidArgument, message: "inspection_type is required")
        }
        do { try TrainingRequest(request).validate() } catch {
            throw WireError.refused(code: .invalidArgument, message: "\(error)")
        }
        // Refused now, by name, rather than queued to fail when the job starts.
        let held: Int
        do { held = try await data.count(cameraId: nil, inspectionType: request.inspectionType) } catch {
            throw WireError.refused(code: .unavailable, message: "cannot read the training data: \(error)")
        }
        guard held > 0 else {
            throw WireError.refused(
                code: .notFound,
                message: "no labelled ROIs of inspection type \(request.inspectionType) are held; upload some before training")
        }
        let number = state.withLock { state in
            state.counter += 1
            return state.counter
        }
        // Unique across managers sharing a queue: the time, this manager's count, and a random part.
        let id = "job-\(Int(Date().timeIntervalSince1970))-\(number)-\(UUID().uuidString.prefix(4).lowercased())"
        let job = TrainingJobRecord(id: id, request: request, requester: requester, requesterIsCamera: isCamera)
        try await Self.queue { try await jobs.enqueue(job) }
        state.withLock { $0.listeners[id] = [Listener(connection: connection, heard: job.updates)] }
        logger.info("training job queued", metadata: ["job": "\(id)", "type": "\(request.inspectionType)", "by": "\(requester)"])
        wakeup.signal()
        return job.progress
    }

    /// Jobs one requester has queued or running, on every manager of the queue.
    public func activeJobs(requestedBy requester: String) async throws -> Int {
        try await Self.queue { try await jobs.active(requester: requester) }
    }

    /// Cancels a queued or running job; with `requester`, only one that requester asked for.
    public func cancel(jobId: String, onlyIfRequestedBy requester: String? = nil) async throws {
        let job = try await Self.queue { try await jobs.job(jobId) }
        guard let job, !job.hasEnded else {
            throw WireError.refused(code: .notFound, message: "no queued or running training job \(jobId)")
        }
        if let requester, job.requester != requester {
            throw WireError.refused(
                code: .permissionDenied,
                message: "training job \(jobId) was asked for by \(job.requester); camera \(requester) may cancel only its own jobs")
        }
        guard let changed = try await Self.queue({ try await jobs.requestCancel(jobId) }) else {
            throw WireError.refused(code: .notFound, message: "no queued or running training job \(jobId)")
        }
        // A job this manager trains stops at its next step; a worker's learns it from its next renewal.
        state.withLock { $0.local[jobId]?.control.cancel() }
        deliver(changed)
    }

    /// Jobs newest first; one job with its progress history.
    public func status(jobId: String?) async throws -> [Loupe_V1_TrainingJob] {
        guard let jobId else {
            return try await Self.queue { try await jobs.jobs(limit: TrainingJobRecord.finishedLimit * 2) }.map { record in
                var job = record.wire
                job.history = []
                return job
            }
        }
        guard let record = try await Self.queue({ try await jobs.job(jobId) }) else {
            throw WireError.refused(
                code: .notFound,
                message:
                    "no training job \(jobId) (finished jobs are kept while they are among the last \(TrainingJobRecord.finishedLimit))")
        }
        return [record.wire]
    }

    /// Sends this job's further progress (after the updates `status` already showed) to `connection` too.
    public func follow(jobId: String, connection: WireConnection) async {
        let heard = (try? await jobs.job(jobId))?.updates ?? 0
        state.withLock { state in
            state.listeners[jobId, default: []].removeAll { $0.connection.isClosed || $0.connection === connection }
            state.listeners[jobId, default: []].append(Listener(connection: connection, heard: heard))
        }
    }

    /// Sends each listener of the job the updates it has not had; forgets the listeners of an ended job.
    private func deliver(_ job: TrainingJobRecord) {
        state.withLock { state in
            guard var listeners = state.listeners[job.id] else { return }
            listeners.removeAll { $0.connection.isClosed }
            for index in listeners.indices where listeners[index].heard < job.updates {
                // The updates it missed that are still in the history (the oldest may have been dropped).
                let missed = min(job.updates - listeners[index].heard, job.history.count)
                for update in job.history.suffix(missed) { outgoing.yield((update, [listeners[index].connection])) }
                listeners[index].heard = job.updates
            }
            state.listeners[job.id] = job.hasEnded || listeners.isEmpty ? nil : listeners
        }
    }

    // MARK: The loop: claims for this manager, leases of its jobs, progress for its listeners

    /// Runs until cancelled: claims jobs while this manager has free slots, renews the leases of the jobs it
    /// trains, and relays the progress of jobs other managers' workers run to the listeners connected here.
    public func run() async {
        while !Task.isCancelled {
            await claimForThisManager()
            await renewLocalLeases()
            await relay()
            await wakeup.wait(for: settings.tick)
        }
    }

    private func claimForThisManager() async {
        while state.withLock({ !$0.stopping && $0.local.count < settings.concurrency }) {
            let claimed: TrainingJobRecord?
            do { claimed = try await jobs.claim(holder: settings.holder, lease: settings.lease, maxAttempts: settings.maxAttempts) } catch {
                logger.error("cannot claim a training job", metadata: ["error": "\(error)"])
                return
            }
            guard let job = claimed else { return }
            deliver(job)
            start(job)
        }
    }

    private func renewLocalLeases() async {
        let due = state.withLock { state -> [(String, [Loupe_V1_TrainingProgress])] in
            state.local.compactMap { id, local in
                guard !local.pending.isEmpty || ContinuousClock.now - local.renewedAt > settings.lease / 4 else { return nil }
                state.local[id]?.pending = []
                state.local[id]?.renewedAt = .now
                return (id, local.pending)
            }
        }
        for (id, updates) in due {
            let outcome: TrainingLease
            do { outcome = try await jobs.renew(id, holder: settings.holder, updates: updates, lease: settings.lease) } catch {
                // The queue did not answer: the updates wait for the next renewal, and the job trains on (its lease
                // may still hold; if it ran out meanwhile, the next renewal says so).
                logger.warning("cannot renew a training job's lease", metadata: ["job": "\(id)", "error": "\(error)"])
                state.withLock { $0.local[id]?.pending.insert(contentsOf: updates, at: 0) }
                continue
            }
            switch outcome {
            case .held(let job):
                if job.cancelRequested { state.withLock { $0.local[id]?.control.cancel() } }
                deliver(job)
            case .lost(let why):
                logger.warning("lost a training job's lease; stopping it", metadata: ["job": "\(id)", "why": "\(why)"])
                state.withLock { $0.local[id]?.control.cancel() }
            case .missing:
                logger.warning("a training job this manager trains is gone from the queue; stopping it", metadata: ["job": "\(id)"])
                state.withLock { $0.local[id]?.control.cancel() }
            }
        }
    }

    private func relay() async {
        let listened = state.withLock { state in state.listeners.keys.filter { state.local[$0] == nil } }
        for id in listened {
            guard let job = try? await jobs.job(id) else { continue }
            deliver(job)
        }
    }

    /// At shutdown: running jobs stop and go back to the queue (another manager or a worker takes them up),
    /// and the queue waits for their threads, so the process never exits under a training step.
    public func shutdown() async {
        state.withLock { state in
            state.stopping = true
            for id in state.local.keys {
                state.local[id]?.releasing = true
                state.local[id]?.control.cancel()
            }
        }
        await withCheckedContinuation { continuation in
            threads.notify(queue: .global()) { continuation.resume() }
        }
        // The jobs' last words go out before the queue is done.
        outgoing.finish()
        await sender.value
    }

    private func start(_ job: TrainingJobRecord) {
        state.withLock { $0.local[job.id] = Local() }
        threads.enter()
        Task {
            await runHere(job)
            _ = state.withLock { $0.local.removeValue(forKey: job.id) }
            wakeup.signal()
            threads.leave()
        }
    }

    /// Trains a job this manager holds: its set spooled to the scratch directory, then the engine on a thread of its own.
    private func runHere(_ job: TrainingJobRecord) async {
        let control = state.withLock { $0.local[job.id]?.control } ?? TrainingControl()
        let progress = Mutex(job.progress)
        let outcome: Result<Data, any Error>
        do {
            let (dataset, classNames) = try await data.dataset(
                inspectionType: job.request.inspectionType, scratchDirectory: settings.scratchDirectory)
            let training = try Self.startTraining(
                job, dataset: dataset, classNames: classNames, threads: settings.threads,
                trainer: "this manager (\(settings.holder))", control: control
            ) { update in
                progress.withLock { $0 = update }
                self.state.withLock { $0.local[job.id]?.pending.append(update) }
            }
            outcome = Self.modelFile(await training.outcome())
        } catch {
            outcome = .failure(control.isCancelled ? SegmentationError.cancelled : error)
        }
        let (releasing, pending) = state.withLock { state in
            defer { state.local[job.id]?.pending = [] }
            return (state.local[job.id]?.releasing ?? false, state.local[job.id]?.pending ?? [])
        }
        if releasing {
            logger.info("training job given back to the queue at shutdown", metadata: ["job": "\(job.id)"])
            try? await jobs.release(job.id, holder: settings.holder)
            return
        }
        _ = try? await jobs.renew(job.id, holder: settings.holder, updates: pending, lease: settings.lease)
        var final = progress.withLock { $0 }
        switch outcome {
        case .success(let modelFile):
            final = await publish(modelFile, job: job, from: final)
        case .failure(let error):
            let cancelled = (error as? SegmentationError) == .cancelled
            final.state = cancelled ? .cancelled : .failed
            final.message = cancelled ? "cancelled; the models in use were kept" : "\(error)"
            logger.error(
                "training job ended without a model", metadata: ["job": "\(job.id)", "state": "\(final.state)", "error": "\(error)"])
        }
        await end(job, holder: settings.holder, with: final)
    }

    /// Starts a job's training on this host, as the job asks: the manager's own runs and `loupe worker`'s start
    /// here, so both make the same model of the same set. `progress` hears each update as the job's report.
    static func startTraining(
        _ job: TrainingJobRecord, dataset: any TrainingImages, classNames: [String], threads: Int, trainer: String,
        control: TrainingControl, progress: @escaping @Sendable (Loupe_V1_TrainingProgress) -> Void
    ) throws -> TrainingJob {
        let training = try TrainingJob(
            images: dataset, classes: ClassInfo.defaults(count: classNames.count, names: classNames),
            request: TrainingRequest(job.request), threads: threads, control: control)
        var base = job.progress
        base.state = .running
        base.message = ""
        let report = Mutex(base)
        training.start(
            name: "loupe-train",
            description: "trained by \(trainer) on \(dataset.count) ROIs of \(job.request.inspectionType) "
                + "(job \(job.id), asked by \(job.requester))",
            progress: { update in
                progress(
                    report.withLock { report in
                        report.take(update)
                        return report
                    })
            })
        return training
    }

    /// The unsigned model file a finished job leaves, or why there is none.
    static func modelFile(_ outcome: TrainingJob.Outcome) -> Result<Data, any Error> {
        switch outcome {
        case .trained(let model, _): Result { try ModelFile.encode(model) }
        case .cancelled: .failure(SegmentationError.cancelled)
        case .failed(let error): .failure(error)
        }
    }

    /// Signs and publishes a job's model (and assigns it to the camera that asked): the job's SUCCEEDED update,
    /// or a FAILED one naming why the registry refused the file.
    /// `from`: the job's last update, whose figures (pass, loss, validation IoU) the end keeps.
    private func publish(_ modelFile: Data, job: TrainingJobRecord, from last: Loupe_V1_TrainingProgress) async -> Loupe_V1_TrainingProgress
    {
        var final = last
        do {
            let record = try await registry.publish(modelFile, inspectionType: job.request.inspectionType)
            if job.requesterIsCamera {
                try await registry.assign(record.version, to: [job.requester])
                onAssigned()
            }
            final.state = .succeeded
            final.modelVersion = record.version
            final.message = ""
            if let parts = record.validationParts { final.parts = parts.wire }
            logger.info(
                "training job succeeded", metadata: ["job": "\(job.id)", "version": "\(record.version)", "by": "\(job.holder ?? "?")"])
        } catch {
            final.state = .failed
            final.message = "the trained model was refused: \(error)"
            logger.error("training job's model refused", metadata: ["job": "\(job.id)", "error": "\(error)"])
        }
        return final
    }

    /// Ends a held job, counts it and tells its listeners.
    private func end(_ job: TrainingJobRecord, holder: String, with final: Loupe_V1_TrainingProgress) async {
        let outcome = try? await jobs.finish(job.id, holder: holder, last: final)
        switch outcome {
        case .held(let ended): deliver(ended)
        case .lost(let why):
            logger.warning("a training job ended after its lease was lost", metadata: ["job": "\(job.id)", "why": "\(why)"])
        case .missing: logger.warning("a training job ended after it was gone from the queue", metadata: ["job": "\(job.id)"])
        case nil: logger.error("cannot record a training job's end", metadata: ["job": "\(job.id)"])
        }
        switch final.state {
        case .succeeded: metrics?.trainingSucceeded.increment()
        case .cancelled: metrics?.trainingCancelled.increment()
        default: metrics?.trainingFailed.increment()
        }
    }

    // MARK: Workers

    /// A worker certificate as a holder of jobs.
    static func holder(worker name: String) -> String { "worker \(name)" }

    /// A worker's claim: the oldest claimable job, waiting up to `wait` for one.
    func claim(worker name: String, wait: Duration) async throws -> Loupe_V1_WorkAssignment {
        let deadline = ContinuousClock.now + min(wait, .seconds(60))
        let holder = Self.holder(worker: name)
        while true {
            let claimed = try await Self.queue {
                state.withLock { $0.stopping }
                    ? nil : try await jobs.claim(holder: holder, lease: settings.lease, maxAttempts: settings.maxAttempts)
            }
            if let job = claimed {
                guard let head = try await Self.queue({ try await data.datasetHead(inspectionType: job.request.inspectionType) }) else {
                    var failed = job.progress
                    failed.state = .failed
                    failed.message = "no labelled ROIs of inspection type \(job.request.inspectionType) are held any more"
                    _ = try? await jobs.finish(job.id, holder: holder, last: failed)
                    continue
                }
                deliver(job)
                logger.info(
                    "training job claimed by a worker", metadata: ["job": "\(job.id)", "worker": "\(name)", "attempt": "\(job.attempts)"])
                var assignment = Loupe_V1_WorkAssignment()
                assignment.jobID = job.id
                assignment.request = job.request
                assignment.leaseMs = UInt32(settings.lease.seconds * 1000)
                assignment.attempt = UInt32(job.attempts)
                assignment.rois = UInt64(head.rois)
                assignment.classNames = head.classNames
                assignment.requester = job.requester
                return assignment
            }
            let left = deadline - .now
            guard left > .zero, !Task.isCancelled else { return Loupe_V1_WorkAssignment() }
            await wakeup.wait(for: min(left, settings.tick * 2))
        }
    }

    /// The job, refused by name unless `holder` holds it.
    private func held(_ id: String, by holder: String) async throws -> TrainingJobRecord {
        guard let job = try await Self.queue({ try await jobs.job(id) }) else {
            throw WireError.refused(code: .notFound, message: "no training job \(id)")
        }
        guard job.state == .running, job.holder == holder else {
            throw WireError.refused(
                code: .permissionDenied,
                message: "training job \(id) is not held by \(holder) (\(job.holder.map { "held by \($0)" } ?? "it is \(job.state)"))")
        }
        return job
    }

    /// A page of a held job's training set, at most `maxBytes` of PNGs.
    func page(_ query: Loupe_V1_DatasetPageQuery, worker name: String, maxBytes: Int) async throws -> Loupe_V1_DatasetPage {
        let job = try await held(query.jobID, by: Self.holder(worker: name))
        guard (1...256).contains(query.limit) else {
            throw WireError.refused(code: .invalidArgument, message: "a dataset page holds 1…256 ROIs, not \(query.limit)")
        }
        let pieces = try await Self.queue {
            try await data.datasetPage(
                inspectionType: job.request.inspectionType, after: query.after.isEmpty ? nil : query.after, limit: Int(query.limit))
        }
        var page = Loupe_V1_DatasetPage()
        var bytes = 0
        for piece in pieces {
            let size = piece.imagePNG.count + piece.maskPNG.count
            // Always at least one ROI, so a page moves on; one ROI fits a frame, as its upload did.
            guard page.items.isEmpty || bytes + size <= maxBytes else { return page }
            bytes += size
            var item = Loupe_V1_DatasetItem()
            item.contentSha256 = piece.contentSHA256
            item.cameraID = piece.cameraId
            item.imagePng = piece.imagePNG
            item.maskPng = piece.maskPNG
            page.items.append(item)
        }
        page.last = pieces.count < Int(query.limit)
        return page
    }

    /// A worker's report: stored, relayed, and its lease renewed.
    func progress(_ report: Loupe_V1_WorkProgress, worker name: String) async throws -> Loupe_V1_WorkLease {
        let outcome = try await Self.queue {
            try await jobs.renew(report.jobID, holder: Self.holder(worker: name), updates: report.updates, lease: settings.lease)
        }
        switch outcome {
        case .held(let job):
            deliver(job)
            var lease = Loupe_V1_WorkLease()
            lease.jobID = job.id
            lease.leaseMs = UInt32(settings.lease.seconds * 1000)
            lease.cancelRequested = job.cancelRequested
            return lease
        case .lost(let why):
            throw WireError.refused(code: .permissionDenied, message: why)
        case .missing:
            throw WireError.refused(code: .notFound, message: "no training job \(report.jobID)")
        }
    }

    /// A worker's outcome: a failure, or its model file a piece at a time; the last piece's answer is the job's end.
    func result(_ piece: Loupe_V1_WorkResult, worker name: String, connection: WireConnection) async throws -> Envelope.OneOf_Body {
        let holder = Self.holder(worker: name)
        let job = try await held(piece.jobID, by: holder)
        if piece.giveBack {
            guard piece.last, piece.data.isEmpty else {
                throw WireError.refused(code: .invalidArgument, message: "a job given back carries no model data")
            }
            _ = state.withLock { $0.uploads.removeValue(forKey: job.id) }
            try await Self.queue { try await jobs.release(job.id, holder: holder) }
            logger.info("a worker gave its training job back to the queue", metadata: ["job": "\(job.id)", "worker": "\(name)"])
            wakeup.signal()
            var queued = job.progress
            queued.state = .queued
            return .trainingProgress(queued)
        }
        if !piece.error.isEmpty || piece.cancelled {
            guard piece.last, piece.data.isEmpty else {
                throw WireError.refused(
                    code: .invalidArgument, message: "a failed or cancelled result carries no model data and is the last piece")
            }
            var final = job.progress
            final.state = piece.cancelled ? .cancelled : .failed
            final.message =
                piece.cancelled ? "cancelled on \(holder); the models in use were kept" : "\(holder): \(piece.error.prefix(2000))"
            _ = state.withLock { $0.uploads.removeValue(forKey: job.id) }
            return .trainingProgress(try await finish(job, holder: holder, with: final))
        }
        let key = ObjectIdentifier(connection)
        let file = try state.withLock { state throws(WireError) -> Data? in
            if piece.offset == 0 { state.uploads[job.id] = Upload(holder: holder, connection: key) }
            guard var upload = state.uploads[job.id], upload.holder == holder, upload.connection == key else {
                throw .refused(
                    code: .invalidArgument, message: "the model of training job \(job.id) must start at offset 0 on this connection")
            }
            guard piece.offset == UInt64(upload.data.count) else {
                throw .refused(
                    code: .invalidArgument,
                    message: "the next piece of training job \(job.id)'s model starts at offset \(upload.data.count), not \(piece.offset)")
            }
            guard piece.data.count <= Int(ModelChunks.maximumBytes),
                UInt64(upload.data.count + piece.data.count) <= ModelChunks.maximumFileBytes
            else {
                state.uploads[job.id] = nil
                throw .refused(
                    code: .resourceExhausted,
                    message: "pieces are at most \(ModelChunks.maximumBytes) bytes and a model at most \(ModelChunks.maximumFileBytes)")
            }
            upload.data.append(piece.data)
            state.uploads[job.id] = piece.last ? nil : upload
            return piece.last ? upload.data : nil
        }
        guard let file else {
            // Each piece renews the lease, so a large model on a slow link keeps its job.
            var report = Loupe_V1_WorkProgress()
            report.jobID = job.id
            return .workLease(try await progress(report, worker: name))
        }
        let sum = SHA256.hash(data: file).hexString
        guard sum == piece.sha256.lowercased() else {
            throw WireError.refused(
                code: .invalidArgument,
                message:
                    "training job \(job.id)'s model arrived with SHA-256 \(sum), not the \(piece.sha256) its worker sent; send it again")
        }
        // The worker's last report (sent before its result) carries the figures.
        let final = await publish(file, job: job, from: job.progress)
        return .trainingProgress(try await finish(job, holder: holder, with: final))
    }

    private func finish(
        _ job: TrainingJobRecord, holder: String, with final: Loupe_V1_TrainingProgress
    ) async throws -> Loupe_V1_TrainingProgress {
        switch try await Self.queue({ try await jobs.finish(job.id, holder: holder, last: final) }) {
        case .held(let ended):
            deliver(ended)
            switch final.state {
            case .succeeded: metrics?.trainingSucceeded.increment()
            case .cancelled: metrics?.trainingCancelled.increment()
            default: metrics?.trainingFailed.increment()
            }
            return ended.progress
        case .lost(let why):
            throw WireError.refused(code: .permissionDenied, message: why)
        case .missing:
            throw WireError.refused(code: .notFound, message: "no training job \(job.id)")
        }
    }

    /// Drops what a closed connection was sending.
    func forget(_ connection: WireConnection) {
        let key = ObjectIdentifier(connection)
        state.withLock { $0.uploads = $0.uploads.filter { $0.value.connection != key } }
    }
}

/// Wakes whoever waits, at once; a wait also ends after its time.
final class Wakeup: Sendable {
    private struct Waiters {
        var waiting: [UUID: CheckedContinuation<Void, Never>] = [:]
        /// Waits ended (by their time or a cancellation) before they began to wait.
        var ended: Set<UUID> = []
    }
    private let waiters = Mutex(Waiters())

    func signal() {
        let woken = waiters.withLock { waiters in
            defer { waiters.waiting.removeAll() }
            return Array(waiters.waiting.values)
        }
        for waiter in woken { waiter.resume() }
    }

    func wait(for limit: Duration) async {
        let id = UUID()
        let timer = Task {
            guard (try? await Task.sleep(for: limit)) != nil else { return }
            self.end(id)
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let already = waiters.withLock { waiters in
                    if waiters.ended.remove(id) != nil { return true }
                    waiters.waiting[id] = continuation
                    return false
                }
                if already { continuation.resume() }
            }
        } onCancel: {
            self.end(id)
        }
        timer.cancel()
        _ = waiters.withLock { $0.ended.remove(id) }
    }

    private func end(_ id: UUID) {
        let waiter = waiters.withLock { waiters -> CheckedContinuation<Void, Never>? in
            guard let waiter = waiters.waiting.removeValue(forKey: id) else {
                waiters.ended.insert(id)
                return nil
            }
            return waiter
        }
        waiter?.resume()
    }
}
