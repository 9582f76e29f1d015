public import Foundation
public import Logging
import LoupeImaging
public import LoupeSegmentation
public import LoupeProto
import LoupeStorage
public import LoupeWire
public import ServiceLifecycle
import Synchronization

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
    /// Once trained with a validation split: its parts judged at the new model's calibrated threshold.
    public var parts: PartFigures?
    public var startedAt: Date
    public var startedBy: String

    /// Takes a local run's update.
    mutating func take(_ update: TrainingProgress) {
        phase = update.phase.rawValue
        pass = update.pass
        step = update.step
        totalSteps = update.totalSteps
        fraction = update.fraction
        loss = update.loss
        imagesPerSecond = update.imagesPerSecond
        elapsedSeconds = update.elapsedSeconds
        etaSeconds = update.etaSeconds
        if let iou = update.validationIoU {
            validationClassIoU = iou
            validationMIoU = update.validationMIoU
        }
    }
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
    private let current = Mutex<(status: TrainingStatus?, job: TrainingJob?)>((nil, nil))
    private let updates = Broadcast<TrainingStatus>()
    /// Installs a local job's model once its thread is done; awaited at shutdown.
    private let ending = Mutex<Task<Void, Never>?>(nil)
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
        do { try request.validate() } catch { throw StoreError.invalid("\(error)") }
        if let manager { return try await startOnManager(request, user: user, connection: manager) }
        return try await startLocally(request, user: user)
    }

    private func startLocally(_ request: TrainingRequest, user: String) async throws -> TrainingStatus {
        let recipe = try await runtime.store.recipe()
        let classes = try await runtime.store.classes()
        guard !classes.isEmpty else { throw StoreError.invalid("define at least one defect class before training") }
        let dataset = try await runtime.trainingSet(inspectionType: recipe.inspectionType, classes: classes.count + 1)
        guard !dataset.items.isEmpty else {
            throw StoreError.invalid("no ROIs of inspection type \(recipe.inspectionType) are ticked for training")
        }
        let classInfo =
            [ClassInfo(name: "background", color: 0)]
            + classes.sorted { $0.index < $1.index }.map { ClassInfo(name: $0.name, color: $0.color) }
        let job: TrainingJob
        do {
            job = try TrainingJob(
                images: dataset, classes: classInfo, request: request, threads: runtime.trainingThreads, failRule: recipe.failRule)
        } catch {
            throw StoreError.invalid("\(error)")
        }
        let configuration = job.configuration
        let status = TrainingStatus(
            jobId: "local-\(Self.stamp(Date()))-\(UUID().uuidString.prefix(4).lowercased())", state: .running, location: "local",
            phase: "loading",
            pass: 0, passes: request.timeBudgetSeconds == nil ? configuration.passes : nil, step: 0, totalSteps: 0, fraction: 0,
            loss: 0, imagesPerSecond: 0, elapsedSeconds: 0, etaSeconds: 0, trainingImages: dataset.items.count,
            startedAt: Date(), startedBy: user)
        try current.withLock { current in
            if let running = current.status, running.state == .running {
                throw TrainingJobError.busy(jobId: running.jobId)
            }
            current = (status, job)
        }
        publish(status)
        let parent = runtime.shelf.state.current?.version
        let progress = Mutex(status)
        job.start(
            name: "loupe-train", description: "trained on camera \(runtime.config.cameraId) from \(dataset.items.count) ROIs",
            prepare: { PagePriority.lowerCurrentThread(to: PagePriority.trainingNice) },
            progress: { [self] update in
                publish(
                    progress.withLock { status in
                        status.take(update)
                        return status
                    })
            })
        ending.withLock { $0 = Task { await self.end(job, status: status, parent: parent) } }
        logger.info(
            "local training started",
            metadata: ["job": "\(status.jobId)", "rois": "\(dataset.items.count)", "passes": "\(configuration.passes)"])
        return status
    }

    /// Asks the running job to stop; it ends as cancelled, and the model in use stays.
    public func cancel(jobId: String?) async throws {
        let status = try current.withLock { current -> TrainingStatus in
            guard let status = current.status, status.state == .running, jobId == nil || jobId == status.jobId else {
                throw StoreError.notFound("a running training job\(jobId.map { " \($0)" } ?? "")")
            }
            current.job?.cancel()
            return status
        }
        guard status.location == "manager" else { return }
        guard let connection = manager?(), !connection.isClosed else { throw TrainingJobError.managerUnreachable }
        var cancel = Loupe_V1_TrainingCancel()
        cancel.jobID = status.jobId
        _ = try await connection.request(.trainingCancel(cancel))
    }

    // MARK: Training on the manager

    private func startOnManager(
        _ request: TrainingRequest, user: String, connection link: @Sendable () -> WireConnection?
    ) async throws -> TrainingStatus {
        let recipe = try await runtime.store.recipe()
        guard try await !runtime.store.classes().isEmpty else {
            throw StoreError.invalid("define at least one defect class before training")
        }
        guard let first = link(), !first.isClosed else { throw TrainingJobError.managerUnreachable }
        var status = TrainingStatus(
            jobId: "pending", state: .running, location: "manager", phase: "syncing", pass: 0, passes: request.iterations,
            step: 0, totalSteps: 0, fraction: 0, loss: 0, imagesPerSecond: 0, elapsedSeconds: 0, etaSeconds: 0,
            trainingImages: 0, startedAt: Date(), startedBy: user)
        try current.withLock { current in
            if let running = current.status, running.state == .running { throw TrainingJobError.busy(jobId: running.jobId) }
            current = (status, nil)
        }
        publish(status)
        // This camera's newest labels go up first, so the job trains on them.
        let deadline = ContinuousClock.now + .seconds(60)
        while (try? await runtime.store.outboxDepth()) ?? 0 > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(200))
        }
        let start = Loupe_V1_TrainingStart(inspectionType: recipe.inspectionType, request: request)
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
        if progress.hasParts { status.parts = PartFigures(progress.parts) }
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
        current.withLock { $0.job?.cancel() }
        await ending.withLock({ $0 })?.value
    }

    /// The job's status now (if any), then every update.
    public func subscribe() -> AsyncStream<TrainingStatus> {
        updates.subscribe(keepingNewest: 8, initial: status)
    }

    private func publish(_ status: TrainingStatus) {
        current.withLock { $0.status = status }
        updates.send(status)
    }

    /// Waits for a local job's thread; installs its model (signed with this camera's key) and swaps it in.
    private func end(_ job: TrainingJob, status initial: TrainingStatus, parent: String?) async {
        var status = self.status ?? initial
        switch await job.outcome() {
        case .trained(var model, _):
            let created = model.metadata.createdAt
            model.metadata.version = UInt64(created.timeIntervalSince1970)
            let version = "local-\(Self.stamp(created))"
            do {
                let data = try ModelFile.encode(model, signingKey: runtime.shelf.localKey)
                _ = try runtime.install(data, version: version, expectedSHA256: nil, from: .local("local-training"))
                status.state = .succeeded
                status.phase = "finished"
                status.fraction = 1
                status.modelVersion = version
                status.parts = model.metadata.partFigures
                status.message = parent.map { "replaces \($0) (kept for rollback)" }
            } catch {
                status.state = .failed
                status.message = "the trained model could not be installed: \(error)"
                logger.error("local training's model not installed", metadata: ["job": "\(status.jobId)", "error": "\(error)"])
            }
        case .cancelled:
            status.state = .cancelled
            status.message = "cancelled after \(status.pass) passes; the model in use was kept"
        case .failed(let error):
            status.state = .failed
            status.message = "\(error)"
            logger.error("local training failed", metadata: ["job": "\(status.jobId)", "error": "\(error)"])
        }
        logger.info(
            "local training ended",
            metadata: ["job": "\(status.jobId)", "state": "\(status.state.rawValue)", "model": "\(status.modelVersion ?? "-")"])
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
