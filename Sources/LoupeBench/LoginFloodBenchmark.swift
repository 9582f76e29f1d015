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
/// runs in the same process. The attacker is another process (`attacker`,
/// every thread of it at nice 19 so that it stands in for a machine
/// elsewhere on the plant network: the agent pays for accepting, parsing,
/// checking and answering every attempt, not for making them). Its clients send
/// wrong passwords at `rate` attempts a second, each from another loopback
/// address (127.0.0.2 …), as a botnet would, so address throttling does not
/// stop them and every attempt reaches the password check. Three conditions
/// in alternating rounds: no flood (the peer), the flood against the page
/// as shipped (one scrypt at a time, a bounded queue, the page's threads at
/// nice 10: `PagePriority`), and the flood with the guard opened to every
/// core and a deep queue, everything at full priority (what an unbounded
/// server does).
public struct LoginFloodBenchmark {
    public struct Options: Sendable {
        public var rounds = 3
        public var secondsPerRound = 10.0
        public var clients = 32
        /// Attempts a second the attacker offers, all clients together; 0 sends as fast as answers come.
        public var rate = 200.0
        /// The attacker process's command line (`loupe bench login-flood-attacker`), its threads at nice 19;
        /// nil floods from this process instead (its cost then counts against the pipeline too).
        public var attacker: [String]?
        public var pipeline = PipelineBenchmark.Options()
        public init() {}
    }

    public enum Condition: String, Sendable, CaseIterable {
        case quiet = "no flood"
        case gated = "flood, page as shipped"
        case open = "flood, unbounded at full priority"
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
        return Report(
            rounds: rounds, medianFPS: medians, gatedRatio: (medians[Condition.gated.rawValue] ?? 0) / quiet,
            openRatio: (medians[Condition.open.rawValue] ?? 0) / quiet)
    }

    private func measure(_ condition: Condition) async throws -> Round {
        let dir = NSTemporaryDirectory() + "loupe-login-flood-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let quietLogger = Logger(label: "loupe.bench.login", factory: { _ in SwiftLogNoOpLogHandler() })
        let config = AgentConfig(
            cameraId: "bench", manager: nil, tls: TLSFiles(ca: "", cert: "", key: ""), dataDir: dir,
            http: .init(address: "127.0.0.1:0", initialAdminPassword: "bench-admin-password"))
        let runtime = try await AgentRuntime(config: config, logger: quietLogger)
        try await AgentHTTP.ensureAdmin(runtime: runtime, logger: quietLogger)
        var limits = SignInGuard.Limits()
        if condition == .open {
            limits.concurrentHashes = ProcessInfo.processInfo.activeProcessorCount
            limits.waitingHashes = 10_000
            limits.hashNice = 0
        }
        let (ports, portFound) = AsyncStream<Int>.makeStream()
        let app = try AgentHTTP.service(
            runtime: runtime, training: TrainingJobs(runtime: runtime, logger: quietLogger), logger: quietLogger,
            signIns: SignInGuard(limits: limits), yieldToInspection: condition != .open
        ) { address in
            portFound.yield(Int(address.split(separator: ":").last ?? "") ?? 0)
            portFound.finish()
        }
        let server = ServiceGroup(services: [app], logger: quietLogger)
        let serving = Task { try await server.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next(), port > 0 else { throw LoginFloodError(message: "the agent's HTTP server did not start") }

        var flood: Flood?
        if condition != .quiet {
            flood = try Flood(port: port, options: options)
        }
        var pipelineOptions = options.pipeline
        pipelineOptions.seconds = options.secondsPerRound
        let result = try await PipelineBenchmark(options: pipelineOptions).run()
        let answers = try await flood?.stop() ?? [:]
        await server.triggerGracefulShutdown()
        _ = await serving.result
        return Round(condition: condition.rawValue, framesPerSecond: result.framesPerSecond, answersPerSecond: answers)
    }

    /// A running flood: the attacker process, or tasks in this one.
    struct Flood {
        enum Attacker {
            case process(Process, input: Pipe, output: Pipe)
            case local(Task<[String: Int], Never>, AnswerCounts)
        }
        let started = ContinuousClock.now
        let attacker: Attacker

        init(port: Int, options: Options) throws {
            guard let command = options.attacker else {
                let counts = AnswerCounts()
                let (clients, rate) = (options.clients, options.rate)
                attacker = .local(
                    Task.detached { await LoginFloodBenchmark.attack(port: port, clients: clients, rate: rate, answers: counts) }, counts)
                return
            }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: command[0])
            process.arguments =
                Array(command.dropFirst()) + [
                    "--nice", "19", "--port", String(port), "--clients", String(options.clients), "--rate", String(options.rate),
                ]
            let (input, output) = (Pipe(), Pipe())
            process.standardInput = input
            process.standardOutput = output
            try process.run()
            attacker = .process(process, input: input, output: output)
        }

        /// Stops the flood; its answers a second, by status.
        func stop() async throws -> [String: Double] {
            let counts: [String: Int]
            switch attacker {
            case .local(let task, let answers):
                answers.stop()
                counts = await task.value
            case .process(let process, let input, let output):
                // The attacker stops when its standard input closes, then prints its counts as JSON.
                try input.fileHandleForWriting.close()
                let data = output.fileHandleForReading.readDataToEndOfFile()
                process.waitUntilExit()
                guard process.terminationStatus == 0, let decoded = try? JSONDecoder().decode([String: Int].self, from: data) else {
                    throw LoginFloodError(
                        message:
                            "the attacker process failed (status \(process.terminationStatus)): \(String(decoding: data, as: UTF8.self))")
                }
                counts = decoded
            }
            let elapsed = (ContinuousClock.now - started).seconds
            return counts.mapValues { Double($0) / elapsed }
        }
    }

