import Foundation
import Logging
import LoupeImaging
import LoupeSegmentation
import LoupeProto
import LoupeStorage
import LoupeWire
import ServiceLifecycle
import Synchronization

/// What the page sends to start training.
public struct TrainingRequest: Codable, Sendable, Equatable {
    /// Passes over the labelled ROIs ("Number of Iterations"). Default 30.
    public var iterations: Int?
    /// Stop after this many seconds instead.
    public var timeBudgetSeconds: Double?
    public var augmentation: Augmentation?
    public var seed: UInt64?

    public init(iterations: Int? = nil, timeBudgetSeconds: Double? = nil, augmentation: Augmentation? = nil, seed: UInt64? = nil) {
        self.iterations = iterations
        self.timeBudgetSeconds = timeBudgetSeconds
        self.augmentation = augmentation
        self.seed = seed
    }

    func validate() throws(StoreError) {
        if let iterations, !(1...10_000).contains(iterations) { throw .invalid("iterations must be 1…10000, not \(iterations)") }
        if let budget = timeBudgetSeconds, !(budget > 0 && budget <= 7 * 86_400) { throw .invalid("timeBudgetSeconds must be more than 0 and at most a week") }
        if let a = augmentation {
            guard (0...180).contains(a.rotationDegrees), (0...1).contains(a.brightness), (0...1).contains(a.contrast) else {
                throw .invalid("augmentation: rotation 0…180 degrees, brightness and contrast 0…1")
            }
        }
    }
}

/// A training job as the page sees it.
public struct TrainingStatus: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable {
        case running, succeeded, failed, cancelled
    }
    public var jobId: String
    public var state: State
    /// "local": on this camera; "manager": on the plant's manager.
    public var location: String
    public var phase: String
    public var pass: Int
    public var passes: Int?
    public var step: Int
    public var totalSteps: Int
    public var fraction: Double
    public var loss: Float
    public var imagesPerSecond: Double
    public var elapsedSeconds: Double
    public var etaSeconds: Double
    public var validationMIoU: Float?
    public var validationClassIoU: [Float]?
    public var trainingImages: Int
    public var modelVersion: String?
    public var message: String?
    public var startedAt: Date
    public var startedBy: String
}

/// Local training on the camera, one job at a time, with the same engine the
/// manager uses. The job runs on its own thread; progress goes to every
/// subscriber; a finished model is signed with the agent's own key,
/// installed, and swapped into the live pipeline. As a `Service` in the
/// agent's group it ends a local job at graceful shutdown, so no caller has
/// to remember to.
public final class TrainingJobs: Service, Sendable {
    private let runtime: AgentRuntime
    private let logger: Logger
    private let current = Mutex<(status: TrainingStatus?, control: TrainingControl?)>((nil, nil))
    private let updates = Broadcast<TrainingStatus>()
    /// Signalled by each local training thread as it ends.
    private let threadEnded = DispatchSemaphore(value: 0)
    private let threadRunning = Mutex(false)
    /// With a manager configured: its live connection (nil while disconnected). Training then runs there.
    private let manager: (@Sendable () -> WireConnection?)?

    public init(runtime: AgentRuntime, logger: Logger, manager: (@Sendable () -> WireConnection?)? = nil) {
        self.runtime = runtime
        self.logger = logger
        self.manager = manager
    }

    public var status: TrainingStatus? { current.withLock { $0.status } }

    /// Starts a job on the recipe's inspection type: on the manager, over
    /// every camera's ROIs, when one is configured; otherwise here, on this
    /// camera's ticked ROIs.
    public func start(_ request: TrainingRequest, user: String) async throws -> TrainingStatus {
        try request.validate()
        if let manager { return try await startOnManager(request, user: user, connection: manager) }
        return try startLocally(request, user: user)
    }

