import LoupeTesting
import Synchronization

/// The tests' fleet PKI: `LocalFleetPKI` in a fresh temporary folder.
typealias TestPKI = LocalFleetPKI

/// A thread-safe counter tests share with server handlers.
final class Counter: Sendable {
    private let value = Mutex(0)
    func increment() { value.withLock { $0 += 1 } }
    var current: Int { value.withLock { $0 } }
}
