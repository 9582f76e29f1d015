import ArgumentParser
import Foundation
import Hummingbird
import LoupeWire
import Logging
import LoupeAgent
import LoupeManager
import LoupePKI
import LoupeProto
import LoupeSegmentation
import NIOCore
import ServiceLifecycle
import UnixSignals

/// `loupe manager`: runs the plant's fleet manager.
struct ManagerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "manager",
        abstract: "Run the fleet manager (one per plant).",
        discussion: "Configuration keys are documented in Deploy/README.md. SIGTERM or Ctrl-C shuts down gracefully; SIGHUP reloads the revocation list."
    )

    @Option(help: "Path of the manager's JSON config file.")
    var config: String

    @Option(help: "After binding, write the listening HOST:PORT to this file (for scripts and tests).")
    var readyFile: String?

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let logger = try logging.bootstrap(label: "loupe.manager")
        let config = try ManagerConfig.load(path: self.config)
        let readyFile = self.readyFile
        let service = ManagerService(config: config, logger: logger) { address in
            guard let readyFile, let port = address.port else { return }
            let host = address.ipAddress ?? "127.0.0.1"
            try? "\(host):\(port)\n".write(toFile: readyFile, atomically: true, encoding: .utf8)
        }
        try await runUntilSignalled([service], logger: logger)
    }
}

/// `loupe agent`: runs the per-camera agent.
struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run a camera agent (one per camera).",
        discussion: "Configuration keys are documented in Deploy/README.md. SIGTERM or Ctrl-C shuts down gracefully."
    )

    @Option(help: "Path of the agent's JSON config file.")
    var config: String

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        var logger = try logging.bootstrap(label: "loupe.agent")
        let config = try AgentConfig.load(path: self.config)
        try FleetName.validate(config.cameraId)
        logger[metadataKey: "camera"] = "\(config.cameraId)"
        try FileManager.default.createDirectory(atPath: config.dataDir, withIntermediateDirectories: true)
        // The label store, models and live pipeline: opened (and migrated) before anything else runs.
        let runtime = try AgentRuntime(config: config, logger: logger)
        let store = runtime.store
        let (captures, outbox) = (try store.captureCount(), try store.outboxDepth())
        logger.info("label store open", metadata: [
            "captures": "\(captures)", "outbox": "\(outbox)", "model": "\(runtime.shelf.state.current?.version ?? "none")",
            "precision": "\(runtime.precision.rawValue)", "camera": "\(config.camera?.source.rawValue ?? "none")",
        ])
        let pipeline = runtime.pipeline
        let sender = OutboxSender(store: store, bytesPerSecond: config.manager?.uploadBytesPerSecond, logger: logger)
        let models = ModelReceiver(runtime: runtime, logger: logger)
        let jobs = LateBound<TrainingJobs>()
        let inbound: RequestHandler = { connection, envelope in
            switch envelope.body {
            case .modelOffer(let offer): return try await models.handle(connection, offer)
            case .trainingProgress(let progress):
                jobs.value?.managerProgress(progress)
                return nil
            default: throw WireError.refused(code: .unimplemented, message: "an agent does not serve \(envelope.bodyName)")
            }
        }
        let link = ManagerLink(config: config, logger: logger, outbox: sender, inbound: inbound) {
            let live = pipeline.statistics
            var status = Loupe_V1_AgentStatus()
            status.framesPerSecond = live.framesPerSecond
            status.latencyP50Ms = live.p50["total"] ?? 0
            status.latencyP99Ms = live.p99["total"] ?? 0
            status.passCount = UInt64(live.passCount)
            status.failCount = UInt64(live.failCount)
            status.modelVersion = live.modelVersion
            status.outboxDepth = UInt64((try? store.outboxDepth()) ?? 0)
            status.recipeVersion = live.recipeVersion.description
            status.inspectionType = pipeline.currentInspector.recipe.inspectionType
            return status
        }
        var services: [any Service] = [link, pipeline]
        if config.http != nil {
            try AgentHTTP.ensureAdmin(runtime: runtime, logger: logger)
            let httpLogger = logger
            var connection: (@Sendable () -> WireConnection?)?
            if config.manager != nil { connection = { @Sendable in link.connection } }
            let training = TrainingJobs(runtime: runtime, logger: logger, manager: connection)
            jobs.set(training)
            services.append(try AgentHTTP.application(runtime: runtime, training: training, logger: logger) { url in
                httpLogger.info("http listening", metadata: ["address": "\(url.split(separator: "/").last ?? "")", "url": "\(url)"])
            })
        }
        do {
            try await runUntilSignalled(services, logger: logger)
        } catch {
            await jobs.value?.shutdown()
            throw error
        }
        await jobs.value?.shutdown()
    }
}

/// Runs services until they end, shutting them down gracefully on SIGTERM or SIGINT.
private func runUntilSignalled(_ services: [any Service], logger: Logger) async throws {
    let group = ServiceGroup(
        configuration: .init(
            services: services.map { .init(service: $0) },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        )
    )
    try await group.run()
}