    /// The attacker: `clients` connections at a time send wrong passwords for `admin`, together at most
    /// `rate` a second (0: as fast as answered), each attempt from another loopback address, until
    /// `answers` is stopped. Returns the answers by status. With `nice` above 0 every thread it uses
    /// (its event loops and its tasks' executor) runs at that nice value: the attacker process then
    /// stands in for a machine elsewhere (`nice -n` alone would not do: libdispatch's workers reset
    /// their priority by QoS, and NIO's threads start from them).
    public static func attack(port: Int, clients: Int, rate: Double, nice: Int32 = 0, answers: AnswerCounts) async -> [String: Int] {
        guard nice > 0 else {
            return await attack(port: port, clients: clients, rate: rate, loops: MultiThreadedEventLoopGroup.singleton, answers: answers)
        }
        let loops = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        for loop in loops.makeIterator() { loop.execute { PagePriority.lowerCurrentThread(to: nice) } }
        let executor = NicedTaskExecutor(threads: System.coreCount, nice: nice, name: "loupe-attacker")
        let counts = await withTaskExecutorPreference(executor) {
            await attack(port: port, clients: clients, rate: rate, loops: loops, answers: answers)
        }
        try? await loops.shutdownGracefully()
        return counts
    }

    static func attack(port: Int, clients: Int, rate: Double, loops: any EventLoopGroup, answers: AnswerCounts) async -> [String: Int] {
        await withTaskGroup(of: Void.self) { group in
            for client in 0..<clients {
                group.addTask {
                    let start = ContinuousClock.now
                    var attempt = 0
                    while !answers.stopped && !Task.isCancelled {
                        attempt += 1
                        if rate > 0 {
                            // Client c's n-th attempt is due at n * clients / rate seconds.
                            let due = start + .seconds(Double(attempt) * Double(clients) / rate)
                            if due > ContinuousClock.now { try? await Task.sleep(until: due, clock: .continuous) }
                            if answers.stopped { break }
                        }
                        // Another source address for every attempt: 127.0.0.2 … 127.0.250.254.
                        let index = client * 100_000 + attempt
                        let source = "127.0.\(index / 253 % 250).\(2 + index % 253)"
                        answers.add(await signIn(port: port, from: source, loops: loops))
                    }
                }
            }
        }
        return answers.snapshot
    }

    /// One wrong-password sign-in over a fresh connection from `source`; the status, or 0 on a transport error.
    static func signIn(port: Int, from source: String, loops: any EventLoopGroup) async -> Int {
        let body = #"{"user":"admin","password":"a-wrong-guess-123"}"#
        let request =
            "POST /api/v1/login HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nContent-Type: application/json\r\nContent-Length: "
            + "\(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
        do {
            let channel = try await ClientBootstrap(group: loops)
                .bind(to: try SocketAddress(ipAddress: source, port: 0))
                .connect(host: "127.0.0.1", port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
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
    public final class AnswerCounts: Sendable {
        private let counts = Mutex<[String: Int]>([:])
        private let done = Mutex<Bool>(false)
        public init() {}
        func add(_ status: Int) { counts.withLock { $0[status == 0 ? "transport error" : "\(status)", default: 0] += 1 } }
        public var snapshot: [String: Int] { counts.withLock { $0 } }
        public func stop() { done.withLock { $0 = true } }
        var stopped: Bool { done.withLock { $0 } }
    }
}

struct LoginFloodError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}
