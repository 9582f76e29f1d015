import LoupePKI
import LoupeProto
public import Logging
public import NIOCore
public import NIOPosix
import NIOSSL
import Synchronization

/// Where and how a Loupe server listens.
public struct WireServerConfiguration: Sendable {
    public var host: String
    /// 0 picks a free port; read it back from `WireServer.localAddress`.
    public var port: Int
    public var tls: TLSFiles
    public var connection: ConnectionSettings
    /// Connections open at once, in all; one more is closed before its TLS handshake costs anything.
    public var maxConnections: Int
    /// Connections open at once under one certificate identity; one more is refused at its Hello.
    public var maxConnectionsPerPeer: Int

    public static let defaultMaxConnections = 10_000
    public static let defaultMaxConnectionsPerPeer = 4

    public init(
        host: String, port: Int, tls: TLSFiles, connection: ConnectionSettings = ConnectionSettings(),
        maxConnections: Int = Self.defaultMaxConnections, maxConnectionsPerPeer: Int = Self.defaultMaxConnectionsPerPeer
    ) {
        self.host = host
        self.port = port
        self.tls = tls
        self.connection = connection
        self.maxConnections = maxConnections
        self.maxConnectionsPerPeer = maxConnectionsPerPeer
    }
}

/// Accepted connections not yet closed, counted as the listener accepts them.
final class ConnectionCount: Sendable {
    private let count = Mutex<Int>(0)
    private let refused = Mutex<Int>(0)

    func claim(limit: Int) -> Bool {
        let admitted = count.withLock { count -> Bool in
            guard count < limit else { return false }
            count += 1
            return true
        }
        if !admitted { refused.withLock { $0 += 1 } }
        return admitted
    }

    func release() { count.withLock { $0 -= 1 } }
    var refusals: Int { refused.withLock { $0 } }
}

/// A mutual-TLS listener speaking framed protobuf. Each accepted connection
/// must complete the Hello/Welcome handshake, then its requests go to the
/// handler. A connection that breaks the protocol is answered with an Error
/// and closed; every other connection keeps being served.
public final class WireServer: Sendable {
    public let configuration: WireServerConfiguration
    /// The address actually bound (with the real port when 0 was asked for).
    public let localAddress: SocketAddress
    private let listener: NIOAsyncChannel<NIOAsyncChannel<Envelope, Never>, Never>
    private let connections = Mutex<[ObjectIdentifier: WireConnection]>([:])
    private let logger: Logger

