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

/// `loupe manager`: runs the plant's fleet manager (`loupe manager --config …`), or moves its stores.
struct ManagerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "manager",
        abstract: "Run the fleet manager (one per plant), or move its stores to PostgreSQL.",
        subcommands: [Run.self, Migrate.self],
        defaultSubcommand: Run.self
    )

    /// `loupe manager [run] --config …`.
    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the fleet manager (the default: `loupe manager --config FILE`).",
            discussion:
                "Configuration keys are documented in Deploy/README.md. SIGTERM or Ctrl-C shuts down gracefully; SIGHUP reloads the "
                + "revocation list."
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

    /// `loupe manager migrate --config … --to postgres://…`.
    struct Migrate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Copy a stopped manager's fleet and training data from its SQLite files into a PostgreSQL database, and check the copy.",
            discussion: """
                Every camera record and every labelled ROI (its image and mask PNGs included) is copied; then the counts, the content \
                hashes and the bytes behind each hash are checked. Rows already in the database are kept, so an interrupted run is run \
                again. The model registry stays in dataDir. Afterwards add the printed storage key to the manager's config and start it. \
                The password comes from --password-file or LOUPE_DATABASE_PASSWORD, never from the URL (docs/scale-out.md).
                """
        )

        @Option(help: "Path of the manager's JSON config file (its dataDir holds the SQLite files).")
        var config: String

        @Option(help: "The database: postgres://USER@HOST:PORT/DATABASE.")
        var to: String

        @Option(help: "A file holding the database password.")
        var passwordFile: String?

        @Flag(help: "Require TLS to the database.")
        var tls = false

        @Option(help: "The CA that signed the database server's certificate (with --tls).")
        var caFile: String?

        @OptionGroup var logging: LoggingOptions

        func run() async throws {
            let logger = try logging.bootstrap(label: "loupe.manager.migrate")
            let config = try ManagerConfig.load(path: self.config)
            let settings = PostgresSettings(url: to, passwordFile: passwordFile, tls: tls ? .require : nil, caFile: caFile)
            _ = try settings.endpoint()
            let progress = ProgressBar()
            let report = try await StorageMigration.toPostgres(config, settings, logger: logger) { progress.update($0) }
            progress.finish()
            print(
                "migrated to \(to): \(report.cameras) cameras, \(report.rois) ROIs (\(report.roisCopied) copied, "
                    + "\(report.roisAlreadyThere) already there)"
            )
            print("checked: \(report.roisChecked) ROIs, counts and content hashes equal, every image and mask matches its hash")
            print(
                "model registry: \(report.modelVersions) versions (\(report.modelVersionsCopied) copied), "
                    + "\(report.cameraModels) cameras' assignments, "
                    + "\(report.rollouts) rollouts; every model file matches its SHA-256, the signing counter carried over")
            var storage: [String: Any] = ["url": to]
            if let passwordFile { storage["passwordFile"] = passwordFile }
            if tls { storage["tls"] = "require" }
            if let caFile { storage["caFile"] = caFile }
            let key = try JSONSerialization.data(
                withJSONObject: ["storage": ["postgres": storage]], options: [.sortedKeys, .withoutEscapingSlashes])
            print("now add to \(self.config) and start the manager: \(String(decoding: key, as: UTF8.self))")
        }
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

    @Option(help: "Once the page listens, write its URL to this file (for scripts and benchmarks).")
    var readyFile: String?

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        var logger = try logging.bootstrap(label: "loupe.agent")
        let config = try AgentConfig.load(path: self.config)
        logger[metadataKey: "camera"] = "\(config.cameraId)"
        let (httpLogger, readyFile) = (logger, self.readyFile)
        // The label store, models and live pipeline: opened (and migrated) before anything else runs.
        let agent = try await AgentAssembly(config: config, logger: logger) { url in
            httpLogger.info("http listening", metadata: ["address": "\(url.split(separator: "/").last ?? "")", "url": "\(url)"])
            if let readyFile { try? "\(url)\n".write(toFile: readyFile, atomically: true, encoding: .utf8) }
        }
        // The services include the training jobs, which end a local job at shutdown.
        try await runUntilSignalled(agent.services, logger: logger)
    }
}

/// `loupe worker`: trains queued jobs for the plant's managers on this machine.
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run a training worker: claim queued training jobs from the managers, train them here, send the models back.",
        discussion: """
            Needs a worker certificate (loupe tls cert create --worker NAME). Configuration keys are documented in Deploy/README.md. \
            SIGTERM or Ctrl-C gives the job in hand back to the queue and exits.
            """
    )

    @Option(help: "Path of the worker's JSON config file.")
    var config: String

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let logger = try logging.bootstrap(label: "loupe.worker")
        let config = try WorkerConfig.load(path: self.config)
        try await runUntilSignalled([TrainingWorker(config: config, logger: logger)], logger: logger)
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
