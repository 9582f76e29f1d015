import LoupeWire

/// The agent's configuration file (JSON). Every key is documented in
/// Deploy/README.md; Deploy/agent.json is an example.
public struct AgentConfig: Codable, Sendable, Equatable {
    /// How the agent reaches its manager.
    public struct ManagerLink: Codable, Sendable, Equatable {
        /// HOST:PORT of the manager. HOST must be a name or address in the
        /// manager certificate's --host list.
        public var address: String
        /// Seconds between heartbeats on a quiet connection. Default 5.
        public var heartbeatSeconds: Double?
        /// Seconds of silence before the connection is dropped. Default 15.
        public var idleTimeoutSeconds: Double?
        /// Seconds between status reports. Default 5.
        public var statusIntervalSeconds: Double?
        /// First reconnect delay in seconds; doubles per failure. Default 0.5.
        public var reconnectInitialSeconds: Double?
        /// Longest reconnect delay in seconds. Default 30.
        public var reconnectMaxSeconds: Double?

        public init(address: String, heartbeatSeconds: Double? = nil, idleTimeoutSeconds: Double? = nil,
                    statusIntervalSeconds: Double? = nil, reconnectInitialSeconds: Double? = nil, reconnectMaxSeconds: Double? = nil) {
            self.address = address
            self.heartbeatSeconds = heartbeatSeconds
            self.idleTimeoutSeconds = idleTimeoutSeconds
            self.statusIntervalSeconds = statusIntervalSeconds
            self.reconnectInitialSeconds = reconnectInitialSeconds
            self.reconnectMaxSeconds = reconnectMaxSeconds
        }
    }

    /// The Label & Train API (HTTP).
    public struct HTTPSettings: Codable, Sendable, Equatable {
        /// HOST:PORT to listen on; port 0 picks a free port (logged at start).
        /// Keep it on 127.0.0.1 until logins exist.
        public var address: String

        public init(address: String) { self.address = address }
    }

    /// The camera id; must equal the common name of the agent certificate.
    public var cameraId: String
    /// The manager to sync with; absent for a standalone camera.
    public var manager: ManagerLink?
    /// Fleet CA, this agent's certificate and key.
    public var tls: TLSFiles
    /// Folder for the agent's state.
    public var dataDir: String
    /// Where to serve the HTTP API; absent: not served.
    public var http: HTTPSettings?

    public init(cameraId: String, manager: ManagerLink?, tls: TLSFiles, dataDir: String, http: HTTPSettings? = nil) {
        self.cameraId = cameraId
        self.manager = manager
        self.tls = tls
        self.dataDir = dataDir
        self.http = http
    }

    /// Loads and checks a config file; relative paths are taken from its folder.
    public static func load(path: String) throws -> AgentConfig {
        var config = try ConfigFile.load(AgentConfig.self, path: path)
        config.tls = config.tls.resolved(relativeTo: path)
        config.dataDir = ConfigFile.resolve(config.dataDir, relativeTo: path)
        if let http = config.http {
            do { _ = try parseAddress(http.address) } catch {
                throw ConfigError.invalid(path: path, key: "http.address", reason: "expected HOST:PORT, got \"\(http.address)\"")
            }
        }
        if let link = config.manager {
            do { _ = try parseAddress(link.address) } catch {
                throw ConfigError.invalid(path: path, key: "manager.address", reason: "expected HOST:PORT, got \"\(link.address)\"")
            }
            let timers = [
                ("manager.heartbeatSeconds", link.heartbeatSeconds), ("manager.idleTimeoutSeconds", link.idleTimeoutSeconds),
                ("manager.statusIntervalSeconds", link.statusIntervalSeconds),
                ("manager.reconnectInitialSeconds", link.reconnectInitialSeconds), ("manager.reconnectMaxSeconds", link.reconnectMaxSeconds),
            ]
            for (key, value) in timers {
                if let value, !(value > 0 && value <= 3600) {
                    throw ConfigError.invalid(path: path, key: key, reason: "must be more than 0 and at most 3600")
                }
            }
        }
        return config
    }
}
