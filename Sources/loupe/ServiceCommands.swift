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
        let service = try await ManagerService.open(config: config, logger: logger) { address in
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
        logger[metadataKey: "camera"] = "\(config.cameraId)"
        let httpLogger = logger
        // The label store, models and live pipeline: opened (and migrated) before anything else runs.
        let agent = try AgentAssembly(config: config, logger: logger) { url in
            httpLogger.info("http listening", metadata: ["address": "\(url.split(separator: "/").last ?? "")", "url": "\(url)"])
        }
        // The services include the training jobs, which end a local job at shutdown.
        try await runUntilSignalled(agent.services, logger: logger)
    }
}

/// Runs services until they end, shutting them down gracefully on SIGTERM or SIGINT.
func runUntilSignalled(_ services: [any Service], logger: Logger) async throws {
    let group = ServiceGroup(
        configuration: .init(
            services: services.map { .init(service: $0) },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        )
    )
    try await group.run()
}
