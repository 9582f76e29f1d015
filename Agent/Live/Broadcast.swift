import Foundation
import Synchronization

/// Values sent to every current subscriber. Each subscriber keeps only the
/// newest few it has not read, so a slow reader misses values rather than
/// holding up the sender.
public final class Broadcast<Element: Sendable>: Sendable {
    private let continuations = Mutex<[UUID: AsyncStream<Element>.Continuation]>([:])

    public init() {}

    /// A stream of the values sent from now on, after `initial` if given.
    public func subscribe(keepingNewest count: Int, initial: Element? = nil) -> AsyncStream<Element> {
        let id = UUID()
        let (stream, continuation) = AsyncStream.makeStream(of: Element.self, bufferingPolicy: .bufferingNewest(count))
        continuation.onTermination = { [weak self] _ in _ = self?.continuations.withLock { $0.removeValue(forKey: id) } }
        continuations.withLock { $0[id] = continuation }
        if let initial { continuation.yield(initial) }
        return stream
    }

    public func send(_ value: Element) {
        for continuation in continuations.withLock({ Array($0.values) }) { continuation.yield(value) }
    }

    /// Ends every subscriber's stream.
    public func finish() {
        for continuation in continuations.withLock({ Array($0.values) }) { continuation.finish() }
    }
}
