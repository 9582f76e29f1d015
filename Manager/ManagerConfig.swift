public import LoupeWire

/// The manager's configuration file (JSON). Every key is documented in
/// Deploy/README.md; Deploy/manager.json is an example.
public struct ManagerConfig: Codable, Sendable, Equatable {
    /// Name of this manager (plant or site), shown to agents and operators.
    public var managerId: String
    /// HOST:PORT to listen on for agents and operators.
    public var listen: String
    /// Fleet CA, the manager's own certificate and key.
    public var tls: TLSFiles
    /// JSON revocation list written by `loupe tls revoke`; reloaded on SIGHUP
    /// and when the file changes. Optional.
    public var revocationList: String?
    /// Seconds between checks of the revocation list file for changes; 0
    /// turns polling off (SIGHUP still reloads). Default 1.
    public var revocationPollSeconds: Double?
    /// Folder for the manager's state.
    public var dataDir: String
    /// Largest frame accepted, bytes. Default 16 MiB.
    public var maxFrameBytes: Int?
    /// Seconds between heartbeats on an otherwise quiet connection. Default 5.
    public var heartbeatSeconds: Double?
    /// Seconds of silence after which a connection is closed. Default 15.
    public var idleTimeoutSeconds: Double?
    /// The manager's Ed25519 model-signing key (64 hex digits). Default
    /// DATADIR/model-signing.key, made at first start; its public half is
    /// written beside it as model-signing.pub for the agents' `modelKeys`.
    public var signingKey: String?
    /// Also write the model-signing public key here (a folder the agents may
    /// read, apart from the data folder that holds the private key). Optional.
    public var publishPublicKey: String?
    /// HOST:PORT for Prometheus metrics (GET /metrics), on its own port. Default: not served.
    public var metricsAddress: String?
    /// Training jobs this manager runs itself at once. Default 1; 0 leaves training to `loupe worker`s.
    public var trainingConcurrency: Int?
    /// Threads per training job. Default: every core.
    public var trainingThreads: Int?
    /// How long a training job's holder (this manager or a worker) may go without reporting before the job goes
    /// back to the queue. Default 30 s.
    public var trainingLeaseSeconds: Double?
    /// Inspection types each camera may upload into and train (camera id →
    /// types). A camera not named here keeps to the first type it sends.
    public var cameraInspectionTypes: [String: [String]]?
    /// Training jobs one camera may have queued or running. Default 2.
    public var cameraJobQuota: Int?
    /// The longest training a camera may ask for, seconds. Default 3600.
    public var cameraMaxTrainingSeconds: Double?
    /// Connections open at once, in all. Default 10000.
    public var maxConnections: Int?
    /// Connections open at once under one certificate. Default 4.
    public var maxConnectionsPerCertificate: Int?
    /// Where the camera fleet, the training data and the model registry live:
    /// absent, the SQLite files in `dataDir` (the default);
    /// `{"postgres": {"url": …}}`, a PostgreSQL database that several managers
    /// may share (docs/scale-out.md). The signing key stays a file either way.
    public var storage: StorageConfig?
    /// Seconds between looks at the registry when nothing woke the manager (it
    /// wakes on every change it makes, on a camera's connect and install report,
    /// and, on PostgreSQL, on every other manager's change): canary windows are
    /// timed by it. Default 1.
    public var registryPollSeconds: Double?

    /// The `storage` key.
    public struct StorageConfig: Codable, Sendable, Equatable {
        public var postgres: PostgresSettings?
        public init(postgres: PostgresSettings?) { self.postgres = postgres }
    }

    /// Where the signing key is.
    public var signingKeyPath: String { signingKey ?? dataDir + "/model-signing.key" }
    /// Where the training sets of the jobs this manager trains are spooled (unlinked files, gone when the job is).
    public var trainingScratchDirectory: String { dataDir + "/training-scratch" }

    public init(
        managerId: String, listen: String, tls: TLSFiles, revocationList: String?, dataDir: String,
        maxFrameBytes: Int? = nil, heartbeatSeconds: Double? = nil, idleTimeoutSeconds: Double? = nil
    ) {
        self.managerId = managerId
        self.listen = listen
        self.tls = tls
        self.revocationList = revocationList
        self.dataDir = dataDir
        self.maxFrameBytes = maxFrameBytes
        self.heartbeatSeconds = heartbeatSeconds
        self.idleTimeoutSeconds = idleTimeoutSeconds
    }

