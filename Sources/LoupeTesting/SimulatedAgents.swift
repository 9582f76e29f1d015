import Foundation
import LoupePKI
public import LoupeProto
public import LoupeWire

/// Many light agents for the benchmarks and tests that need a fleet: each with its own agent certificate from the
/// fleet's CA and its own mutual-TLS connection, speaking the real protocol. Each connects to the next of `ports` in
/// turn, announces itself with an AgentStatus of `inspectionType`, then runs `body` with its connection; the
/// connection closes when `body` returns.
public struct SimulatedAgents: Sendable {
    /// The agents' camera ids, in order.
    public let ids: [String]
    /// Their certificates and keys, in the same order.
    public let tls: [TLSFiles]

    /// Makes the agents' certificates (a few milliseconds each); `prefix-0001`, `prefix-0002`, … .
    public init(count: Int, prefix: String, pki: LocalFleetPKI) throws {
        ids = (1...max(1, count)).map { String(format: "%@-%04d", prefix, $0) }
        tls = try ids.map { try pki.member(.agent, $0) }
    }

    /// What one agent does once connected: its index, its connection, and the status it announced.
    public typealias Body = @Sendable (_ index: Int, _ connection: WireConnection, _ status: Loupe_V1_AgentStatus) async throws -> Void

    /// Starts every agent, each in a task of its own; an agent whose connection or body fails reports it to `failed`.
    public func start(
        ports: [Int], inspectionType: String, capabilities: [String] = ["agent-status", "roi-upload"],
        handler: @escaping RequestHandler = WireClient.refuseAll,
        failed: @escaping @Sendable (_ index: Int, _ error: any Error) -> Void = { _, _ in },
        body: @escaping Body
    ) -> [Task<Void, Never>] {
        precondition(!ports.isEmpty, "simulated agents need a manager to connect to")
        return tls.enumerated().map { index, tls in
            let client = WireClientConfiguration(host: "localhost", port: ports[index % ports.count], tls: tls, capabilities: capabilities)
            return Task {
                do {
                    try await WireClient.withConnection(client, handler: handler) { connection, _ in
                        var status = Loupe_V1_AgentStatus()
                        status.inspectionType = inspectionType
                        status.recipeVersion = "1"
                        try await connection.send(event: .agentStatus(status))
                        try await body(index, connection, status)
                    }
                } catch {
                    failed(index, error)
                }
            }
        }
    }
}
