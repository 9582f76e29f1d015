import Logging
import Synchronization

/// Keeps every log line a component writes, so a test can check what an operator would read.
final class LogRecord: Sendable {
    struct Line: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]

        /// The message and its metadata in one searchable line.
        var text: String { ([message] + metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }).joined(separator: " ") }
    }

    private let lines = Mutex<[Line]>([])

    var all: [Line] { lines.withLock { $0 } }

    func append(_ line: Line) { lines.withLock { $0.append(line) } }

    /// A logger that records here everything at `level` and above.
    func logger(label: String = "test", level: Logger.Level = .info) -> Logger {
        var logger = Logger(label: label) { _ in RecordingLogHandler(record: self) }
        logger.logLevel = level
        return logger
    }

    /// Lines at warning or worse whose text contains every one of `parts`.
    func warnings(containing parts: String...) -> [Line] {
        all.filter { $0.level >= .warning && parts.allSatisfy($0.text.contains) }
    }
}

struct RecordingLogHandler: LogHandler {
    let record: LogRecord
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        record.append(.init(level: event.level, message: "\(event.message)", metadata: merged.mapValues { "\($0)" }))
    }
}
