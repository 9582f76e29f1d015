public import Foundation
public import LoupeCapture
import Synchronization

/// The trigger a result answers: where it came from and its number (from 1, per agent run).
public struct TriggerStamp: Codable, Sendable, Equatable {
    public var source: String
    public var sequence: Int

    public init(source: String, sequence: Int) {
        self.source = source
        self.sequence = sequence
    }
}

/// A trigger's fate, for the page, the status and the API.
public struct TriggerStatistics: Codable, Sendable, Equatable {
    public var mode: String
    /// Triggers that took a frame (each gives exactly one result, or is counted in `incomplete`).
    public var accepted: Int
    /// Triggers that came while an earlier one was still being inspected: answered as missed, never queued.
    public var missed: Int
    /// Triggers whose frame never came (the camera was lost after the trigger) within the frame timeout.
    public var abandoned: Int
    /// Triggers whose frame arrived incomplete (packets lost beyond resend): not inspected, answered with the reason
    /// (in line mode, each broken frame: a part that passed uninspected).
    public var incomplete: Int
    /// The trigger being inspected now, if any.
    public var inFlight: Int?
    public var lastSequence: Int
}

public enum TriggerError: Error, CustomStringConvertible, Equatable {
    /// The pipeline was still inspecting trigger `busyWith`.
    case missed(busyWith: Int)
    case notTriggered(mode: String)
    case liveOff
    /// The trigger's frame came broken (`reason`: the camera's error); no inspection, no verdict.
    case frameFailed(trigger: Int, reason: String)

    public var description: String {
        switch self {
        case .missed(let busy): return "trigger missed: trigger \(busy) is still being inspected"
        case .notTriggered(let mode):
            return
                "this camera is not in software trigger mode (it is \(mode); set camera.trigger, or the recipe's trigger, to \"software\")"
        case .liveOff: return "live inspection is off; turn it on before triggering"
        case .frameFailed(let trigger, let reason): return "trigger \(trigger) got no inspection: \(reason); trigger again"
        }
    }
}

/// One trigger at a time: a trigger is accepted only when the one before it
/// has its result, so every accepted trigger gives exactly one capture, one
/// inspection and one result, in order, carrying its sequence number. A
/// trigger that comes while one is in flight is counted and answered as
/// missed. A line trigger is a frame the camera sends on its own: one that
/// arrives while busy is missed the same way (and not inspected).
public final class TriggerGate: Sendable {
    /// The mode now: the camera config's, or the recipe's when it names one.
    public var mode: CameraTrigger { state.withLock { $0.mode } }
    /// How long a trigger may wait for its frame before it is given up.
    let frameTimeout: Duration

    private struct State {
        var mode: CameraTrigger
        var sequence = 0
        var inFlight: (stamp: TriggerStamp, since: ContinuousClock.Instant, framed: Bool, fired: Date)?
        var accepted = 0, missed = 0, abandoned = 0, incomplete = 0
        var waiters: [Int: [CheckedContinuation<InspectionResult?, Never>]] = [:]
        /// The last results by trigger, for a caller that asks after the result went out.
        var recent: [Int: InspectionResult] = [:]
        /// The last triggers whose frame failed, and why.
        var failures: [Int: String] = [:]
    }

    private let state: Mutex<State>

    public init(mode: CameraTrigger, frameTimeout: Duration = .seconds(5)) {
        state = Mutex(State(mode: mode))
        self.frameTimeout = frameTimeout
    }

    /// A new mode (the recipe changed it): a trigger in flight is given up
    /// (its waiters get no result) and counted as abandoned; numbering goes on.
    public func setMode(_ mode: CameraTrigger) {
        let waiters = state.withLock { state -> [CheckedContinuation<InspectionResult?, Never>] in
            guard state.mode != mode else { return [] }
            state.mode = mode
            guard let flight = state.inFlight else { return [] }
            state.inFlight = nil
            state.abandoned += 1
            return state.waiters.removeValue(forKey: flight.stamp.sequence) ?? []
        }
        for waiter in waiters { waiter.resume(returning: nil) }
    }

    var isTriggered: Bool { mode != .freeRun }

    /// A software trigger: its sequence number once accepted (the caller then
    /// fires the camera), or `TriggerError.missed`.
    public func accept(source: String) throws -> TriggerStamp {
        let (stamp, abandoned) = try state.withLock { state -> (TriggerStamp, [CheckedContinuation<InspectionResult?, Never>]) in
            let abandoned = abandonStale(&state)
            if let busy = state.inFlight {
                state.missed += 1
                throw TriggerError.missed(busyWith: busy.stamp.sequence)
            }
            state.sequence += 1
            state.accepted += 1
            let stamp = TriggerStamp(source: source, sequence: state.sequence)
            state.inFlight = (stamp, .now, false, Date())
            return (stamp, abandoned)
        }
        for waiter in abandoned { waiter.resume(returning: nil) }
        return stamp
    }

