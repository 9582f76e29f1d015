public import LoupePKI
public import LoupeProto
public import NIOCore
public import NIOPosix
import NIOSSL

/// Where and how a client (an agent or an operator's CLI) reaches a server.
public struct WireClientConfiguration: Sendable {
    public var host: String
    public var port: Int
    public var tls: TLSFiles
    public var connection: ConnectionSettings
    /// Capabilities announced in Hello.
    public var capabilities: [String]
    /// The role the server's certificate must carry; nil accepts any fleet role.
    public var serverRole: FleetRole?
    /// Protocol version announced in Hello (tests set others).
    public var protocolVersion: UInt32
    public var connectTimeout: Duration

    public init(
        host: String,
        port: Int,
        tls: TLSFiles,
        connection: ConnectionSettings = ConnectionSettings(),
        capabilities: [String] = [],
        serverRole: FleetRole? = .manager,
        protocolVersion: UInt32 = WireProtocol.version,
        connectTimeout: Duration = .seconds(10)
    ) {
        self.host = host
        self.port = port
        self.tls = tls
        self.connection = connection
        self.capabilities = capabilities
        self.serverRole = serverRole
        self.protocolVersion = protocolVersion
        self.connectTimeout = connectTimeout
    }
}

/// Opens mutual-TLS connections to a Loupe server.
public enum WireClient {
    /// Connects, completes Hello/Welcome, runs `body` with the live connection,
    /// then says Goodbye and closes. Requests the server sends are answered by
    /// `handler`. Throws `WireError.remote` when the server refuses the Hello,
    /// and `WireError.tlsFailure` when TLS refuses either certificate.
    public static func withConnection<Result: Sendable>(
        _ configuration: WireClientConfiguration,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        handler: @escaping RequestHandler = refuseAll,
        body: @Sendable (WireConnection, Loupe_V1_Welcome) async throws -> Result
    ) async throws -> Result {
        let tlsContext = try TLSSettings.clientContext(configuration.tls)
        let settings = configuration.connection
        let serverHostname = isIPAddress(configuration.host) ? nil : configuration.host
        let ledger = ConnectionLedger()
        let channel = try await connect(configuration, group: group) { channel in
            try channel.pipeline.syncOperations.addHandler(
                NIOSSLClientHandler(context: tlsContext, serverHostname: serverHostname)
            )
            return try WireChannel.finish(channel, settings: settings, ledger: ledger)
        }
        return try await channel.executeThenClose { inbound, _ in
            let connection = await WireConnection.make(channel: channel.channel, settings: settings, ledger: ledger)
            return try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await connection.run(inbound: inbound, handshake: nil, handler: handler) }
                do {
                    let welcome = try await hello(connection, configuration: configuration)
                    let result = try await body(connection, welcome)
                    await connection.close(reason: "client finished")
                    try await group.waitForAll()
                    return result
                } catch {
                    await connection.close(reason: "client failed: \(error)")
                    group.cancelAll()
                    throw error
                }
            }
        }
    }

    /// Tries each address of the host in turn until one accepts.
    private static func connect(
        _ configuration: WireClientConfiguration,
        group: any EventLoopGroup,
        pipeline: @escaping @Sendable (any Channel) throws -> NIOAsyncChannel<Envelope, Never>
    ) async throws -> NIOAsyncChannel<Envelope, Never> {
        let target = "\(configuration.host):\(configuration.port)"
        let addresses = try await AddressResolver.resolve(host: configuration.host, port: configuration.port)
        var failures: [String] = []
        for address in addresses {
            do {
                return try await ClientBootstrap(group: group)
                    .connectTimeout(TimeAmount(configuration.connectTimeout))
                    .channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .connect(to: address) { channel in
                        channel.eventLoop.makeCompletedFuture { try pipeline(channel) }
                    }
            } catch {
                failures.append("\(address.ipAddress ?? "?"): \(error)")
            }
        }
        throw WireError.unreachable(address: target, reason: failures.joined(separator: "; "))
    }

    /// The default handler for a client: it serves no requests.
    public static let refuseAll: RequestHandler = { _, envelope in
        throw WireError.refused(code: .unimplemented, message: "this client does not serve \(envelope.bodyName)")
    }

    private static func hello(
        _ connection: WireConnection,
        configuration: WireClientConfiguration
    ) async throws -> Loupe_V1_Welcome {
        var hello = Loupe_V1_Hello()
        hello.protocolVersion = configuration.protocolVersion
        hello.softwareVersion = WireProtocol.softwareVersion
        hello.capabilities = configuration.capabilities
        hello.maxFrameBytes = UInt32(configuration.connection.maxFrameBytes)
        let reply = try await connection.request(.hello(hello), timeout: configuration.connectTimeout)
        guard case .welcome(let welcome) = reply.body else {
            throw WireError.unexpectedReply(expected: "welcome", received: reply.bodyName)
        }
        try connection.adoptPeerFrameLimit(welcome.maxFrameBytes, field: "Welcome.max_frame_bytes")
        let server = try connection.certifiedPeer()
        connection.setPeer(server)
        connection.adoptPeerTimers(
            heartbeatInterval: .milliseconds(Int64(welcome.heartbeatIntervalMs)), idleTimeout: .milliseconds(Int64(welcome.idleTimeoutMs)))
        if let role = configuration.serverRole, server.role != role {
            throw WireError.wrongPeerRole(expected: role.rawValue, actual: server.role.rawValue)
        }
        return welcome
    }

    static func isIPAddress(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }
}

/// Splits "host:port" or "[v6]:port".
public func parseAddress(_ text: String) throws -> (host: String, port: Int) {
    if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
        let host = String(text[text.index(after: text.startIndex)..<close])
        let rest = text[text.index(after: close)...]
        guard rest.hasPrefix(":"), let port = Int(rest.dropFirst()), (0...65535).contains(port) else {
            throw WireError.invalidAddress(text)
        }
        return (host, port)
    }
    guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
        (0...65535).contains(port), colon != text.startIndex
    else {
        throw WireError.invalidAddress(text)
    }
    return (String(text[..<colon]), port)
}
