public import Foundation
public import Logging
import LoupeStorage
import LoupeWire
import NIOCore
import NIOSSL
import PostgresNIO
import Synchronization

/// Where and how a manager reaches its PostgreSQL database (`storage` in the
/// manager config). The URL names the server, the user and the database and
/// never a password: that comes from `passwordFile` (mode 0600) or the
/// environment variable `LOUPE_DATABASE_PASSWORD`, never from a command line.
public struct PostgresSettings: Codable, Sendable, Equatable {
    public enum TLSMode: String, Codable, Sendable {
        /// No TLS: a database on the same host or a private network segment.
        case disable
        /// TLS required, the server's certificate checked against `caFile` (or the system's roots) and its host name.
        case require
    }

    /// `postgres://USER@HOST:PORT/DATABASE`.
    public var url: String
    public var passwordFile: String?
    public var tls: TLSMode?
    public var caFile: String?
    /// Connections the manager keeps open at most (default 8).
    public var maxConnections: Int?
    /// How long a store call waits for a connection and its answer before it is refused by name (default 5 s).
    public var answerSeconds: Double?

    public init(
        url: String, passwordFile: String? = nil, tls: TLSMode? = nil, caFile: String? = nil, maxConnections: Int? = nil,
        answerSeconds: Double? = nil
    ) {
        (self.url, self.passwordFile, self.tls, self.caFile, self.maxConnections) = (url, passwordFile, tls, caFile, maxConnections)
        self.answerSeconds = answerSeconds
    }

    /// `answerSeconds` as a duration, or the default; refused by name outside (0, 3600].
    public func answerLimit() throws(StorageSetupError) -> Duration {
        guard let seconds = answerSeconds else { return PostgresDatabase.answerWithin }
        guard seconds > 0, seconds <= 3600 else { throw .invalid("storage answerSeconds must be above 0 and at most 3600, not \(seconds)") }
        return .seconds(fraction: seconds)
    }

    /// The environment variable a password may come from instead of a file.
    public static let passwordVariable = "LOUPE_DATABASE_PASSWORD"

    /// The URL's parts, each refusal naming what is wrong.
    public func endpoint() throws(StorageSetupError) -> (host: String, port: Int, user: String, database: String) {
        guard let parts = URLComponents(string: url), ["postgres", "postgresql"].contains(parts.scheme ?? "") else {
            throw .invalid("storage url \"\(url.prefix(80))\" must read postgres://USER@HOST:PORT/DATABASE")
        }
        guard parts.password == nil else {
            throw .invalid("storage url must not carry a password; give passwordFile or set \(Self.passwordVariable)")
        }
        guard let host = parts.host, !host.isEmpty, let user = parts.user, !user.isEmpty else {
            throw .invalid("storage url \"\(url.prefix(80))\" must name a user and a host (postgres://USER@HOST:PORT/DATABASE)")
        }
        let database = String(parts.path.drop { $0 == "/" })
        guard !database.isEmpty, !database.contains("/") else {
            throw .invalid("storage url \"\(url.prefix(80))\" must name one database after the host")
        }
        return (host, parts.port ?? 5432, user, database)
    }

    /// The password, from the file or the environment; nil when neither gives one (trust or peer authentication).
    public func password(environment: [String: String] = ProcessInfo.processInfo.environment) throws(StorageSetupError) -> String? {
        if let passwordFile {
            do {
                let text = try String(contentsOfFile: passwordFile, encoding: .utf8)
                return text.trimmingCharacters(in: .newlines)
            } catch {
                throw .invalid("storage passwordFile \(passwordFile) cannot be read: \(error.localizedDescription)")
            }
        }
        return environment[Self.passwordVariable]
    }
}

/// Why the manager's storage could not be set up.
public enum StorageSetupError: Error, Equatable, CustomStringConvertible {
    case invalid(String)
    case unreachable(String)

    public var description: String {
        switch self {
        case .invalid(let why): "storage: \(why)"
        case .unreachable(let why): "storage: the database cannot be reached: \(why)"
        }
    }
}

