import ArgumentParser
import Logging

/// The one Loupe binary: services, fleet commands and tools.
@main
struct Loupe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loupe",
        abstract: "Pixel-level defect inspection for a fleet of smart cameras.",
        version: "0.1.0",
        subcommands: [
            DemoCommand.self, AgentCommand.self, ManagerCommand.self, WorkerCommand.self, StatusCommand.self, CameraCommand.self,
            ModelCommand.self, TrainCommand.self, DatasetCommand.self, TLSCommand.self, EvalCommand.self, BenchCommand.self,
            StoreWriterCommand.self,
        ]
    )
}

/// Options every long-running command shares.
struct LoggingOptions: ParsableArguments {
    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical. Env: LOUPE_LOG_LEVEL.")
    var logLevel: String?

    /// Sends logs to standard error at the chosen level and returns a logger.
    func bootstrap(label: String) throws -> Logger {
        let text = logLevel ?? ProcessEnvironment.value("LOUPE_LOG_LEVEL") ?? "info"
        guard let level = Logger.Level(rawValue: text) else {
            throw ValidationError("unknown log level \"\(text)\"; use trace, debug, info, notice, warning, error or critical")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        return Logger(label: label)
    }
}
