import Foundation
import Logging
public import LoupeManager
import LoupePKI
import LoupeProto
import LoupeWire
import Synchronization
import LoupeTesting

/// `loupe bench load`: a real `loupe manager` process and many simulated
/// agents (light clients in this process, each with its own agent
/// certificate and TLS connection, speaking the real protocol). Each agent
/// sends a status report every second and uploads small labelled ROIs at a
/// steady rate for the whole run.
///
/// Measured on the manager's process (from /proc): resident memory before
/// the agents connect, with all connected and idle (memory per connection),
/// and at the end; CPU over the loaded phase. Checked: every upload got its
/// acknowledgement (none dropped, none refused), every acknowledged ROI is in
/// the manager's store exactly once (read after it stops), and no agent was
/// starved (each one's latest report reached the manager, its slowest
/// acknowledgement is reported).
public struct LoadBenchmark: Sendable {
    public struct Options: Sendable {
        public var agents = 500
        public var seconds = 30.0
        /// Seconds between one agent's uploads.
        public var uploadInterval = 5.0
        public var roiSide = 64
        /// The `loupe` executable that runs the manager.
        public var executable = ""
        /// The manager's stores in this PostgreSQL database (an empty one); nil: SQLite in its data folder.
        public var postgres: PostgresSettings?
        /// Manager processes sharing `postgres` (1 on SQLite); agent i connects to manager i mod `managers`.
        public var managers = 1
        public init() {}
    }

    public struct Result: Sendable {
        public var agents: Int
        /// Manager processes; memory and CPU are their sums.
        public var managers: Int
        public var connectSeconds: Double
        public var baselineKilobytes: Int
        public var connectedKilobytes: Int
        public var endKilobytes: Int
        public var managerCPUPercent: Double
        /// CPU of the PostgreSQL server's processes over the loaded phase (0 on SQLite).
        public var databaseCPUPercent: Double
        public var loadSeconds: Double
        public var uploadsSent: Int
        public var uploadsAcknowledged: Int
        public var uploadErrors: [String]
        public var statusReportsSent: Int
        public var storedROIs: Int
        public var agentsCurrent: Int
        public var agentsOnline: Int
        public var ackMillisecondsP50: Double
        public var ackMillisecondsP99: Double
        public var slowestAgentAckMilliseconds: Double
        public var fewestUploadsPerAgent: Int
        public var mostUploadsPerAgent: Int
        public var kilobytesPerConnection: Double { Double(connectedKilobytes - baselineKilobytes) / Double(max(1, agents)) }
        public var roisPerSecond: Double { Double(uploadsAcknowledged) / loadSeconds }
        public var lost: Int { uploadsAcknowledged - storedROIs }
        public var passed: Bool {
            uploadErrors.isEmpty && uploadsAcknowledged == uploadsSent && storedROIs == uploadsAcknowledged && agentsCurrent == agents
                && agentsOnline == agents
        }
    }

    public let options: Options
    private let progress: @Sendable (String) -> Void

    public init(options: Options, progress: @escaping @Sendable (String) -> Void) {
        self.options = options
        self.progress = progress
    }

    /// Resident memory (kB) and CPU time (s) of a process, from /proc.
    static func sample(_ pid: Int32) -> (kilobytes: Int, cpuSeconds: Double) {
        var kilobytes = 0
        if let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
        {
            kilobytes = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? 0
        }
        var cpu = 0.0
        if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let end = stat.lastIndex(of: ")") {
            // Fields after the command name: state is field 3; utime and stime are 14 and 15.
            let fields = stat[stat.index(after: end)...].split(separator: " ")
            if fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) {
                cpu = (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
            }
        }
        return (kilobytes, cpu)
    }

