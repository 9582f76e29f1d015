import Foundation
public import LoupeWire

/// `loupe worker`'s config file (keys in Deploy/README.md).
public struct WorkerConfig: Codable, Sendable, Equatable {
    /// HOST:PORT of each manager the worker may claim jobs from (managers sharing one PostgreSQL database, or
    /// one manager), tried in turn when one cannot be reached or its link drops.
    public var managers: [String]
    /// The worker's certificate (role worker), its key and the fleet CA.
    public var tls: TLSFiles
    /// Threads each job trains with. Default: every core.
    public var threads: Int?
    /// How long a claim waits at the manager for a job to be queued. Default 20 s.
    public var claimWaitSeconds: Double?
    public var heartbeatSeconds: Double?
    public var idleTimeoutSeconds: Double?
    /// Seconds between attempts once every manager failed. Default 2.
    public var reconnectSeconds: Double?
    /// Where a job's training set is spooled while it trains (about the size of its PNGs). Default: the
    /// `CACHE_DIRECTORY` systemd gives the service, else the system's temporary directory.
    public var scratchDirectory: String?

    /// The scratch directory in force.
    public var scratchPath: String {
        scratchDirectory ?? ProcessInfo.processInfo.environment["CACHE_DIRECTORY"].flatMap {
            $0.split(separator: ":").first.map(String.init)
        }
            ?? NSTemporaryDirectory()
    }

    public init(managers: [String], tls: TLSFiles, threads: Int? = nil) {
        (self.managers, self.tls, self.threads) = (managers, tls, threads)
    }

    public static func load(path: String) throws -> WorkerConfig {
        var config = try ConfigFile.load(WorkerConfig.self, path: path)
        config.tls = config.tls.resolved(relativeTo: path)
        config.scratchDirectory = config.scratchDirectory.map { ConfigFile.resolve($0, relativeTo: path) }
        guard !config.managers.isEmpty else {
            throw ConfigError.invalid(path: path, key: "managers", reason: "name at least one manager, HOST:PORT")
        }
        for address in config.managers {
            do { _ = try parseAddress(address) } catch {
                throw ConfigError.invalid(path: path, key: "managers", reason: "expected HOST:PORT, got \"\(address)\"")
            }
        }
        if let threads = config.threads, !(1...256).contains(threads) {
            throw ConfigError.invalid(path: path, key: "threads", reason: "must be 1…256")
        }
        for (key, value) in [
            ("claimWaitSeconds", config.claimWaitSeconds), ("heartbeatSeconds", config.heartbeatSeconds),
            ("idleTimeoutSeconds", config.idleTimeoutSeconds), ("reconnectSeconds", config.reconnectSeconds),
        ] {
            if let value, !(value > 0 && value <= 3600) {
                throw ConfigError.invalid(path: path, key: key, reason: "must be more than 0 and at most 3600")
            }
        }
        return config
    }
}
