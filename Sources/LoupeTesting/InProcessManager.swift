import Foundation
public import Logging
public import LoupeManager
import LoupeWire
import NIOCore
import ServiceLifecycle

/// A real `ManagerService` running in this process on a loopback port: the
/// one way the tests, the benchmarks and `loupe demo` start a manager of
/// their own. `start` returns once it listens, or throws the manager's own
/// error when it fails before that.
public final class InProcessManager: Sendable {
    public let config: ManagerConfig
    public let service: ManagerService
    public let port: Int
    private let group: ServiceGroup
    private let task: Task<Void, any Error>

    public static func start(_ config: ManagerConfig, logger: Logger) async throws -> InProcessManager {
        let (ports, found) = AsyncStream<Int>.makeStream()
        let service = try await ManagerService.open(config: config, logger: logger) { address in
            found.yield(address.port ?? 0)
            found.finish()
        }
        let group = ServiceGroup(services: [service], logger: logger)
        let task = Task {
            // A manager that fails before it listens ends the wait below with its own error.
            defer { found.finish() }
            try await group.run()
        }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next(), port > 0 else {
            await group.triggerGracefulShutdown()
            try await task.value
            throw WireError.connectionClosed
        }
        return InProcessManager(config: config, service: service, port: port, group: group, task: task)
    }

    private init(config: ManagerConfig, service: ManagerService, port: Int, group: ServiceGroup, task: Task<Void, any Error>) {
        (self.config, self.service, self.port, self.group, self.task) = (config, service, port, group, task)
    }

    /// Shuts the manager down gracefully (cancelling it could strand accepted
    /// connections, see apple/swift-nio#3481) and waits until it has stopped.
    public func stop() async {
        await group.triggerGracefulShutdown()
        _ = await task.result
    }
}
