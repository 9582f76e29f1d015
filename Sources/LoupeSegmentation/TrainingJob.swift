import Foundation
import LoupeStorage
public import LoupeVision
import Synchronization

/// What someone asks of a training run (nil: the default). The camera page sends it as JSON and the wire as
/// `TrainingStart` (`TrainingRequest+Wire.swift`); one rule checks it either way.
public struct TrainingRequest: Codable, Sendable, Equatable {
    /// Passes over the labelled ROIs ("Number of Iterations"); without a time budget, 30.
    public var iterations: Int?
    /// Stop after this many seconds instead.
    public var timeBudgetSeconds: Double?
    public var augmentation: Augmentation?
    public var seed: UInt64?

    public static let maximumPasses = 10_000
    public static let maximumTimeBudgetSeconds: Double = 7 * 86_400
    public static let defaultPasses = 30

    public init(iterations: Int? = nil, timeBudgetSeconds: Double? = nil, augmentation: Augmentation? = nil, seed: UInt64? = nil) {
        self.iterations = iterations
        self.timeBudgetSeconds = timeBudgetSeconds
        self.augmentation = augmentation
        self.seed = seed
    }

    public func validate() throws(SegmentationError) {
        if let iterations, !(1...Self.maximumPasses).contains(iterations) {
            throw .invalidRequest("iterations must be 1…\(Self.maximumPasses), not \(iterations)")
        }
        if let budget = timeBudgetSeconds, !(budget > 0 && budget <= Self.maximumTimeBudgetSeconds) {
            throw .invalidRequest("the time budget must be more than 0 seconds and at most a week, not \(budget)")
        }
        if let a = augmentation {
            guard (0...180).contains(a.rotationDegrees), (0...1).contains(a.brightness), (0...1).contains(a.contrast) else {
                throw .invalidRequest("augmentation: rotation 0…180 degrees, brightness and contrast 0…1")
            }
        }
    }
}

/// One training run on a thread of its own, the same for a camera, the manager and a worker: the settings fitted
/// to the set, progress at most every `updateInterval` (and at every validation), cancel, and a finished model
/// whose metadata say who trained it on what. Not on the Swift task pool: a training step holds its thread for
/// a long time, and the pool's few threads serve the process's connections.
public final class TrainingJob: Sendable {
    /// How a job ended.
    public enum Outcome: Sendable {
        /// The best model, its metadata complete (`createdAt`, `description`); unsigned and unversioned.
        case trained(SegmentationModel, passes: Int)
        case cancelled
        case failed(SegmentationError)
    }

    /// The shortest time between two progress updates (validation results always go out).
    public static let updateInterval: Duration = .milliseconds(250)

    public let configuration: TrainingConfiguration
    public let classes: [ClassInfo]
    private let images: any TrainingImages
    private let control: TrainingControl
    private let ended = Mutex<(outcome: Outcome?, waiters: [CheckedContinuation<Outcome, Never>])>((nil, []))
    private let started = Atomic<Bool>(false)

    /// Checks the request and fits the settings to `images`; refuses a set there is nothing to learn from.
    /// `control` may be cancelled before the job exists (a cancel that came while its set was read). `failRule`
    /// judges the validation split's parts (the camera's recipe's on a camera).
    public init(
        images: any TrainingImages, classes: [ClassInfo], request: TrainingRequest, threads: Int,
        failRule: FailRule = FailRule(), control: TrainingControl = TrainingControl()
    ) throws(SegmentationError) {
        self.control = control
        try request.validate()
        var fitted = try TrainingConfiguration.fitted(
            to: images, passes: request.iterations, timeBudgetSeconds: request.timeBudgetSeconds,
            augmentation: request.augmentation, seed: request.seed, threads: threads)
        fitted.failRule = failRule
        configuration = fitted
        guard classes.count == images.classes else {
            throw .invalidConfiguration("\(classes.count) class names for a set of \(images.classes) classes")
        }
        self.images = images
        self.classes = classes
    }

    /// Starts the thread (once). `prepare` runs on it first (to lower its priority, say); `progress` hears the
    /// run's updates on it. The model's description is `description`, then the settings in words.
    public func start(
        name: String, description: String, prepare: @escaping @Sendable () -> Void = {},
        progress: @escaping @Sendable (TrainingProgress) -> Void = { _ in }
    ) {
        guard !started.exchange(true, ordering: .relaxed) else { return }
        DedicatedThread.start(name) { [self] in
            prepare()
            finish(run(description: description, progress: progress))
        }
    }

    /// Asks the run to stop at its next step; it ends `.cancelled`.
    public func cancel() { control.cancel() }

    /// Waits for the run to end, without holding a thread.
    public func outcome() async -> Outcome {
        await withCheckedContinuation { continuation in
            let done = ended.withLock { state -> Outcome? in
                if let outcome = state.outcome { return outcome }
                state.waiters.append(continuation)
                return nil
            }
            if let done { continuation.resume(returning: done) }
        }
    }

    private func finish(_ outcome: Outcome) {
        let waiters = ended.withLock { state in
            state.outcome = outcome
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: outcome) }
    }

    private func run(description: String, progress: @escaping (TrainingProgress) -> Void) -> Outcome {
        let clock = ContinuousClock()
        var lastSent: ContinuousClock.Instant?
        do {
            let result = try Trainer(configuration: configuration, classes: classes).train(images, control: control) { update in
                let now = clock.now
                guard update.validationIoU != nil || update.phase == .finished || lastSent.map({ now - $0 >= Self.updateInterval }) ?? true
                else { return }
                lastSent = now
                progress(update)
            }
            // A cancel that came after the last step still wins: whoever cancelled expects no new model.
            if control.isCancelled { return .cancelled }
            var model = result.model
            model.metadata.createdAt = Date()
            model.metadata.description = description + "; " + configuration.summary
            return .trained(model, passes: result.passes)
        } catch {
            return control.isCancelled || error == .cancelled ? .cancelled : .failed(error)
        }
    }
}

extension TrainingConfiguration {
    /// The settings in words, kept in the model's description.
    public var summary: String {
        var parts: [String] = []
        parts.append("up to \(passes) passes")
        if let budget = timeBudgetSeconds { parts.append(String(format: "time budget %.0f s", budget)) }
        parts.append("batch \(batchSize), crop \(cropSize) px, peak learning rate \(optimizer.learningRate)")
        let a = augmentation
        parts.append(
            "augmentation: flip \(a.flipHorizontal ? "h" : "-")\(a.flipVertical ? "v" : "-"), rotation ±\(a.rotationDegrees)°, "
                + "brightness ±\(a.brightness), contrast ±\(a.contrast)")
        parts.append("validation share \(validationFraction), seed \(seed), \(threads) threads, \(precision.rawValue) convolutions")
        return parts.joined(separator: "; ")
    }
}
