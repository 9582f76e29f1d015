import Foundation

/// A real Mosquitto broker (Debian's `mosquitto`) on a loopback port, with
/// its own persistence folder, started and stopped as the tests' own
/// process. Killing and starting it again keeps the port and the saved
/// sessions: a broker crash and restart as a plant sees one.
public final class MosquittoBroker: @unchecked Sendable {
    public let port: Int
    public let folder: String
    private var process: Process?

    /// The broker binary: `MOSQUITTO` when set, else Debian's.
    public static var binary: String { ProcessInfo.processInfo.environment["MOSQUITTO"] ?? "/usr/sbin/mosquitto" }

    public init(folder: String) throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            throw LaunchError(
                "no mosquitto broker at \(Self.binary): install Debian's mosquitto (Deploy/install-deps does) or set MOSQUITTO")
        }
        self.folder = folder
        port = try Loopback.freePort()
        try FileManager.default.createDirectory(atPath: folder + "/data", withIntermediateDirectories: true)
        // Saved after every change, so a restart keeps every acknowledged message for a persistent session.
        let conf = """
            listener \(port) 127.0.0.1
            allow_anonymous true
            persistence true
            persistence_location \(folder)/data/
            autosave_interval 1
            autosave_on_changes true
            user root
            log_dest file \(folder)/mosquitto.log
            log_type all

            """
        try conf.write(toFile: folder + "/mosquitto.conf", atomically: true, encoding: .utf8)
        try start()
    }

    deinit { stop() }

    public var isRunning: Bool { process?.isRunning == true }

    /// Starts it and waits until it accepts connections.
    public func start(timeout: Duration = .seconds(10)) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = ["-c", folder + "/mosquitto.conf"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            guard process.isRunning else {
                throw LaunchError("mosquitto exited at once (\(process.terminationStatus)); see \(folder)/mosquitto.log")
            }
            if Loopback.accepts(port) { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw LaunchError("mosquitto did not listen on 127.0.0.1:\(port) within \(timeout)")
    }

    /// Kills it (SIGKILL: a crash or a power cut, no goodbye to any client), and waits.
    /// It saves after every change, so what it acknowledged survives.
    /// (SIGTERM would not do: a child of the test runner inherits its blocked
    /// signals, and mosquitto only takes signals its parent left unblocked.)
    public func stop() {
        guard let process, process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    public var log: String { (try? String(contentsOfFile: folder + "/mosquitto.log", encoding: .utf8)) ?? "" }
}
