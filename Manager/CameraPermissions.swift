import Foundation
import LoupeProto
public import LoupeWire
import Synchronization

/// What a camera certificate may do beyond its role: which inspection types
/// it may upload into and train, and how much training it may ask for. An
/// operator certificate is not limited here.
///
/// A camera's inspection types are the ones the manager's config assigns it
/// (`cameraInspectionTypes`), or else the first type it ever sent data or
/// asked training for (pinned from the training data it already has, so a
/// restart keeps the pin). A camera of one line cannot fill, or train,
/// another line's model.
public final class CameraPermissions: Sendable {
    public struct Limits: Sendable, Equatable {
        /// Training jobs one camera may have queued or running at once.
        public var queuedJobs = 2
        /// The longest training a camera may ask for; a camera asking for no bound gets this one.
        public var maximumTrainingSeconds: Double = 3600
        /// The most passes over its data a camera may ask for (a time budget, when given, bounds instead).
        public var maximumPasses = 1000
        public init() {}
    }

    public let limits: Limits
    private let assigned: [String: Set<String>]
    /// Types pinned at first use, for cameras the config does not name.
    private let pinned = Mutex<[String: String]>([:])

    public init(assigned: [String: [String]], limits: Limits = Limits()) {
        self.assigned = assigned.mapValues(Set.init)
        self.limits = limits
    }

    /// Refuses, by name, a camera's upload or training request for a type
    /// that is not its own. `typesHeld`: the types it already has training data in.
    public func checkInspectionType(_ type: String, camera: String, typesHeld: () async throws -> Set<String>) async throws(WireError) {
        if let types = assigned[camera] {
            guard types.contains(type) else {
                throw .refused(
                    code: .permissionDenied,
                    message: "camera \(camera) is assigned inspection types \(types.sorted().joined(separator: ", ")), not \(type)")
            }
            return
        }
        // Its own type, once decided, needs no read of the store: the common case, every upload.
        if pinned.withLock({ $0[camera] }) == type { return }
        let held: Set<String>
        do { held = try await typesHeld() } catch {
            throw .refused(code: .unavailable, message: "cannot read camera \(camera)'s training data: \(error)")
        }
        let own = pinned.withLock { pins -> String in
            if let pin = pins[camera] { return pin }
            // The type it already has data in (the first by name, if several), or this one, from now on.
            let pin = held.min() ?? type
            pins[camera] = pin
            return pin
        }
        guard own == type || held.contains(type) else {
            throw .refused(
                code: .permissionDenied,
                message: "camera \(camera) sends \(own) data; it may not send or train \(type) "
                    + "(assign it more types with cameraInspectionTypes in the manager's config)")
        }
    }

    /// The training request a camera may run: its own type, a bounded budget, within its queue quota.
    public func admitTraining(
        _ request: inout TrainingBudget, camera: String, queuedByCamera: Int,
        typesHeld: () async throws -> Set<String>
    ) async throws(WireError) {
        try await checkInspectionType(request.inspectionType, camera: camera, typesHeld: typesHeld)
        guard queuedByCamera < limits.queuedJobs else {
            throw .refused(
                code: .resourceExhausted,
                message: "camera \(camera) already has \(queuedByCamera) training jobs queued or running (at most \(limits.queuedJobs))")
        }
        // A request bounded by neither passes nor time gets the time bound.
        if request.timeBudgetSeconds == 0 && request.passes == 0 { request.timeBudgetSeconds = limits.maximumTrainingSeconds }
        guard request.passes <= limits.maximumPasses else {
            throw .refused(
                code: .invalidArgument,
                message: "camera \(camera) may ask for at most \(limits.maximumPasses) passes, not \(request.passes)")
        }
        guard request.timeBudgetSeconds <= limits.maximumTrainingSeconds else {
            throw .refused(
                code: .invalidArgument,
                message:
                    "camera \(camera) may ask for at most \(Int(limits.maximumTrainingSeconds)) s of training, not "
                    + "\(Int(request.timeBudgetSeconds))"
            )
        }
    }

    /// The parts of a training request the budget rules look at.
    public struct TrainingBudget: Sendable {
        public var inspectionType: String
        public var timeBudgetSeconds: Double
        public var passes: Int
    }
}