    /// CPU time (s) of every PostgreSQL server process on this machine (the postmaster and its backends, which
    /// come and go with connections: the sum is taken over those alive at each sample).
    static func databaseCPUSeconds() -> Double {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).reduce(0.0) { total, pid in
            guard let command = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8),
                command.trimmingCharacters(in: .whitespacesAndNewlines) == "postgres"
            else { return total }
            return total + sample(pid).cpuSeconds
        }
    }

    struct AgentTally: Sendable {
        var sent = 0
        var acknowledged = 0
        var statusSent = 0
        var ackTimes: [Double] = []
        var errors: [String] = []
    }

    public func run() async throws -> Result {
        let folder = NSTemporaryDirectory() + "loupe-bench-load-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        progress("making \(options.agents) agent certificates")
        let pki = try LocalFleetPKI(folder: folder, organization: "Bench")
        let agents = try SimulatedAgents(count: options.agents, prefix: "load-cam", pki: pki)
        let ids = agents.ids
        let managerTLS = try pki.manager()
        let operatorTLS = try pki.member(.operator, "bench-operator")

        // The managers: processes of their own, so their CPU and memory are theirs.
        let managerCount = options.postgres == nil ? 1 : max(1, options.managers)
        var managers: [(process: ServiceProcess, dataDir: String)] = []
        defer { for manager in managers where manager.process.process.isRunning { kill(manager.process.pid, SIGKILL) } }
        for number in 1...managerCount {
            managers.append(try await startManager(number, of: managerCount, folder: folder, tls: managerTLS))
        }
        let pids = managers.map(\.process.pid)
        func sample() -> (kilobytes: Int, cpuSeconds: Double) {
            pids.map(Self.sample).reduce((0, 0)) { ($0.0 + $1.kilobytes, $0.1 + $1.cpuSeconds) }
        }
        try await Task.sleep(for: .seconds(1))
        let baseline = sample()

        // Small ROIs, made once; each upload differs in its seed so every one is stored.
        let side = options.roiSide
        let tallies = Locked([AgentTally](repeating: AgentTally(), count: options.agents))
        let connected = Locked(0)
        let phase = Locked(0)  // 0 connecting, 1 loaded, 2 stopping
        progress("connecting \(options.agents) agents")
        let connectStart = ContinuousClock.now
        let uploadInterval = options.uploadInterval
        let tasks = agents.start(
            ports: managers.map(\.process.port), inspectionType: "load",
            failed: { index, error in tallies.withLock { $0[index].errors.append("\(ids[index]): \(error)") } }
        ) { index, connection, announced in
            var status = announced
            connected.withLock { $0 += 1 }
            while phase.withLock({ $0 }) == 0 { try await Task.sleep(for: .milliseconds(50)) }
            // Spread the agents over the second and over the upload interval.
            let offset = Double(index % 1000) / 1000
            try await Task.sleep(for: .seconds(offset))
            var nextUpload = ContinuousClock.now + .seconds(offset * uploadInterval)
            var report: UInt64 = 0
            var upload = 0
            while phase.withLock({ $0 }) == 1 && !connection.isClosed {
                report += 1
                status.uptimeSeconds = report
                try await connection.send(event: .agentStatus(status))
                tallies.withLock { $0[index].statusSent += 1 }
                if ContinuousClock.now >= nextUpload {
                    nextUpload = nextUpload + .seconds(uploadInterval)
                    upload += 1
                    let roi = try FleetBenchmark.upload(side: side, seed: UInt64(index) * 1_000_000 + UInt64(upload))
                    tallies.withLock { $0[index].sent += 1 }
                    let sent = ContinuousClock.now
                    let reply = try await connection.request(.roiUpload(roi))
                    let milliseconds = (ContinuousClock.now - sent).seconds * 1000
                    tallies.withLock { tally in
                        if case .roiAck(let ack) = reply.body, ack.status == .stored {
                            tally[index].acknowledged += 1
                            tally[index].ackTimes.append(milliseconds)
                        } else {
                            tally[index].errors.append("\(ids[index]): \(reply.bodyName)")
                        }
                    }
                }
                try await Task.sleep(for: .seconds(1))
            }
            // Hold the connection until every agent has finished, so the final check sees them all online.
            while phase.withLock({ $0 }) < 3 && !connection.isClosed { try await Task.sleep(for: .milliseconds(100)) }
        }
        while connected.withLock({ $0 }) < options.agents {
            guard ContinuousClock.now - connectStart < .seconds(120) else { throw WireError.requestTimedOut(seconds: 120) }
            if tallies.withLock({ $0.contains { !$0.errors.isEmpty } }) { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        let connectSeconds = (ContinuousClock.now - connectStart).seconds
        try await Task.sleep(for: .seconds(2))
        let connectedSample = sample()

        progress(
            "\(options.agents) agents: a report a second and an ROI every \(Int(options.uploadInterval)) s each, for "
                + "\(Int(options.seconds)) s"
        )
        let loadStart = ContinuousClock.now
        let cpuStart = sample().cpuSeconds
        let databaseCPUStart = options.postgres == nil ? 0 : Self.databaseCPUSeconds()
        phase.withLock { $0 = 1 }
        try await Task.sleep(for: .seconds(options.seconds))
        phase.withLock { $0 = 2 }
        // Let the uploads in flight finish (each agent ends its loop after its current step).
        let drainStart = ContinuousClock.now
        while tallies.withLock({ $0.reduce(0) { $0 + $1.sent - $1.acknowledged - $1.errors.count } }) > 0,
            ContinuousClock.now - drainStart < .seconds(60)
        {
            try await Task.sleep(for: .milliseconds(50))
        }
        let loadSeconds = (ContinuousClock.now - loadStart).seconds
        let cpuSeconds = sample().cpuSeconds - cpuStart
        let databaseCPUSeconds = options.postgres == nil ? 0 : Self.databaseCPUSeconds() - databaseCPUStart
        try await Task.sleep(for: .seconds(2))
        let end = sample()

        // Every agent's latest report, as the manager it is connected to holds it.
        let finalTallies = tallies.withLock { $0 }
        var current = 0, online = 0
        for (number, manager) in managers.enumerated() {
            let operatorClient = WireClientConfiguration(host: "localhost", port: manager.process.port, tls: operatorTLS, capabilities: [])
            let fleet = try await WireClient.withConnection(operatorClient, handler: WireClient.refuseAll) { connection, _ in
                let reply = try await connection.request(.fleetStatusQuery(Loupe_V1_FleetStatusQuery()))
                guard case .fleetStatusReply(let fleet) = reply.body else {
                    throw WireError.unexpectedReply(expected: "fleet_status_reply", received: reply.bodyName)
                }
                return fleet
            }
            let mine = ids.indices.filter { $0 % managerCount == number }
            let sentReports = Dictionary(uniqueKeysWithValues: mine.map { (ids[$0], finalTallies[$0].statusSent) })
            current +=
                fleet.cameras.filter { camera in
                    sentReports[camera.cameraID].map { camera.status.uptimeSeconds == UInt64($0) } ?? false
                }.count
            online += fleet.cameras.filter { $0.online && sentReports[$0.cameraID] != nil }.count
        }
        phase.withLock { $0 = 3 }
        for task in tasks { await task.value }

        progress("stopping the manager\(managerCount > 1 ? "s" : "") and counting what was stored")
        for manager in managers { kill(manager.process.pid, SIGTERM) }
        for manager in managers { await manager.process.stop() }
        let stored: Int
        if let postgres = options.postgres {
            let database = try await PostgresDatabase.open(postgres, logger: Logger(label: "bench-load"))
            defer { database.close() }
            stored = try await PostgresTrainingDataStore(database: database).count()
        } else {
            stored = try await TrainingDataStore(path: managers[0].dataDir + "/training-data.sqlite").count()
        }

        let times = finalTallies.flatMap(\.ackTimes)
        return Result(
            agents: options.agents, managers: managerCount, connectSeconds: connectSeconds,
            baselineKilobytes: baseline.kilobytes, connectedKilobytes: connectedSample.kilobytes, endKilobytes: end.kilobytes,
            managerCPUPercent: cpuSeconds / loadSeconds * 100, databaseCPUPercent: databaseCPUSeconds / loadSeconds * 100,
            loadSeconds: loadSeconds,
            uploadsSent: finalTallies.reduce(0) { $0 + $1.sent }, uploadsAcknowledged: finalTallies.reduce(0) { $0 + $1.acknowledged },
            uploadErrors: finalTallies.flatMap(\.errors), statusReportsSent: finalTallies.reduce(0) { $0 + $1.statusSent },
            storedROIs: stored, agentsCurrent: current, agentsOnline: online,
            ackMillisecondsP50: percentile(times, 0.5), ackMillisecondsP99: percentile(times, 0.99),
            slowestAgentAckMilliseconds: times.max() ?? 0,
            fewestUploadsPerAgent: finalTallies.map(\.acknowledged).min() ?? 0,
            mostUploadsPerAgent: finalTallies.map(\.acknowledged).max() ?? 0)
    }

    /// Starts manager `number` of `count` (one signing key for all, as a plant's managers share) and waits until it listens.
    private func startManager(
        _ number: Int, of count: Int, folder: String,
        tls: TLSFiles
    ) async throws -> (process: ServiceProcess, dataDir: String) {
        let dataDir = folder + "/manager-\(number)"
        var config: [String: Any] = [
            "managerId": count == 1 ? "load-bench" : "load-bench-\(number)", "listen": "127.0.0.1:0", "dataDir": dataDir,
            "trainingThreads": 1,
            "tls": ["ca": tls.ca, "cert": tls.cert, "key": tls.key], "signingKey": folder + "/model-signing.key",
            "heartbeatSeconds": 5, "idleTimeoutSeconds": 15,
        ]
        if let postgres = options.postgres {
            config["storage"] = ["postgres": ["url": postgres.url, "passwordFile": postgres.passwordFile as Any].compactMapValues { $0 }]
        }
        return (
            try await ServiceProcess.manager(executable: options.executable, folder: folder, name: "manager-\(number)", config: config),
            dataDir
        )
    }
}