/// One PostgreSQL database shared by the manager's stores: a connection
/// pool (postgres-nio's `PostgresClient`, run by a task of its own for as
/// long as this object lives) and numbered migrations per component, applied
/// under an advisory lock so managers starting together migrate once.
public final class PostgresDatabase: Sendable {
    let client: PostgresClient
    let logger: Logger
    public let description: String
    private let runner: Task<Void, Never>

    /// Connects and checks the database answers, within `timeout`.
    public static func open(
        _ settings: PostgresSettings, logger: Logger, timeout: Duration = .seconds(10)
    ) async throws(StorageSetupError) -> PostgresDatabase {
        let (host, port, user, database) = try settings.endpoint()
        let password = try settings.password()
        var tlsConfiguration: TLSConfiguration?
        if settings.tls == .require {
            var configuration = TLSConfiguration.makeClientConfiguration()
            if let caFile = settings.caFile {
                do { configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile)) } catch {
                    throw .invalid("storage caFile \(caFile): \(error)")
                }
            }
            tlsConfiguration = configuration
        }
        let description = "postgres://\(user)@\(host):\(port)/\(database)"
        // One direct connection first: the pool retries a refused connection or a wrong password forever, while
        // the operator starting a manager needs the server's own reason at once.
        let direct: PostgresConnection.Configuration
        do {
            let tls: PostgresConnection.Configuration.TLS =
                try tlsConfiguration.map { .require(try NIOSSLContext(configuration: $0)) } ?? .disable
            var check = PostgresConnection.Configuration(
                host: host, port: port, username: user, password: password, database: database, tls: tls)
            check.options.connectTimeout = .seconds(Int64(max(1, timeout.seconds)))
            direct = check
            let connection = try await PostgresConnection.connect(configuration: check, id: 0, logger: logger)
            _ = try await connection.query("SELECT 1", logger: logger)
            try await connection.close()
        } catch {
            throw .unreachable("\(description): \(Self.describe(error))")
        }
        var configuration = PostgresClient.Configuration(
            host: host, port: port, username: user, password: password, database: database,
            tls: tlsConfiguration.map { .require($0) } ?? .disable)
        configuration.options.maximumConnections = max(1, settings.maxConnections ?? 8)
        configuration.options.connectTimeout = .seconds(Int64(max(1, timeout.seconds)))
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        let opened = PostgresDatabase(
            client: client, direct: direct, logger: logger, description: description,
            answerWithin: try settings.answerLimit())
        await opened.started()
        return opened
    }

    /// How a connection of its own (outside the pool) is made: for the start-up check and for `session`.
    private let direct: PostgresConnection.Configuration

    private init(
        client: PostgresClient, direct: PostgresConnection.Configuration, logger: Logger, description: String, answerWithin: Duration
    ) {
        self.client = client
        self.answerLimit = answerWithin
        self.direct = direct
        self.logger = logger
        self.description = description
        runner = Task { await client.run() }
    }

    /// Gives the pool's task its first turn before the pool is used (postgres-nio warns about a lease taken before
    /// `run()` started, and every manager would log that warning at start).
    private func started() async {
        try? await Task.sleep(for: .milliseconds(20))
    }

    /// What `session` reports as it runs.
    public enum SessionEvent: Sendable, Equatable {
        /// A notification on the channel, or a (re)connection: what was notified while away is lost, so look again.
        case changed
        /// This session holds the lock (true) or has lost it with its connection (false).
        case leading(Bool)
    }

    /// Holds one connection of its own for as long as it runs (until cancelled): LISTENs on `channel`, and holds the
    /// session advisory lock `lock` whenever it can get it. The server releases the lock when the connection ends,
    /// so when the manager holding it dies, or loses the database, another manager's session takes it within
    /// `retry`. The connection is checked every `retry` (a dead network path is noticed, not waited on forever) and
    /// made again after it drops.
    public func session(
        channel: String, lock: Int64, retry: Duration = .seconds(2),
        _ event: @escaping @Sendable (SessionEvent) -> Void
    ) async {
        let (direct, logger, description) = (self.direct, self.logger, self.description)
        var attempt = 1
        while !Task.isCancelled {
            let leading = LockHeld()
            do {
                let connection = try await PostgresConnection.connect(configuration: direct, id: attempt, logger: logger)
                attempt += 1
                // However the session ends (a drop, a cancellation), its connection is closed before it is let go.
                var ended: (any Error)?
                do {
                    try await withTaskCancellationHandler {
                        try await Self.hold(connection, channel: channel, lock: lock, retry: retry, leading: leading, logger: logger, event)
                    } onCancel: {
                        let closing: EventLoopFuture<Void> = connection.close()
                        _ = closing
                    }
                } catch {
                    ended = error
                }
                try? await connection.close()
                if let ended { throw ended }
            } catch {
                if !Task.isCancelled {
                    logger.warning(
                        "database session lost; reconnecting",
                        metadata: ["database": "\(description)", "error": "\(Self.describe(error))"])
                }
            }
            if leading.isHeld { event(.leading(false)) }
            try? await Task.sleep(for: retry)
        }
    }

    /// One connection's session: notifications as they come, and a look at the lock (or, once held, at the
    /// connection) every `retry`, each answered within `retry`; throws when either ends.
    private static func hold(
        _ connection: PostgresConnection, channel: String, lock: Int64, retry: Duration, leading: LockHeld,
        logger: Logger, _ event: @escaping @Sendable (SessionEvent) -> Void
    ) async throws {
        try await connection.listen(on: channel) { notifications in
            event(.changed)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for try await _ in notifications { event(.changed) }
                    throw SessionEnded()
                }
                group.addTask {
                    while !Task.isCancelled {
                        let held = try await answer(within: retry) {
                            // Once held, only the connection is checked (a second try would stack the lock).
                            let look: PostgresQuery = leading.isHeld ? "SELECT true" : "SELECT pg_try_advisory_lock(\(lock))"
                            var held = false
                            for try await value in try await connection.query(look, logger: logger).decode(Bool.self) { held = value }
                            return held
                        }
                        if held, leading.take() { event(.leading(true)) }
                        try await Task.sleep(for: retry)
                    }
                }
                try await group.next()
                group.cancelAll()
            }
        }
    }

    /// Whether a session holds its lock (set once per connection).
    private final class LockHeld: Sendable {
        private let held = Mutex(false)
        var isHeld: Bool { held.withLock { $0 } }
        /// True the first time: the lock was just taken.
        func take() -> Bool {
            held.withLock { held in
                defer { held = true }; return !held
            }
        }
    }

    private struct SessionEnded: Error, CustomStringConvertible {
        var description: String { "the server ended the session" }
    }

    /// `body`'s answer, or `NoAnswer` after `limit`, whether or not `body` heeds its cancellation: it runs as a task
    /// of its own, cancelled when the time is up but not waited for. (A task group would wait for it: a database
    /// call that ignores cancellation, as a pool lease or a query on a half-dead connection after a server
    /// restart can, then held its caller, and a manager's shutdown, past the limit for good.) Cancelling the
    /// caller answers `CancellationError` at once.
    public static func answer<T: Sendable>(
        within limit: Duration, _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let first = FirstAnswer<T>()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                first.await(continuation)
                let work = Task {
                    do { first.give(.success(try await body())) } catch { first.give(.failure(error)) }
                }
                let timer = Task {
                    try? await Task.sleep(for: limit)
                    first.give(.failure(NoAnswer(limit: limit)))
                }
                first.onAnswer {
                    work.cancel(); timer.cancel()
                }
            }
        } onCancel: {
            first.give(.failure(CancellationError()))
        }
    }

    /// The first of several outcomes resumes the waiting continuation; the later ones are dropped.
    private final class FirstAnswer<T: Sendable>: Sendable {
        private struct State {
            var continuation: CheckedContinuation<T, any Error>?
            var early: Result<T, any Error>?
            var answered = false
            var cleanup: (@Sendable () -> Void)?
        }
        private let state = Mutex(State())

        func await(_ continuation: CheckedContinuation<T, any Error>) {
            let early = state.withLock { state -> Result<T, any Error>? in
                if let early = state.early { return early }
                state.continuation = continuation
                return nil
            }
            if let early { continuation.resume(with: early) }
        }

        /// Runs `cleanup` once answered (at once if already).
        func onAnswer(_ cleanup: @escaping @Sendable () -> Void) {
            let now = state.withLock { state -> Bool in
                if state.answered { return true }
                state.cleanup = cleanup
                return false
            }
            if now { cleanup() }
        }

        func give(_ outcome: Result<T, any Error>) {
            let (continuation, cleanup) = state.withLock { state -> (CheckedContinuation<T, any Error>?, (@Sendable () -> Void)?) in
                guard !state.answered else { return (nil, nil) }
                state.answered = true
                if state.continuation == nil { state.early = outcome }
                defer { (state.continuation, state.cleanup) = (nil, nil) }
                return (state.continuation, state.cleanup)
            }
            continuation?.resume(with: outcome)
            cleanup?()
        }
    }

    deinit { runner.cancel() }

    /// Closes every connection; the object is unusable afterwards.
    public func close() { runner.cancel() }

    /// How long a store call waits for the database (a connection, then the answer) before it fails by name: an
    /// upload is then refused UNAVAILABLE and stays in the agent's outbox, instead of hanging while the pool
    /// reconnects. A statement that did reach the server may still commit; its retry is then a duplicate, stored once.
    public static let answerWithin = Duration.seconds(5)
    /// This database's limit: `answerSeconds` in the settings, or `answerWithin`.
    public let answerLimit: Duration

    /// The database did not answer within `answerWithin`.
    struct NoAnswer: Error, CustomStringConvertible {
        let limit: Duration
        var description: String { "no answer within \(limit) (is the database server running and reachable?)" }
    }

    /// Runs `body` against the pool, failing with `NoAnswer` after `limit` (`answerLimit` when nil), even when `body`
    /// does not heed cancellation.
    func run<T: Sendable>(within limit: Duration? = nil, _ body: @escaping @Sendable (PostgresClient) async throws -> T) async throws -> T {
        let client = self.client
        return try await Self.answer(within: limit ?? answerLimit) { try await body(client) }
    }

    /// Applies `migrations` (a name and its SQL statements) of `component` that this database has not had yet, in order, in one
    /// transaction under one advisory lock (all or none). Released migrations are never edited; changes get a new one.
    public func migrate(_ component: String, _ migrations: [(name: String, statements: [String])]) async throws {
        let logger = self.logger
        try await client.withTransaction(logger: logger) { connection in
            // One lock for every manager of this database: whoever comes second waits and then finds all applied.
            try await connection.query("SELECT pg_advisory_xact_lock(\(Self.migrationLock))", logger: logger)
            try await connection.query(
                """
                CREATE TABLE IF NOT EXISTS loupe_migration (
                    component text NOT NULL, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (component, name))
                """, logger: logger)
            var applied = Set<String>()
            for try await name in try await connection.query(
                "SELECT name FROM loupe_migration WHERE component = \(component)", logger: logger
            )
            .decode(String.self) {
                applied.insert(name)
            }
            for migration in migrations where !applied.contains(migration.name) {
                for statement in migration.statements { try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger) }
                try await connection.query(
                    "INSERT INTO loupe_migration (component, name) VALUES (\(component), \(migration.name))", logger: logger)
                logger.info("database migrated", metadata: ["component": "\(component)", "migration": "\(migration.name)"])
            }
        }
    }

    /// The advisory lock key migrations hold ("loupe" in ASCII).
    static let migrationLock: Int64 = 0x6C_6F_75_70_65

    /// An error's full text: postgres-nio's own description hides the server's message on purpose (it may hold
    /// data); the manager's log and the operator need it.
    static func describe(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] {
                let state = error.serverInfo?[.sqlState].map { " (SQLSTATE \($0))" } ?? ""
                return message + state
            }
            return "\(error.code)" + (error.underlying.map { ": \($0)" } ?? "")
        }
        return "\(error)"
    }

    /// True when the server said its disk is full (SQLSTATE 53100).
    static func isDiskFull(_ error: any Error) -> Bool {
        (error as? PSQLError)?.serverInfo?[.sqlState] == "53100"
    }
}
