public import Foundation
public import LoupeManager
import LoupeStorage
import Synchronization

/// A real PostgreSQL server (Debian's `postgresql`) as the tests' own
/// cluster: `initdb` into a fresh folder, `pg_ctl` on a loopback port with
/// password (SCRAM) authentication, stopped when the test process ends. As
/// root (CI) its commands run as the `postgres` user, since PostgreSQL
/// refuses to run as root. Each test takes a database of its own. The
/// commands block while they run (initdb takes seconds), so the async entry
/// points run them off the task pool: a test waiting for its cluster must not
/// starve the other tests' tasks.
public final class PostgresServer: @unchecked Sendable {
    public let port: Int
    public let folder: String
    public let user = "loupe"
    /// A file holding the password (mode 0600), as a plant's manager would be given it.
    public let passwordFile: String
    private let password: String
    private let binaries: String
    private var data: String { folder + "/data" }

    /// The server binaries: `LOUPE_POSTGRES_BIN` when set, else the newest of Debian's `/usr/lib/postgresql/N/bin`.
    public static func binaries() throws -> String {
        if let given = ProcessInfo.processInfo.environment["LOUPE_POSTGRES_BIN"] { return given }
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).compactMap(Int.init).sorted()
        guard let newest = versions.last(where: { FileManager.default.isExecutableFile(atPath: "\(root)/\($0)/bin/initdb") }) else {
            throw LaunchError(
                "no PostgreSQL server under \(root): install Debian's postgresql (Deploy/install-deps does) or set LOUPE_POSTGRES_BIN")
        }
        return "\(root)/\(newest)/bin"
    }

    /// One cluster for the whole test process, started on first use and stopped when the process exits.
    public static func shared() async throws -> PostgresServer {
        let starting = sharedServer.withLock { task in
            if let task { return task }
            let started = Task {
                let server = try await PostgresServer.start(folder: NSTemporaryDirectory() + "loupe-pg-\(UUID().uuidString.prefix(8))")
                sharedForExit.withLock { $0 = server }
                atexit { PostgresServer.sharedForExit.withLock { $0 }?.discard() }
                return server
            }
            task = started
            return started
        }
        return try await starting.value
    }

    private static let sharedServer = Mutex<Task<PostgresServer, any Error>?>(nil)
    /// The started server, for the exit handler (which cannot wait for the task).
    private static let sharedForExit = Mutex<PostgresServer?>(nil)

    /// Makes a new cluster in `folder` and starts it, off the task pool.
    public static func start(folder: String) async throws -> PostgresServer {
        try await BlockingIO.run { () throws -> PostgresServer in try PostgresServer(folder: folder) }
    }

    /// Makes a new cluster in `folder` and starts it.
    public init(folder: String) throws {
        binaries = try Self.binaries()
        self.folder = folder
        port = try Loopback.freePort()
        password = UUID().uuidString
        passwordFile = folder + "/client-password"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try Data(password.utf8).write(to: URL(fileURLWithPath: passwordFile))
        chmod(passwordFile, 0o600)
        let serverPassword = folder + "/initdb-password"
        try Data(password.utf8).write(to: URL(fileURLWithPath: serverPassword))
        if getuid() == 0 {
            // The server's own user must own its folder; the client's password file stays root's.
            guard let account = getpwnam("postgres") else {
                throw LaunchError("running as root but there is no postgres user to run the server as")
            }
            chown(folder, account.pointee.pw_uid, account.pointee.pw_gid)
            chown(serverPassword, account.pointee.pw_uid, account.pointee.pw_gid)
        }
        try run(
            "initdb",
            ["-D", data, "-U", user, "--pwfile", serverPassword, "-A", "scram-sha-256", "-E", "UTF8", "--no-sync", "--no-instructions"])
        try? FileManager.default.removeItem(atPath: serverPassword)
        try startBlocking()
    }

    deinit { stop() }

    /// Starts the server again (after `kill` or `stop`) and waits until it accepts connections; WAL recovery after a kill.
    public func start() async throws {
        try await BlockingIO.run { () throws in try self.startBlocking() }
    }

    private func startBlocking() throws {
        // fsync stays on: a killed server must keep what it acknowledged, as a plant's would.
        let options = "-p \(port) -c listen_addresses=127.0.0.1 -k \(folder) -c max_connections=200"
        try run("pg_ctl", ["-D", data, "-l", folder + "/server.log", "-w", "-t", "30", "-o", options, "start"])
    }

    /// Stops it cleanly (`pg_ctl stop -m fast`); nothing when it is not running.
    public func stop() {
        guard isRunning else { return }
        try? run("pg_ctl", ["-D", data, "-m", "fast", "-w", "stop"])
    }

    /// Stops it and deletes its folder (the cluster and its log): for a cluster made for one run.
    public func discard() {
        stop()
        try? FileManager.default.removeItem(atPath: folder)
    }

    /// Kills the postmaster (SIGKILL: a crash of the database host's server); `start()` recovers it from its WAL.
    public func kill() async {
        guard let pid = postmasterPID else { return }
        Foundation.kill(pid, SIGKILL)
        var waited = 0
        while Foundation.kill(pid, 0) == 0, waited < 200 {
            try? await Task.sleep(for: .milliseconds(50))
            waited += 1
        }
        // Its backends end once the postmaster is gone; a start before that would find the old shared memory in use.
        try? await Task.sleep(for: .milliseconds(500))
    }

    public var isRunning: Bool {
        guard let pid = postmasterPID else { return false }
        return Foundation.kill(pid, 0) == 0
    }

    private var postmasterPID: pid_t? {
        guard let text = try? String(contentsOfFile: data + "/postmaster.pid", encoding: .utf8) else { return nil }
        return text.split(separator: "\n").first.flatMap { pid_t($0) }
    }

    /// How long the stores of a test database wait for an answer: a loaded suite start on two cores (dozens of
    /// databases made at once) has kept a plain statement waiting more than the product's 5 s.
    public static let testAnswerSeconds = 30.0

    /// A new, empty database and the settings a manager reaches it with.
    public func createDatabase(_ name: String = "loupe_\(UUID().uuidString.prefix(8).lowercased())") async throws -> PostgresSettings {
        let (port, user, password) = (self.port, self.user, self.password)
        try await BlockingIO.run { () throws in
            try self.run("createdb", ["-h", "127.0.0.1", "-p", "\(port)", "-U", user, name], environment: ["PGPASSWORD": password])
        }
        return PostgresSettings(
            url: "postgres://\(user)@127.0.0.1:\(port)/\(name)", passwordFile: passwordFile, answerSeconds: Self.testAnswerSeconds)
    }

    /// Runs SQL in one of this server's databases with psql, stopping at the first error: for tests that change
    /// what a store holds behind its back, as someone with access to the database could.
    public func execute(_ sql: String, in settings: PostgresSettings) async throws {
        let (port, user, password) = (self.port, self.user, self.password)
        let name = String(settings.url.split(separator: "/").last ?? "")
        try await BlockingIO.run { () throws in
            try self.run(
                "psql", ["-h", "127.0.0.1", "-p", "\(port)", "-U", user, "-d", name, "-v", "ON_ERROR_STOP=1", "-c", sql],
                environment: ["PGPASSWORD": password])
        }
    }

    public var log: String { (try? String(contentsOfFile: folder + "/server.log", encoding: .utf8)) ?? "" }

    /// Runs one of the server's commands (as `postgres` when this process is root) and waits for it. Spawned and
    /// reaped directly: Foundation's `Process` misses the exit of a `runuser` whose grandchild (the server) lives on.
    private func run(_ command: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        let binary = binaries + "/" + command
        // coreutils' env sets the working folder for the child alone (the test process's own stays as it is).
        let argv =
            ["/usr/bin/env", "-C", folder] + (getuid() == 0 ? ["/usr/sbin/runuser", "-u", "postgres", "--"] : []) + [binary] + arguments
        let outputPath = folder + "/\(command).out"
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let variables = ProcessInfo.processInfo.environment.merging(environment) { $1 }.map { "\($0)=\($1)" }
        let cArguments = argv.map { strdup($0) } + [nil]
        let cVariables = variables.map { strdup($0) } + [nil]
        defer { (cArguments + cVariables).forEach { free($0) } }
        var pid = pid_t()
        let spawned = posix_spawn(&pid, argv[0], &actions, nil, cArguments, cVariables)
        guard spawned == 0 else { throw LaunchError("cannot run \(argv[0]): \(String(cString: strerror(spawned)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1, errno == EINTR {}
        let said = ((try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        // Exited normally with 0: the low seven bits (the signal) and the exit code both zero.
        guard status == 0 else {
            throw LaunchError("\(command) \(arguments.joined(separator: " ")) failed (status \(status)): \(said)\n\(log.suffix(2000))")
        }
    }
}
