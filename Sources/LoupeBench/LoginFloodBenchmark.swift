import Foundation
import Logging
import LoupeAgent
import LoupeWire
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// What a flood of sign-ins costs live inspection. The agent's real HTTP
/// stack (`AgentHTTP.application`: access middleware, sign-in guard, scrypt)
/// serves on loopback while the real live pipeline (`PipelineBenchmark`)
/// runs in the same process; clients send wrong passwords as fast as they
/// are answered, each from another loopback address (127.0.0.2 …), as a
/// botnet would, so address throttling does not stop them and every attempt
/// reaches the password check. Three conditions in alternating rounds: no
/// flood (the peer), the flood with the sign-in guard as shipped (one scrypt
/// at a time, a bounded queue), and the flood with the guard opened to every
/// core and a deep queue (what an unbounded server does).
public struct LoginFloodBenchmark {
    public struct Options: Sendable {
        public var rounds = 3
        public var secondsPerRound = 10.0
        public var clients = 32
        public var pipeline = PipelineBenchmark.Options()
        public init() {}
    }

    public enum Condition: String, Sendable, CaseIterable {
        case quiet = "no flood"
        case gated = "flood, guard as shipped"
        case open = "flood, guard opened to every core"
    }

    public struct Round: Sendable, Codable {
        public var condition: String
        public var framesPerSecond: Double
        /// Sign-in answers per second, by status.
        public var answersPerSecond: [String: Double]
    }

    public struct Report: Sendable, Codable {
        public var rounds: [Round]
        /// Median fps per condition.
        public var medianFPS: [String: Double]
        /// Median fps under the shipped guard's flood over the quiet median.
        public var gatedRatio: Double
        public var openRatio: Double
    }

    public let options: Options
    let report: (String) -> Void

    public init(options: Options, report: @escaping (String) -> Void = { _ in }) {
        self.options = options
        self.report = report
    }

    public func run() async throws -> Report {
        var rounds: [Round] = []
        for round in 1...options.rounds {
            for condition in Condition.allCases {
                report("round \(round)/\(options.rounds): \(condition.rawValue)")
                rounds.append(try await measure(condition))
            }
        }
        var medians: [String: Double] = [:]
        for condition in Condition.allCases {
            medians[condition.rawValue] = median(rounds.filter { $0.condition == condition.rawValue }.map(\.framesPerSecond))
        }
        let quiet = max(medians[Condition.quiet.rawValue] ?? 0, 1e-9)
        return Report(rounds: rounds, medianFPS: medians, gatedRatio: (medians[Condition.gated.rawValue] ?? 0) / quiet,
                      openRatio: (medians[Condition.open.rawValue] ?? 0) / quiet)
    }

    private func measure(_ condition: Condition) async throws -> Round {
        let dir = NSTemporaryDirectory() + "loupe-login-flood-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let quietLogger = Logger(label: "loupe.bench.login", factory: { _ in SwiftLogNoOpLogHandler() })
        let config = AgentConfig(cameraId: "bench", manager: nil, tls: TLSFiles(ca: "", cert: "", key: ""), dataDir: dir,
                                 http: .init(address: "127.0.0.1:0", initialAdminPassword: "bench-admin-password"))
        let runtime = try AgentRuntime(config: config, logger: quietLogger)
        try AgentHTTP.ensureAdmin(runtime: runtime, logger: quietLogger)
        var limits = SignInGuard.Limits()
        if condition == .open {
            limits.concurrentHashes = ProcessInfo.processInfo.activeProcessorCount
            limits.waitingHashes = 10_000
        }
        let (ports, portFound) = AsyncStream<Int>.makeStream()
        let app = try AgentHTTP.application(runtime: runtime, training: TrainingJobs(runtime: runtime, logger: quietLogger), logger: quietLogger,
                                            signIns: SignInGuard(limits: limits)) { address in
            portFound.yield(Int(address.split(separator: ":").last ?? "") ?? 0)
            portFound.finish()
        }
        let server = ServiceGroup(services: [app], logger: quietLogger)
        let serving = Task { try await server.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next(), port > 0 else { throw LoginFloodError(message: "the agent's HTTP server did not start") }

        let answers = AnswerCounts()
        var flood: Task<Void, Never>?
        if condition != .quiet {
            flood = Task.detached { [clients = options.clients] in
                await withTaskGroup(of: Void.self) { group in
                    for client in 0..<clients {
                        group.addTask {
                            var attempt = 0
                            while !answers.stopped && !Task.isCancelled {
                                attempt += 1
                                // Another source address for every attempt: 127.0.0.2 … 127.0.250.254.
                                let index = client * 100_000 + attempt
                                let source = "127.0.\(index / 253 % 250).\(2 + index % 253)"
                                let status = await Self.signIn(port: port, from: source)
                                answers.add(status)
                            }
                        }
                    }
                }
            }
        }
        var pipelineOptions = options.pipeline
        pipelineOptions.seconds = options.secondsPerRound
        let started = ContinuousClock.now
        let result = try await PipelineBenchmark(options: pipelineOptions).run()
        let elapsed = (ContinuousClock.now - started).seconds
        answers.stop()
        flood?.cancel()
        await flood?.value
        await server.triggerGracefulShutdown()
        _ = await serving.result
        return Round(condition: condition.rawValue, framesPerSecond: result.framesPerSecond,
                     answersPerSecond: answers.snapshot.mapValues { Double($0) / elapsed })
    }

    /// One wrong-password sign-in over a fresh connection from `source`; the status, or 0 on a transport error.
    static func signIn(port: Int, from source: String) async -> Int {
        let body = #"{"user":"admin","password":"a-wrong-guess-123"}"#
        let request = "POST /api/v1/login HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
        do {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .bind(to: try SocketAddress(ipAddress: source, port: 0))
                .connect(host: "127.0.0.1", port: port) { channel in
                    channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
                }
            return try await channel.executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(string: request))
                var head = ""
                for try await chunk in inbound {
                    head += String(buffer: chunk)
                    if head.contains("\r\n") { break }
                }
                let parts = head.split(separator: " ", maxSplits: 2)
                return parts.count >= 2 ? Int(parts[1]) ?? 0 : 0
            }
        } catch {
            return 0
        }
    }

    /// The flood's answers by status, and its stop switch.
    final class AnswerCounts: Sendable {
        private let counts = Mutex<[String: Int]>([:])
        private let done = Mutex<Bool>(false)
        func add(_ status: Int) { counts.withLock { $0[status == 0 ? "transport error" : "\(status)", default: 0] += 1 } }
        var snapshot: [String: Int] { counts.withLock { $0 } }
        func stop() { done.withLock { $0 = true } }
        var stopped: Bool { done.withLock { $0 } }
    }
}

struct LoginFloodError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}