    private func startLocally(_ request: TrainingRequest, user: String) throws -> TrainingStatus {
        let recipe = try runtime.store.recipe()
        let classes = try runtime.store.classes()
        guard !classes.isEmpty else { throw StoreError.invalid("define at least one defect class before training") }
        let dataset = try runtime.trainingSet(inspectionType: recipe.inspectionType, classes: classes.count + 1)
        guard !dataset.items.isEmpty else { throw StoreError.invalid("no ROIs of inspection type \(recipe.inspectionType) are ticked for training") }
        let configuration: TrainingConfiguration
        do {
            configuration = try TrainingConfiguration.fitted(to: dataset, passes: request.iterations, timeBudgetSeconds: request.timeBudgetSeconds,
                                                             augmentation: request.augmentation, seed: request.seed, threads: runtime.trainingThreads)
        } catch {
            throw StoreError.invalid("\(error)")
        }
        let control = TrainingControl()
        let status = TrainingStatus(jobId: "local-\(Self.stamp(Date()))-\(UUID().uuidString.prefix(4).lowercased())", state: .running, location: "local", phase: "loading",
                                    pass: 0, passes: request.timeBudgetSeconds == nil ? configuration.passes : nil, step: 0, totalSteps: 0, fraction: 0,
                                    loss: 0, imagesPerSecond: 0, elapsedSeconds: 0, etaSeconds: 0, trainingImages: dataset.items.count,
                                    startedAt: Date(), startedBy: user)
        try current.withLock { current in
            if let running = current.status, running.state == .running {
                throw TrainingJobError.busy(jobId: running.jobId)
            }
            current = (status, control)
        }
        publish(status)
        let classInfo = classes.sorted { $0.index < $1.index }.map { ClassInfo(name: $0.name, color: $0.color) }
        let parent = runtime.shelf.state.current?.version
        let settings = configuration
        threadRunning.withLock { $0 = true }
        let thread = Thread { [self] in
            PagePriority.lowerCurrentThread(to: PagePriority.trainingNice)
            run(status, configuration: settings, dataset: dataset, classes: [ClassInfo(name: "background", color: 0)] + classInfo,
                parent: parent, control: control)
            threadRunning.withLock { $0 = false }
            threadEnded.signal()
        }
        thread.name = "loupe-train"
        thread.start()
        logger.info("local training started", metadata: ["job": "\(status.jobId)", "rois": "\(dataset.items.count)", "passes": "\(configuration.passes)"])
        return status
    }

    /// Asks the running job to stop; it ends as cancelled, and the model in use stays.
    public func cancel(jobId: String?) async throws {
        let status = try current.withLock { current -> TrainingStatus in
            guard let status = current.status, status.state == .running, jobId == nil || jobId == status.jobId else {
                throw StoreError.notFound("a running training job\(jobId.map { " \($0)" } ?? "")")
            }
            current.control?.cancel()
            return status
        }
        guard status.location == "manager" else { return }
        guard let connection = manager?(), !connection.isClosed else { throw TrainingJobError.managerUnreachable }
        var cancel = Loupe_V1_TrainingCancel()
        cancel.jobID = status.jobId
        _ = try await connection.request(.trainingCancel(cancel))
    }

    // MARK: Training on the manager