    /// Loads and checks a config file; relative paths are taken from its folder.
    public static func load(path: String) throws -> ManagerConfig {
        var config = try ConfigFile.load(ManagerConfig.self, path: path)
        config.tls = config.tls.resolved(relativeTo: path)
        config.revocationList = config.revocationList.map { ConfigFile.resolve($0, relativeTo: path) }
        config.dataDir = ConfigFile.resolve(config.dataDir, relativeTo: path)
        config.signingKey = config.signingKey.map { ConfigFile.resolve($0, relativeTo: path) }
        config.publishPublicKey = config.publishPublicKey.map { ConfigFile.resolve($0, relativeTo: path) }
        if var postgres = config.storage?.postgres {
            postgres.passwordFile = postgres.passwordFile.map { ConfigFile.resolve($0, relativeTo: path) }
            postgres.caFile = postgres.caFile.map { ConfigFile.resolve($0, relativeTo: path) }
            do { _ = try postgres.endpoint() } catch {
                throw ConfigError.invalid(path: path, key: "storage.postgres.url", reason: "\(error)")
            }
            if let connections = postgres.maxConnections, !(1...1000).contains(connections) {
                throw ConfigError.invalid(path: path, key: "storage.postgres.maxConnections", reason: "must be 1…1000")
            }
            do { _ = try postgres.answerLimit() } catch {
                throw ConfigError.invalid(path: path, key: "storage.postgres.answerSeconds", reason: "\(error)")
            }
            config.storage?.postgres = postgres
        }
        do { _ = try parseAddress(config.listen) } catch {
            throw ConfigError.invalid(path: path, key: "listen", reason: "expected HOST:PORT, got \"\(config.listen)\"")
        }
        if let bytes = config.maxFrameBytes, !(Int(WireProtocol.minimumMaxFrameBytes)...(1 << 30)).contains(bytes) {
            throw ConfigError.invalid(
                path: path, key: "maxFrameBytes",
                reason: "must be between \(WireProtocol.minimumMaxFrameBytes) (the protocol's minimum) and 1073741824")
        }
        if let metrics = config.metricsAddress {
            do { _ = try parseAddress(metrics) } catch {
                throw ConfigError.invalid(path: path, key: "metricsAddress", reason: "expected HOST:PORT, got \"\(metrics)\"")
            }
        }
        for (key, value) in [
            ("cameraJobQuota", config.cameraJobQuota), ("maxConnectionsPerCertificate", config.maxConnectionsPerCertificate),
        ] {
            if let value, !(1...1000).contains(value) { throw ConfigError.invalid(path: path, key: key, reason: "must be 1…1000") }
        }
        if let value = config.maxConnections, !(1...1_000_000).contains(value) {
            throw ConfigError.invalid(path: path, key: "maxConnections", reason: "must be 1…1000000")
        }
        if let value = config.cameraMaxTrainingSeconds, !(value > 0 && value <= 7 * 86_400) {
            throw ConfigError.invalid(path: path, key: "cameraMaxTrainingSeconds", reason: "must be more than 0 and at most a week")
        }
        if let value = config.trainingConcurrency, !(0...256).contains(value) {
            throw ConfigError.invalid(path: path, key: "trainingConcurrency", reason: "must be 0…256 (0: only workers train)")
        }
        if let value = config.trainingThreads, !(1...256).contains(value) {
            throw ConfigError.invalid(path: path, key: "trainingThreads", reason: "must be 1…256")
        }
        for (key, value) in [
            ("heartbeatSeconds", config.heartbeatSeconds), ("idleTimeoutSeconds", config.idleTimeoutSeconds),
            ("registryPollSeconds", config.registryPollSeconds), ("trainingLeaseSeconds", config.trainingLeaseSeconds),
        ] {
            if let value, !(value > 0 && value <= 3600) {
                throw ConfigError.invalid(path: path, key: key, reason: "must be more than 0 and at most 3600")
            }
        }
        return config
    }

    /// What camera certificates may ask of the manager.
    public var cameraLimits: CameraPermissions.Limits {
        var limits = CameraPermissions.Limits()
        if let quota = cameraJobQuota { limits.queuedJobs = quota }
        if let seconds = cameraMaxTrainingSeconds { limits.maximumTrainingSeconds = seconds }
        return limits
    }

    /// Connection timers and limits derived from the config.
    public var connectionSettings: ConnectionSettings {
        ConnectionSettings(heartbeatSeconds: heartbeatSeconds, idleTimeoutSeconds: idleTimeoutSeconds, maxFrameBytes: maxFrameBytes)
    }
}
