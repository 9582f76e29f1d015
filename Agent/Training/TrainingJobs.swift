import Foundation
import Logging
import LoupeImaging
import LoupeSegmentation
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
/// installed, and swapped into the live pipeline.
public final class TrainingJobs: Sendable {
    private let runtime: AgentRuntime
    private let logger: Logger
    private let current = Mutex<(status: TrainingStatus?, control: TrainingControl?)>((nil, nil))
    private let subscribers = Mutex<[UUID: AsyncStream<TrainingStatus>.Continuation]>([:])

    public init(runtime: AgentRuntime, logger: Logger) {
        self.runtime = runtime
        self.logger = logger
    }

    public var status: TrainingStatus? { current.withLock { $0.status } }

    /// Starts a job on the included ROIs of the recipe's inspection type.
    public func start(_ request: TrainingRequest, user: String) throws -> TrainingStatus {
        try request.validate()
        let recipe = try runtime.store.recipe()
        let classes = try runtime.store.classes()
        guard !classes.isEmpty else { throw StoreError.invalid("define at least one defect class before training") }
        let dataset = try runtime.trainingSet(inspectionType: recipe.inspectionType, classes: classes.count + 1)
        guard !dataset.items.isEmpty else { throw StoreError.invalid("no ROIs of inspection type \(recipe.inspectionType) are ticked for training") }
        guard dataset.pixelCounts.dropFirst().reduce(0, +) > 0 else { throw StoreError.invalid("the ticked ROIs have no defect pixels painted") }
        let side = dataset.items.map { min($0.image.width, $0.image.height) }.min() ?? 0
        let network = UNetConfiguration(classes: classes.count + 1)
        let crop = min(192, side - side % network.sizeMultiple)
        guard crop >= network.sizeMultiple else { throw StoreError.invalid("ROIs must be at least \(network.sizeMultiple) px on each side to train on") }
        var configuration = TrainingConfiguration(network: network, passes: request.iterations ?? 30, timeBudgetSeconds: request.timeBudgetSeconds,
                                                  batchSize: min(8, dataset.items.count), cropSize: crop,
                                                  augmentation: request.augmentation ?? Augmentation(),
                                                  validationFraction: dataset.items.count >= 10 ? 0.1 : 0, seed: request.seed ?? 1,
                                                  threads: runtime.threads)
        if request.timeBudgetSeconds != nil && request.iterations == nil { configuration.passes = 0 }
        do { try configuration.validate() } catch { throw StoreError.invalid("\(error)") }
        let control = TrainingControl()
        let status = TrainingStatus(jobId: "local-\(Int(Date().timeIntervalSince1970))", state: .running, location: "local", phase: "loading",
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
        let thread = Thread { [self] in
            run(status, configuration: settings, dataset: dataset, classes: [ClassInfo(name: "background", color: 0)] + classInfo,
                parent: parent, control: control)
        }
        thread.name = "loupe-train"
        thread.start()
        logger.info("local training started", metadata: ["job": "\(status.jobId)", "rois": "\(dataset.items.count)", "passes": "\(configuration.passes)"])
        return status
    }

    /// Asks the running job to stop; it ends as cancelled, and the model in use stays.
    public func cancel(jobId: String?) throws {
        try current.withLock { current in
            guard let status = current.status, status.state == .running, jobId == nil || jobId == status.jobId else {
                throw StoreError.notFound("a running training job\(jobId.map { " \($0)" } ?? "")")
            }
            current.control?.cancel()
        }
    }

    public func subscribe() -> AsyncStream<TrainingStatus> {
        let id = UUID()
        let (stream, continuation) = AsyncStream.makeStream(of: TrainingStatus.self, bufferingPolicy: .bufferingNewest(8))
        continuation.onTermination = { [weak self] _ in _ = self?.subscribers.withLock { $0.removeValue(forKey: id) } }
        subscribers.withLock { $0[id] = continuation }
        if let status { continuation.yield(status) }
        return stream
    }

    private func publish(_ status: TrainingStatus) {
        current.withLock { $0.status = status }
        for continuation in subscribers.withLock({ Array($0.values) }) { continuation.yield(status) }
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
                _ = try runtime.install(data, version: version, expectedSHA256: nil, origin: "local-training")
                status.state = .succeeded
                status.phase = "finished"
                status.fraction = 1
                status.modelVersion = version
                status.message = parent.map { "replaces \($0) (kept for rollback)" }
            }
        } catch {
            status.state = control.isCancelled ? .cancelled : .failed
            status.message = "\(error)"
            logger.error("local training failed", metadata: ["job": "\(status.jobId)", "error": "\(error)"])
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

    public var description: String {
        switch self {
        case .busy(let jobId): "training job \(jobId) is still running; cancel it or wait"
        }
    }
}
