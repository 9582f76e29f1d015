import Foundation
import Logging
import LoupeManager
import LoupePKI
import LoupeProto
import LoupeTesting
import LoupeWire
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle

/// `loupe bench wire`: Loupe's framed protobuf over mutual TLS against a
/// plain NIOSSL echo server with the same TLS settings (the ceiling), both on
/// loopback in this process. Each figure is the median of several rounds.
public struct WireBenchmark: Sendable {
    /// The benchmarks' in-process managers log errors only.
    static var quietLogger: Logger {
        var logger = Logger(label: "loupe.bench")
        logger.logLevel = .error
        return logger
    }

    public struct Options: Sendable {
        public var rounds = 5
        public var secondsPerRound = 1.0
        public var smallPayloadBytes = 64
        public var pipelinedWindow = 32
        public var largePayloadBytes = 1 << 20
        public var largeWindow = 8
        public init() {}
    }

    /// One measured figure for Loupe and for the ceiling.
    public struct Row: Sendable {
        public var name: String
        public var unit: String
        public var loupe: Double
        public var ceiling: Double
        /// Median share of the machine's cores busy during the rounds (1 = all).
        public var loupeCPU: Double
        public var ceilingCPU: Double
        public var ratio: Double { ceiling > 0 ? loupe / ceiling : 0 }
    }

    public let options: Options
    private let progress: @Sendable (String) -> Void

    public init(options: Options, progress: @escaping @Sendable (String) -> Void) {
        self.options = options
        self.progress = progress
    }

    public func run() async throws -> [Row] {
        let folder = NSTemporaryDirectory() + "loupe-bench-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let pki = try LocalFleetPKI(folder: folder, organization: "Bench")
        let (managerTLS, agentTLS) = (try pki.manager(), try pki.member(.agent, "bench-cam"))

        let manager = try await InProcessManager.start(
            ManagerConfig(managerId: "bench", listen: "127.0.0.1:0", tls: managerTLS, revocationList: nil, dataDir: folder + "/data"),
            logger: Self.quietLogger)
        let managerPort = manager.port

        let echo = try await PlainTLSEcho.start(tls: managerTLS)
        defer { echo.stop() }

        let loupeClient = WireClientConfiguration(host: "localhost", port: managerPort, tls: agentTLS)
        let small = Data(repeating: 0x42, count: options.smallPayloadBytes)
        let large = Data(repeating: 0x42, count: options.largePayloadBytes)
        let rows = try await WireClient.withConnection(loupeClient) { connection, _ in
            try await PlainTLSEcho.withClient(port: echo.port, tls: agentTLS, secondsPerRound: options.secondsPerRound) { plain in
                var rows: [Row] = []
                rows.append(
                    try await measure(
                        "small round trips, 1 in flight", unit: "round trips/s", perItem: 1,
                        loupe: { try await loupeRoundTrips(connection, payload: small, window: 1) },
                        ceiling: { try await plain.roundTrips(payloadBytes: small.count, window: 1) }))
                rows.append(
                    try await measure(
                        "small round trips, \(options.pipelinedWindow) in flight", unit: "round trips/s", perItem: 1,
                        loupe: { try await loupeRoundTrips(connection, payload: small, window: options.pipelinedWindow) },
                        ceiling: { try await plain.roundTrips(payloadBytes: small.count, window: options.pipelinedWindow) }))
                let megabytes = Double(options.largePayloadBytes) / 1_000_000
                rows.append(
                    try await measure(
                        "\(options.largePayloadBytes >> 20) MiB payloads, \(options.largeWindow) in flight", unit: "MB/s each way",
                        perItem: megabytes,
                        loupe: { try await loupeRoundTrips(connection, payload: large, window: options.largeWindow) },
                        ceiling: { try await plain.roundTrips(payloadBytes: large.count, window: options.largeWindow) }))
                return rows
            }
        }
        await manager.stop()
        return rows
    }

    /// Runs both sides in alternating rounds (so drift on a noisy machine hits
    /// both alike) and keeps the medians. Each closure returns how many round
    /// trips it completed in `secondsPerRound`.
    private func measure(
        _ name: String, unit: String, perItem: Double,
        loupe: () async throws -> Int, ceiling: () async throws -> Int
    ) async throws -> Row {
        var loupeRates: [Double] = [], ceilingRates: [Double] = []
        var loupeCPU: [Double] = [], ceilingCPU: [Double] = []
        _ = try await loupe()  // warm-up
        _ = try await ceiling()
        for round in 1...options.rounds {
            progress("\(name): round \(round)/\(options.rounds)")
            let (loupeCount, loupeBusy) = try await withCPUShare(loupe)
            loupeRates.append(Double(loupeCount) * perItem / options.secondsPerRound)
            loupeCPU.append(loupeBusy)
            let (ceilingCount, ceilingBusy) = try await withCPUShare(ceiling)
            ceilingRates.append(Double(ceilingCount) * perItem / options.secondsPerRound)
            ceilingCPU.append(ceilingBusy)
        }
        return Row(
            name: name, unit: unit, loupe: median(loupeRates), ceiling: median(ceilingRates),
            loupeCPU: median(loupeCPU), ceilingCPU: median(ceilingCPU)
        )
    }

    /// Runs `body` and returns its result with the share of all cores this
    /// process kept busy meanwhile (both ends run in this process).
    private func withCPUShare(_ body: () async throws -> Int) async throws -> (Int, Double) {
        func cpuSeconds() -> Double {
            var usage = rusage()
            getrusage(RUSAGE_SELF.rawValue, &usage)
            let user = Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
            let system = Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
            return user + system
        }
        let cpuBefore = cpuSeconds()
        let start = ContinuousClock.now
        let result = try await body()
        let wall = (ContinuousClock.now - start).seconds
        let cores = Double(ProcessInfo.processInfo.activeProcessorCount)
        return (result, wall > 0 ? (cpuSeconds() - cpuBefore) / wall / cores : 0)
    }

    /// Echo requests over a Loupe connection, `window` at a time, for one round.
    private func loupeRoundTrips(_ connection: WireConnection, payload: Data, window: Int) async throws -> Int {
        var echo = Loupe_V1_Echo()
        echo.payload = payload
        let request = Envelope.OneOf_Body.echo(echo)
        let deadline = ContinuousClock.now + .seconds(fraction: options.secondsPerRound)
        var completed = 0
        while ContinuousClock.now < deadline {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<window {
                    group.addTask {
                        let reply = try await connection.request(request)
                        guard case .echo(let back) = reply.body, back.payload.count == payload.count else {
                            throw WireError.unexpectedReply(expected: "echo", received: reply.bodyName)
                        }
                    }
                }
                try await group.waitForAll()
            }
            completed += window
        }
        return completed
    }
}
