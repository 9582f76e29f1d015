import Foundation
public import LoupeImaging
import Synchronization

/// Labels the installed model suggests, waiting for the operator: a
/// suggestion is shown on the page as a proposal and stored as the ROI's
/// mask only when accepted (or edited, which accepts it first); a rejected
/// or superseded one is never stored. Held in memory, the few most recent.
public final class Suggestions: Sendable {
    public struct Pending: Sendable {
        public var mask: Image8
        public var modelVersion: String
        public var threshold: Double
    }

    public let capacity: Int
    /// Most recent last.
    private let pending = Mutex<[(key: CaptureROI, value: Pending)]>([])

    public init(capacity: Int = 32) {
        self.capacity = max(1, capacity)
    }

    /// Holds `suggestion` for `key`, in place of any earlier one.
    public func offer(_ suggestion: Pending, for key: CaptureROI) {
        pending.withLock { list in
            list.removeAll { $0.key == key }
            list.append((key, suggestion))
            if list.count > capacity { list.removeFirst(list.count - capacity) }
        }
    }

    /// The suggestion waiting for `key`.
    public func waiting(for key: CaptureROI) -> Pending? {
        pending.withLock { list in list.last { $0.key == key }?.value }
    }

    /// Takes the suggestion for `key` out (accepted or rejected); nil when none waits.
    @discardableResult
    public func take(_ key: CaptureROI) -> Pending? {
        pending.withLock { list in
            guard let index = list.lastIndex(where: { $0.key == key }) else { return nil }
            return list.remove(at: index).value
        }
    }
}
