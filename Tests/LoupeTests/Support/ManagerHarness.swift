import Foundation
import Logging
import LoupeManager
import LoupePKI
import LoupeWire
import NIOCore
import ServiceLifecycle

/// A real ManagerService running in this process on a loopback port.
final class ManagerHarness: @unchecked Sendable {
    let pki: TestPKI
    let config: ManagerConfig
    let service: ManagerService
    let port: Int
    private let group: ServiceGroup
    private let task: Task<Void, any Error>

    static func start(
        pki: TestPKI? = nil,
        revocationList: String? = nil,
        heartbeatSeconds: Double = 1,
        idleTimeoutSeconds: Double = 5,
        maxFrameBytes: Int? = nil,
        revocationPollSeconds: Double = 0.2
    ) async throws -> ManagerHarness {
        let pki = try pki ?? TestPKI()
        var config = ManagerConfig(
            managerId: "test-plant", listen: "127.0.0.1:0", tls: try pki.manager(),
            revocationList: revocationList, dataDir: pki.dir + "/manager-data",
            maxFrameBytes: maxFrameBytes, heartbeatSeconds: heartbeatSeconds, idleTimeoutSeconds: idleTimeoutSeconds
        )
        config.revocationPollSeconds = revocationPollSeconds
        var logger = Logger(label: "test.manager")
        logger.logLevel = .warning
        let (stream, continuation) = AsyncStream<Int>.makeStream()
        let service = try ManagerService(config: config, logger: logger) { address in
            continuation.yield(address.port ?? 0)
            continuation.finish()
        }
        let group = ServiceGroup(services: [service], logger: logger)
        let task = Task {
            // A manager that fails before it listens ends the wait below with its own error.
            defer { continuation.finish() }
            try await group.run()
        }
        var iterator = stream.makeAsyncIterator()
        guard let port = await iterator.next(), port > 0 else {
            await group.triggerGracefulShutdown()
            try await task.value
            throw WireError.connectionClosed
        }
        return ManagerHarness(pki: pki, config: config, service: service, group: group, port: port, task: task)
    }

    private init(pki: TestPKI, config: ManagerConfig, service: ManagerService, group: ServiceGroup, port: Int, task: Task<Void, any Error>) {
        self.group = group
        self.pki = pki
        self.config = config
        self.service = service
        self.port = port
        self.task = task
    }

    func client(_ files: TLSFiles, host: String = "localhost", protocolVersion: UInt32 = WireProtocol.version) -> WireClientConfiguration {
        WireClientConfiguration(
            host: host, port: port, tls: files,
            connection: ConnectionSettings(heartbeatInterval: .seconds(1), idleTimeout: .seconds(5), requestTimeout: .seconds(20)),
            protocolVersion: protocolVersion, connectTimeout: .seconds(5)
        )
    }

    /// Shuts the manager down gracefully (cancelling it could strand accepted
    /// connections, see apple/swift-nio#3481) and waits until it has stopped.
    func stop() async {
        await group.triggerGracefulShutdown()
        _ = await task.result
    }
}
