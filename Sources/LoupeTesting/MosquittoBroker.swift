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
            throw LaunchError("no mosquitto broker at \(Self.binary): install Debian's mosquitto (Deploy/install-deps does) or set MOSQUITTO")
        }
        self.folder = folder
        port = try Self.freeLoopbackPort()
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
            guard process.isRunning else { throw LaunchError("mosquitto exited at once (\(process.terminationStatus)); see \(folder)/mosquitto.log") }
            if Self.accepts(port) { return }
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

    static func accepts(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = loopback(port)
        return withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
    }

    /// A port nothing listens on now (the kernel's pick for port 0).
    public static func freeLoopbackPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = loopback(0)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0 else { throw LaunchError("cannot bind a loopback port: \(String(cString: strerror(errno)))") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private static func loopback(_ port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }
}