    private func startOnManager(_ request: TrainingRequest, user: String, connection link: @Sendable () -> WireConnection?) async throws -> TrainingStatus {
        let recipe = try runtime.store.recipe()
        guard try !runtime.store.classes().isEmpty else { throw StoreError.invalid("define at least one defect class before training") }
        guard let first = link(), !first.isClosed else { throw TrainingJobError.managerUnreachable }
        var status = TrainingStatus(jobId: "pending", state: .running, location: "manager", phase: "syncing", pass: 0, passes: request.iterations,
                                    step: 0, totalSteps: 0, fraction: 0, loss: 0, imagesPerSecond: 0, elapsedSeconds: 0, etaSeconds: 0,
                                    trainingImages: 0, startedAt: Date(), startedBy: user)
        try current.withLock { current in
            if let running = current.status, running.state == .running { throw TrainingJobError.busy(jobId: running.jobId) }
            current = (status, nil)
        }
        publish(status)
        // This camera's newest labels go up first, so the job trains on them.
        let deadline = ContinuousClock.now + .seconds(60)
        while (try? runtime.store.outboxDepth()) ?? 0 > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(200))
        }
        var start = Loupe_V1_TrainingStart()
        start.inspectionType = recipe.inspectionType
        start.iterations = UInt32(request.iterations ?? (request.timeBudgetSeconds == nil ? 30 : 0))
        start.timeBudgetSeconds = UInt32(request.timeBudgetSeconds ?? 0)
        start.seed = request.seed ?? 0
        if let a = request.augmentation {
            start.augmentation.flipHorizontal = a.flipHorizontal
            start.augmentation.flipVertical = a.flipVertical
            start.augmentation.rotationDegrees = Float(a.rotationDegrees)
            start.augmentation.brightness = Float(a.brightness)
            start.augmentation.contrast = Float(a.contrast)
        }
        do {
            guard let connection = link(), !connection.isClosed else { throw TrainingJobError.managerUnreachable }
            let reply = try await connection.request(.trainingStart(start))
            guard case .trainingProgress(let progress) = reply.body else {
                throw WireError.unexpectedReply(expected: "training_progress", received: reply.bodyName)
            }
            status.jobId = progress.jobID
            status.phase = "queued"
            publish(status)
            logger.info("training started on the manager", metadata: ["job": "\(progress.jobID)", "type": "\(recipe.inspectionType)"])
            return status
        } catch {
            status.state = .failed
            status.message = "the manager did not take the job: \(error)"
            publish(status)
            throw error
        }
    }

    /// A TrainingProgress event from the manager for the job this camera started.
    public func managerProgress(_ progress: Loupe_V1_TrainingProgress) {
        guard var status = self.status, status.location == "manager", status.jobId == progress.jobID else { return }
        switch progress.state {
        case .queued: status.phase = "queued"
        case .running: status.phase = "training"
        case .succeeded:
            status.state = .succeeded
            status.phase = "finished"
            status.fraction = 1
            status.modelVersion = progress.modelVersion
            status.message = "the manager is installing \(progress.modelVersion) on this camera"
        case .failed:
            status.state = .failed
            status.message = progress.message
        case .cancelled:
            status.state = .cancelled
            status.message = progress.message.isEmpty ? "cancelled; the model in use was kept" : progress.message
        default: break
        }
        status.pass = Int(progress.pass)
        if progress.passesTotal > 0 {
            status.passes = Int(progress.passesTotal)
            if status.state == .running { status.fraction = min(1, Double(progress.pass) / Double(progress.passesTotal)) }
        }
        status.loss = progress.loss
        status.imagesPerSecond = Double(progress.imagesPerSecond)
        status.etaSeconds = Double(progress.etaSeconds)
        status.elapsedSeconds = Date().timeIntervalSince(status.startedAt)
        if !progress.validationClassIou.isEmpty {
            status.validationClassIoU = progress.validationClassIou
            status.validationMIoU = progress.validationMiou
        }
        publish(status)
    }

    /// Serves until the group shuts down, then ends any local job.
    public func run() async throws {
        try? await gracefulShutdown()
        await shutdown()
    }

    /// At shutdown: cancels a local job and waits for its thread, so the
    /// process never exits (and unloads oneDNN) under a training step.
    public func shutdown() async {
        current.withLock { $0.control?.cancel() }
        if threadRunning.withLock({ $0 }) { await LivePipeline.wait(for: threadEnded) }
    }

    /// The job's status now (if any), then every update.
    public func subscribe() -> AsyncStream<TrainingStatus> {
        updates.subscribe(keepingNewest: 8, initial: status)
    }

    private func publish(_ status: TrainingStatus) {
        current.withLock { $0.status = status }
        updates.send(status)
    }

    private func run(_ initial: TrainingStatus, configuration: TrainingConfiguration, dataset: SegmentationDataset, classes: [ClassInfo],
                     parent: String?, control: TrainingControl) {
        var status = initial
        var lastPublished = Date.distantPast
        do {
            let trainer = Trainer(configuration: configuration, classes: classes)
            let result = try trainer.train(dataset, control: control) { progress in
                status.phase = progress.phase.rawValue
                status.pass = progress.pass
                status.step = progress.step
                status.totalSteps = progress.totalSteps
                status.fraction = progress.fraction
                status.loss = progress.loss
                status.imagesPerSecond = progress.imagesPerSecond
                status.elapsedSeconds = progress.elapsedSeconds
                status.etaSeconds = progress.etaSeconds
                if let iou = progress.validationIoU {
                    status.validationClassIoU = iou
                    status.validationMIoU = progress.validationMIoU
                }
                // At most a few updates a second, but every pass boundary.
                if progress.validationIoU != nil || Date().timeIntervalSince(lastPublished) > 0.25 {
                    lastPublished = Date()
                    self.publish(status)
                }
            }
            if control.isCancelled {
                status.state = .cancelled
                status.message = "cancelled after \(result.passes) passes; the model in use was kept"
            } else {
                var model = result.model
                let created = Date()
                model.metadata.createdAt = created
                model.metadata.version = UInt64(created.timeIntervalSince1970)
                model.metadata.description = "trained on camera \(runtime.config.cameraId) from \(dataset.items.count) ROIs"
                let version = "local-\(Self.stamp(created))"
                let data = try ModelFile.encode(model, signingKey: runtime.shelf.localKey)
                _ = try runtime.install(data, version: version, expectedSHA256: nil, from: .local("local-training"))
                status.state = .succeeded
                status.phase = "finished"
                status.fraction = 1
                status.modelVersion = version
                status.message = parent.map { "replaces \($0) (kept for rollback)" }
            }
        } catch {
            if control.isCancelled {
                status.state = .cancelled
                status.message = "cancelled; the model in use was kept"
            } else {
                status.state = .failed
                status.message = "\(error)"
                logger.error("local training failed", metadata: ["job": "\(status.jobId)", "error": "\(error)"])
            }
        }
        logger.info("local training ended", metadata: ["job": "\(status.jobId)", "state": "\(status.state.rawValue)", "model": "\(status.modelVersion ?? "-")"])
        publish(status)
    }

    static func stamp(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd-HHmmss"
        return formatter.string(from: date)
    }
}

public enum TrainingJobError: Error, CustomStringConvertible, Equatable {
    case busy(jobId: String)
    case managerUnreachable

    public var description: String {
        switch self {
        case .busy(let jobId): "training job \(jobId) is still running; cancel it or wait"
        case .managerUnreachable: "training runs on the manager, which this camera cannot reach right now; try again when it is connected"
        }
    }
}

/// A reference filled in after construction, for two parts that need each other
/// (the manager link delivers training progress to the jobs, which send over the link).
public final class LateBound<Value: Sendable>: Sendable {
    private let slot = Mutex<Value?>(nil)
    public init() {}
    public var value: Value? { slot.withLock { $0 } }
    public func set(_ value: Value) { slot.withLock { $0 = value } }
}
