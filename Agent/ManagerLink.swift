import Foundation
public import Logging
import LoupePKI
public import LoupeProto
public import LoupeWire
public import ServiceLifecycle
import Synchronization

/// Keeps an agent connected to its manager: connects over mutual TLS,
/// completes the handshake, sends status reports, and reconnects with
/// exponential backoff and jitter whenever the link drops. With several
/// managers (`manager.fallbackAddresses`) a failure moves to the next one at
/// once, and the backoff counts rounds of every address failing. On graceful
/// shutdown (SIGTERM) it says Goodbye and returns.
public final class ManagerLink: Service, Sendable {
    public let config: AgentConfig
    private let logger: Logger
    private let started = ContinuousClock.now
    private let connections = Mutex(0)
    private let statusProvider: @Sendable () async -> Loupe_V1_AgentStatus
    private let outbox: OutboxSender?
    private let inbound: RequestHandler?
    private let live = Mutex<WireConnection?>(nil)

    /// - Parameter inbound: serves what the manager sends (model offers, training progress).
    public init(
        config: AgentConfig, logger: Logger, outbox: OutboxSender? = nil, inbound: RequestHandler? = nil,
        status: @escaping @Sendable () async -> Loupe_V1_AgentStatus = { Loupe_V1_AgentStatus() }
    ) {
        self.config = config
        self.logger = logger
        self.outbox = outbox
        self.inbound = inbound
        self.statusProvider = status
    }

    /// The connection to the manager while there is one.
    public var connection: WireConnection? { live.withLock { $0 } }

    /// How many times the handshake has succeeded since start.
    public var successfulConnections: Int { connections.withLock { $0 } }

    public func run() async throws {
        guard let link = config.manager else {
            logger.info("no manager configured; running standalone")
            // Stay up beside the agent's other services until shutdown.
            try? await gracefulShutdown()
            logger.info("manager link stopped")
            return
        }
        let endpoints = try link.addresses.map { address in
            let (host, port) = try parseAddress(address)
            return (address: address, host: host, port: port)
        }
        let backoff = Backoff(
            initial: link.reconnectInitialSeconds ?? 0.5,
            maximum: link.reconnectMaxSeconds ?? 30
        )
        let statusInterval = Duration.seconds(fraction: link.statusIntervalSeconds ?? 5)
        let capabilities = inbound == nil ? ["agent-status", "roi-upload"] : ["agent-status", "roi-upload", "model-chunks", "training"]
        // `failures` counts rounds in which every address failed; `current` is the address tried next.
        var (failures, current, failedInRound) = (0, 0, 0)
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let endpoint = endpoints[current]
            let client = WireClientConfiguration(
                host: endpoint.host, port: endpoint.port, tls: config.tls,
                connection: ConnectionSettings(heartbeatSeconds: link.heartbeatSeconds, idleTimeoutSeconds: link.idleTimeoutSeconds),
                capabilities: capabilities)
            let connectionsBefore = successfulConnections
            do {
                try await cancelWhenGracefulShutdown {
                    try await WireClient.withConnection(client, handler: self.inbound ?? WireClient.refuseAll) { connection, welcome in
                        try self.checkIdentity(welcome)
                        self.connections.withLock { $0 += 1 }
                        self.live.withLock { $0 = connection }
                        defer { self.live.withLock { $0 = nil } }
                        self.logger.info(
                            "connected to manager",
                            metadata: ["manager": "\(welcome.managerID)", "address": "\(endpoint.address)"])
                        try await withThrowingTaskGroup(of: Void.self) { group in
                            group.addTask { try await self.report(over: connection, every: statusInterval) }
                            if let outbox = self.outbox, welcome.capabilities.contains("roi-upload") {
                                group.addTask { try await outbox.run(over: connection) }
                            }
                            try await group.next()
                            group.cancelAll()
                        }
                    }
                }
                if Task.isShuttingDownGracefully || Task.isCancelled { break }
                logger.warning("manager link closed", metadata: ["address": "\(endpoint.address)"])
            } catch {
                if Task.isShuttingDownGracefully || Task.isCancelled { break }
                logger.warning("manager link failed", metadata: ["address": "\(endpoint.address)", "error": "\(error)"])
                if let wire = error as? WireError, case .remote(let code, _) = wire,
                    code == .certificateRevoked || code == .protocolVersionMismatch
                {
                    logger.error(
                        "the manager refused this agent; fix the certificate or software before it can connect",
                        metadata: ["error": "\(wire)"])
                }
            }
            // A link that got through starts a new round and resets the backoff to its first step.
            if successfulConnections > connectionsBefore { (failures, failedInRound) = (0, 0) }
            current = (current + 1) % endpoints.count
            failedInRound += 1
            // The next manager is tried at once; only a round in which every one failed waits.
            guard failedInRound >= endpoints.count else { continue }
            (failures, failedInRound) = (failures + 1, 0)
            let delay = backoff.delay(afterFailures: failures)
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(fraction: delay)) }
        }
        logger.info("manager link stopped")
    }

    private func checkIdentity(_ welcome: Loupe_V1_Welcome) throws {
        guard welcome.peerRole == .agent else {
            throw WireError.wrongPeerRole(expected: "agent", actual: "\(welcome.peerRole)")
        }
        guard welcome.peerIdentity == config.cameraId else {
            throw WireError.refused(
                code: .permissionDenied,
                message: "certificate names camera \(welcome.peerIdentity) but this agent is configured as \(config.cameraId)")
        }
    }

    /// Sends a status report now and then, until the connection ends.
    private func report(over connection: WireConnection, every interval: Duration) async throws {
        while !connection.isClosed {
            var status = await statusProvider()
            status.softwareVersion = WireProtocol.softwareVersion
            status.uptimeSeconds = UInt64((ContinuousClock.now - started).seconds)
            status.diskFreeBytes = DiskSpace.freeBytes(at: config.dataDir)
            try await connection.send(event: .agentStatus(status))
            // Not raced against waitUntilClosed(): a close future ignores
            // cancellation, so the race would hold the loop until the close.
            try await Task.sleep(for: interval)
        }
    }
}

/// Exponential reconnect delays with jitter: after n failures the delay is
/// drawn uniformly from [d/2, d] where d = min(maximum, initial * 2^(n-1)),
/// so a fleet that lost its manager does not reconnect in lock-step.
public struct Backoff: Sendable {
    public var initial: Double
    public var maximum: Double

    public init(initial: Double, maximum: Double) {
        self.initial = initial
        self.maximum = max(initial, maximum)
    }

    public func delay<Generator: RandomNumberGenerator>(afterFailures failures: Int, using generator: inout Generator) -> Double {
        let ceiling = min(maximum, initial * pow(2, Double(max(0, failures - 1))))
        return Double.random(in: (ceiling / 2)...ceiling, using: &generator)
    }

    public func delay(afterFailures failures: Int) -> Double {
        var generator = SystemRandomNumberGenerator()
        return delay(afterFailures: failures, using: &generator)
    }
}

/// Free space on the filesystem holding a folder.
enum DiskSpace {
    static func freeBytes(at path: String) -> UInt64 {
        var info = statvfs()
        guard statvfs(path, &info) == 0 else { return 0 }
        return UInt64(info.f_bavail) * UInt64(info.f_frsize)
    }
}