    /// Binds the listening socket. Fails with a clear error when the port is
    /// taken or a certificate file is unreadable.
    public static func bind(
        _ configuration: WireServerConfiguration,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "loupe.wire.server")
    ) async throws -> WireServer {
        let tlsContext = try TLSSettings.serverContext(configuration.tls)
        let settings = configuration.connection
        let accepted = ConnectionCount()
        let limit = configuration.maxConnections
        let listener = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 512)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: configuration.host, port: configuration.port) { channel in
                // Over the total: closed at once, before a TLS handshake is spent on it.
                guard accepted.claim(limit: limit) else {
                    return channel.close().flatMapThrowing { () throws -> NIOAsyncChannel<Envelope, Never> in
                        throw WireError.refused(code: .resourceExhausted, message: "the manager has \(limit) connections open")
                    }
                }
                channel.closeFuture.whenComplete { _ in accepted.release() }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tlsContext))
                    return try WireChannel.finish(channel, settings: settings)
                }
            }
        return WireServer(configuration: configuration, listener: listener, accepted: accepted, logger: logger)
    }

    private let accepted: ConnectionCount

    /// Connections closed at accept because `maxConnections` were open.
    public var refusedAtAccept: Int { accepted.refusals }

    private init(
        configuration: WireServerConfiguration,
        listener: NIOAsyncChannel<NIOAsyncChannel<Envelope, Never>, Never>,
        accepted: ConnectionCount,
        logger: Logger
    ) {
        self.configuration = configuration
        self.listener = listener
        self.accepted = accepted
        self.localAddress = listener.channel.localAddress!
        self.logger = logger
    }

    /// Live connections that completed the handshake or are completing it.
    public var activeConnections: [WireConnection] {
        connections.withLock { Array($0.values) }
    }

    /// Accepts connections until `shutdown()` is called or the task is cancelled.
    /// `handshake` sees each client's Hello after its certificate identity is
    /// known (`connection.peer`); `handler` answers everything after it.
    /// `welcomed` runs once a client's Welcome is sent; `closed` after each connection has ended.
    public func run(
        handshake: @escaping HandshakeHandler,
        handler: @escaping RequestHandler,
        welcomed: @escaping @Sendable (WireConnection) -> Void = { _ in },
        closed: @escaping @Sendable (WireConnection) async -> Void = { _ in }
    ) async throws {
        let logger = self.logger
        let settings = configuration.connection
        let perPeer = configuration.maxConnectionsPerPeer
        try await listener.executeThenClose { inbound in
            try await withThrowingDiscardingTaskGroup { group in
                for try await child in inbound {
                    group.addTask {
                        try? await child.executeThenClose { childInbound, _ in
                            let connection = await WireConnection.make(channel: child.channel, settings: settings, logger: logger)
                            let key = ObjectIdentifier(connection)
                            self.connections.withLock { $0[key] = connection }
                            defer { _ = self.connections.withLock { $0.removeValue(forKey: key) } }
                            let identified: HandshakeHandler = { connection, hello in
                                let peer: PeerIdentity
                                do {
                                    peer = try connection.certifiedPeer()
                                } catch {
                                    throw WireError.refused(code: .permissionDenied, message: "client certificate unusable: \(error)")
                                }
                                let others = self.connections.withLock { all in
                                    all.values.filter {
                                        $0 !== connection && $0.peer?.name == peer.name && $0.peer?.role == peer.role && !$0.isClosed
                                    }.count
                                }
                                guard others < perPeer else {
                                    throw WireError.refused(
                                        code: .resourceExhausted,
                                        message:
                                            "\(peer.role.rawValue) \(peer.name) already has \(others) connections open (at most "
                                            + "\(perPeer) per certificate)"
                                    )
                                }
                                connection.setPeer(peer)
                                return try await handshake(connection, hello)
                            }
                            await connection.run(inbound: childInbound, handshake: identified, handler: handler, welcomed: welcomed)
                            await closed(connection)
                            logger.debug(
                                "connection ended",
                                metadata: [
                                    "peer": "\(connection.peer.map(String.init(describing:)) ?? "unidentified")",
                                    "address": "\(connection.remoteAddress)",
                                ])
                        }
                    }
                }
            }
        }
    }

    /// Stops accepting, says Goodbye to every connection and lets them close.
    public func shutdown(reason: String = "server shutting down") async {
        listener.channel.close(promise: nil)
        await withDiscardingTaskGroup { group in
            for connection in activeConnections {
                group.addTask { await connection.close(reason: reason) }
            }
        }
    }
}

/// The pipeline shared by both ends, above TLS.
enum WireChannel {
    static func finish(
        _ channel: any Channel,
        settings: ConnectionSettings,
        ledger: ConnectionLedger = ConnectionLedger()
    ) throws -> NIOAsyncChannel<Envelope, Never> {
        let stall = TimeAmount(settings.frameStallTimeout)
        try channel.pipeline.syncOperations.addHandler(HandshakeObserver(ledger: ledger))
        try channel.pipeline.syncOperations.addHandler(FrameDecoder(maxFrameBytes: settings.maxFrameBytes, stallTimeout: stall))
        try channel.pipeline.syncOperations.addHandler(EnvelopeDecoder())
        try channel.pipeline.syncOperations.addHandler(EnvelopeFramer(limit: ledger.peerFrameLimit))
        try channel.pipeline.syncOperations.addHandler(ReplyRouter(ledger: ledger))
        return try NIOAsyncChannel<Envelope, Never>(
            wrappingChannelSynchronously: channel,
            configuration: .init(backPressureStrategy: .init(lowWatermark: 16, highWatermark: 64))
        )
    }
}