    /// The camera did not take the accepted trigger (it failed to fire).
    func withdraw(_ stamp: TriggerStamp) {
        finish(stamp, result: nil)
    }

    /// A frame arrived: the trigger it answers, or nil when it is not to be
    /// inspected (a line trigger while busy: counted as missed; a frame
    /// nobody triggered).
    public func frameArrived() -> TriggerStamp? {
        state.withLock { state in
            switch state.mode {
            case .freeRun:
                return nil
            case .software:
                guard let flight = state.inFlight, !flight.framed else { return nil }
                state.inFlight?.framed = true
                return flight.stamp
            case .line(let line):
                _ = abandonStale(&state)
                if state.inFlight != nil {
                    state.missed += 1
                    return nil
                }
                state.sequence += 1
                state.accepted += 1
                let stamp = TriggerStamp(source: line, sequence: state.sequence)
                state.inFlight = (stamp, .now, true, Date())
                return stamp
            }
        }
    }

    /// The frame the camera sent arrived incomplete, its first packet at
    /// `startedAt` (nil: unknown): the software trigger in flight, fired before it, is
    /// answered with `reason` (its frame will not come again) and counted; a
    /// broken frame that started before the trigger was fired is an earlier
    /// one's (a frame can break into several buffers) and answers no one. In
    /// line mode the part passed uninspected: counted. Returns the software
    /// trigger it answered.
    @discardableResult
    public func frameFailed(reason: String, startedAt: Date?) -> TriggerStamp? {
        let stamp = state.withLock { state -> TriggerStamp? in
            switch state.mode {
            case .freeRun: return nil
            case .line:
                state.incomplete += 1
                return nil
            case .software:
                guard let flight = state.inFlight, !flight.framed, startedAt.map({ $0 >= flight.fired }) ?? true else { return nil }
                state.incomplete += 1
                state.failures[flight.stamp.sequence] = reason
                state.failures.removeValue(forKey: flight.stamp.sequence - 16)
                return flight.stamp
            }
        }
        if let stamp { finish(stamp, result: nil) }
        return stamp
    }

    /// Why a trigger got no result, when its frame came broken.
    public func failure(of stamp: TriggerStamp) -> String? { state.withLock { $0.failures[stamp.sequence] } }

    /// The trigger's result (nil: its frame failed inspection); the next trigger may come.
    public func finish(_ stamp: TriggerStamp, result: InspectionResult?) {
        let waiters = state.withLock { state -> [CheckedContinuation<InspectionResult?, Never>] in
            if state.inFlight?.stamp == stamp { state.inFlight = nil }
            if let result {
                state.recent[stamp.sequence] = result
                state.recent.removeValue(forKey: stamp.sequence - 16)
            }
            return state.waiters.removeValue(forKey: stamp.sequence) ?? []
        }
        for waiter in waiters { waiter.resume(returning: result) }
    }

    /// Waits for the result of an accepted trigger (nil if its frame failed or never came).
    public func result(of stamp: TriggerStamp, timeout: Duration) async -> InspectionResult? {
        await withCheckedContinuation { continuation in
            let finished = state.withLock { state -> InspectionResult?? in
                guard state.inFlight?.stamp == stamp else { return .some(state.recent[stamp.sequence]) }
                state.waiters[stamp.sequence, default: []].append(continuation)
                return .none
            }
            // Already finished before anyone waited.
            if let finished { continuation.resume(returning: finished); return }
            Task { [self] in
                try? await Task.sleep(for: timeout)
                let expired = state.withLock { state -> [CheckedContinuation<InspectionResult?, Never>] in
                    state.waiters.removeValue(forKey: stamp.sequence) ?? []
                }
                for waiter in expired { waiter.resume(returning: nil) }
            }
        }
    }

    public var statistics: TriggerStatistics {
        state.withLock { state in
            TriggerStatistics(
                mode: state.mode.name, accepted: state.accepted, missed: state.missed, abandoned: state.abandoned,
                incomplete: state.incomplete, inFlight: state.inFlight?.stamp.sequence, lastSequence: state.sequence)
        }
    }

    /// Gives up a trigger whose frame did not come within the timeout (the
    /// camera was lost after it fired); returns its waiters to answer.
    private func abandonStale(_ state: inout State) -> [CheckedContinuation<InspectionResult?, Never>] {
        // A framed trigger is given up only far later (its inspection is under way).
        guard let flight = state.inFlight, ContinuousClock.now - flight.since > (flight.framed ? frameTimeout * 6 : frameTimeout) else {
            return []
        }
        state.inFlight = nil
        state.abandoned += 1
        return state.waiters.removeValue(forKey: flight.stamp.sequence) ?? []
    }
}
