public import LoupeWire
public import LoupeCapture

/// The agent's configuration file (JSON). Every key is documented in
/// Deploy/README.md; Deploy/agent.json is an example.
public struct AgentConfig: Codable, Sendable, Equatable {
    /// How the agent reaches its manager.
    public struct ManagerLink: Codable, Sendable, Equatable {
        /// HOST:PORT of the manager. HOST must be a name or address in the
        /// manager certificate's --host list.
        public var address: String
        /// Further managers of the plant (managers sharing one PostgreSQL
        /// database), HOST:PORT each: when the current manager cannot be
        /// reached or its link drops, the next is tried at once, in turn;
        /// the reconnect delay applies once every address has failed.
        public var fallbackAddresses: [String]?
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
        /// Cap on labelled-ROI upload bandwidth, bytes per second. Default: none.
        public var uploadBytesPerSecond: Double?

        /// Every address, in the order they are tried.
        public var addresses: [String] { [address] + (fallbackAddresses ?? []) }

        public init(
            address: String, heartbeatSeconds: Double? = nil, idleTimeoutSeconds: Double? = nil,
            statusIntervalSeconds: Double? = nil, reconnectInitialSeconds: Double? = nil, reconnectMaxSeconds: Double? = nil
        ) {
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
        public var address: String
        /// Serve HTTPS with the agent's certificate (issue it with --host for the page's names). Default false.
        public var tls: Bool?
        /// Sessions end this many hours after sign-in. Default 12.
        public var sessionHours: Double?
        /// Password for the `admin` user made at first start; without it a
        /// random one is written to DATADIR/initial-admin-password.
        public var initialAdminPassword: String?
        /// The nice value of the page's threads (0…19): below live inspection, so that the page yields to it
        /// (`PagePriority`). Default 10; 0 puts the page level with inspection.
        public var pageNice: Int32?

        public init(address: String, tls: Bool? = nil, sessionHours: Double? = nil, initialAdminPassword: String? = nil) {
            self.address = address
            self.tls = tls
            self.sessionHours = sessionHours
            self.initialAdminPassword = initialAdminPassword
        }
    }

    /// Where frames come from and how the live pipeline runs.
    public struct CameraSettings: Codable, Sendable, Equatable {
        public enum Source: String, Codable, Sendable {
            /// A V4L2 device (`device`, e.g. /dev/video0).
            case v4l2
            /// A GigE Vision or USB3 Vision camera through Aravis (`device`: its
            /// serial number, IP address or Aravis id; absent: the first found).
            case genicam
            /// PNG/JPEG files (`files`: a file, a folder or a glob), replayed in a loop.
            case files
            /// The built-in synthetic part with planted defects (demos, benchmarks).
            case synthetic
        }
        public var source: Source
        public var device: String?
        public var files: String?
        /// Frame size asked of a V4L2 camera or rendered by the synthetic one. Default 1280x1024.
        public var width: Int?
        public var height: Int?
        /// Camera rate. V4L2 asks the device for it; files and synthetic frames are paced to it. Default 25.
        public var framesPerSecond: Double?
        /// Synthetic camera seed (frames). Default 1.
        public var seed: UInt64?
        /// Synthetic part seed: cameras on one line share it. Default: `seed`.
        public var partSeed: UInt64?
        /// Threads the live segment stage uses. Default: one less than the cores (the align stage has one).
        public var inferenceThreads: Int?
        /// "fp32" or "bf16". Default: bf16 where the CPU has native bf16, else fp32.
        public var precision: String?
        /// Start inspecting at start-up. Default true.
        public var live: Bool?
        /// GenICam cameras: exposure (µs) and gain (dB), left as the camera has them when absent.
        public var exposureMicroseconds: Double?
        public var gainDecibels: Double?
        /// GenICam cameras: GigE Vision packet size (bytes; default negotiated) and packet resend (default true).
        public var packetSize: Int?
        public var packetResend: Bool?
        /// GenICam cameras: the pixel format ("Mono8", "Mono12", "BayerRG8", "RGB8", …); default the first
        /// the camera offers of Mono8, Mono16, Mono14, Mono12, Mono10, Bayer 8-bit, RGB8.
        public var pixelFormat: String?
        /// GenICam cameras: "free-run" (default), "software" (one frame per POST /api/v1/live/trigger), or the
        /// camera input that fires it ("Line0", "Line1", …: GenICam TriggerSource).
        public var trigger: String?

        public init(
            source: Source, device: String? = nil, files: String? = nil, width: Int? = nil, height: Int? = nil,
            framesPerSecond: Double? = nil, seed: UInt64? = nil, inferenceThreads: Int? = nil, precision: String? = nil, live: Bool? = nil
        ) {
            self.source = source
            self.device = device
            self.files = files
            self.width = width
            self.height = height
            self.framesPerSecond = framesPerSecond
            self.seed = seed
            self.inferenceThreads = inferenceThreads
            self.precision = precision
            self.live = live
        }
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
    /// The camera; absent: an agent for labelling imported images only.
    public var camera: CameraSettings?
    /// The camera's Library of inspected frames (docs/agent-api.md); defaults when left out.
    public var library: LibraryPolicy?
    /// The line: results and triggers for the PLC (docs/line-integration.md); absent: none.
    public var line: LineSettings?

    public struct LineSettings: Codable, Sendable, Equatable {
        /// A Modbus TCP server for the PLC.
        public var modbus: ModbusSettings?

        public init(modbus: ModbusSettings? = nil, mqtt: MQTTSettings? = nil) {
            self.modbus = modbus
            self.mqtt = mqtt
        }

        public struct ModbusSettings: Codable, Sendable, Equatable {
            /// HOST:PORT to listen on (502 is Modbus' own port; it needs root or CAP_NET_BIND_SERVICE).
            public var address: String

            public init(address: String) { self.address = address }
        }

        /// Records to an MQTT broker, and triggers from it.
        public var mqtt: MQTTSettings?

        public struct MQTTSettings: Codable, Sendable, Equatable {
            /// The broker, HOST:PORT (1883 is MQTT's own port).
            public var broker: String
            /// Topics are PREFIX/CAMERA/record, /status and /trigger; default "loupe".
            public var topicPrefix: String?
            /// The MQTT client id; default "loupe-CAMERA".
            public var clientId: String?
            /// Seconds between keepalive pings; default 10.
            public var keepaliveSeconds: Int?
            /// Records kept while the broker is away or slow; default 10 000. When full, the oldest go (and are counted).
            public var outboxCapacity: Int?
            /// Records published and not yet acknowledged at once; default 32.
            public var maxInflight: Int?
            /// Take triggers from PREFIX/CAMERA/trigger (the camera in software trigger mode); default false.
            public var acceptTriggers: Bool?

            public init(broker: String, topicPrefix: String? = nil, acceptTriggers: Bool? = nil) {
                self.broker = broker
                self.topicPrefix = topicPrefix
                self.acceptTriggers = acceptTriggers
            }
        }
    }
    /// Files with the manager's model-signing public keys (64 hex digits).
    /// Models signed by other keys are refused. The agent also trusts its own
    /// key (`DATADIR/models/local-signing.key`) for models it trains itself.
    public var modelKeys: [String]?

    public init(
        cameraId: String, manager: ManagerLink?, tls: TLSFiles, dataDir: String, http: HTTPSettings? = nil, camera: CameraSettings? = nil
    ) {
        self.cameraId = cameraId
        self.manager = manager
        self.tls = tls
        self.dataDir = dataDir
        self.http = http
        self.camera = camera
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
            if let nice = http.pageNice, !(0...19).contains(nice) {
                throw ConfigError.invalid(path: path, key: "http.pageNice", reason: "must be 0 to 19")
            }
            if let hours = http.sessionHours, !(hours > 0 && hours <= 24 * 30) {
                throw ConfigError.invalid(path: path, key: "http.sessionHours", reason: "must be more than 0 and at most 720")
            }
            if let password = http.initialAdminPassword, password.count < 10 {
                throw ConfigError.invalid(path: path, key: "http.initialAdminPassword", reason: "needs at least 10 characters")
            }
        }
        config.modelKeys = config.modelKeys?.map { ConfigFile.resolve($0, relativeTo: path) }
        if let modbus = config.line?.modbus {
            do { _ = try parseAddress(modbus.address) } catch {
                throw ConfigError.invalid(path: path, key: "line.modbus.address", reason: "expected HOST:PORT, got \"\(modbus.address)\"")
            }
        }
        if let mqtt = config.line?.mqtt {
            try MQTTLink.Settings.check(mqtt, camera: config.cameraId, path: path)
        }
        if let camera = config.camera {
            switch camera.source {
            case .v4l2 where camera.device == nil:
                throw ConfigError.invalid(path: path, key: "camera.device", reason: "a v4l2 camera needs its device path, e.g. /dev/video0")
            case .files where camera.files == nil:
                throw ConfigError.invalid(path: path, key: "camera.files", reason: "a files source needs a file, folder or glob")
            default: break
            }
            if let format = camera.pixelFormat, GenICamPixelFormat(rawValue: format) == nil {
                throw ConfigError.invalid(
                    path: path, key: "camera.pixelFormat",
                    reason:
                        "\"\(format)\" is not one Loupe reads; use one of "
                        + "\(GenICamPixelFormat.allCases.map(\.rawValue).joined(separator: ", "))"
                )
            }
            if let packetSize = camera.packetSize, !(576...16_384).contains(packetSize) {
                throw ConfigError.invalid(path: path, key: "camera.packetSize", reason: "must be 576…16384 bytes")
            }
            if let trigger = camera.trigger, CameraTrigger(name: trigger) == nil {
                throw ConfigError.invalid(path: path, key: "camera.trigger", reason: CameraTrigger.expected)
            }
            if camera.source != .genicam,
                let key = [
                    ("camera.exposureMicroseconds", camera.exposureMicroseconds != nil),
                    ("camera.gainDecibels", camera.gainDecibels != nil),
                    ("camera.packetSize", camera.packetSize != nil), ("camera.packetResend", camera.packetResend != nil),
                    ("camera.pixelFormat", camera.pixelFormat != nil), ("camera.trigger", camera.trigger != nil),
                ].first(where: \.1)?.0
            {
                throw ConfigError.invalid(path: path, key: key, reason: "applies to a genicam camera only")
            }
            if case .files = camera.source, let files = camera.files {
                config.camera?.files = ConfigFile.resolve(files, relativeTo: path)
            }
            if let fps = camera.framesPerSecond, !(fps > 0 && fps <= 1000) {
                throw ConfigError.invalid(path: path, key: "camera.framesPerSecond", reason: "must be more than 0 and at most 1000")
            }
            if let threads = camera.inferenceThreads, !(1...256).contains(threads) {
                throw ConfigError.invalid(path: path, key: "camera.inferenceThreads", reason: "must be 1…256")
            }
            if let precision = camera.precision, !["fp32", "bf16"].contains(precision) {
                throw ConfigError.invalid(path: path, key: "camera.precision", reason: "must be \"fp32\" or \"bf16\", not \"\(precision)\"")
            }
            for (key, value) in [("camera.width", camera.width), ("camera.height", camera.height)] {
                if let value, !(16...8192).contains(value) { throw ConfigError.invalid(path: path, key: key, reason: "must be 16…8192") }
            }
        }
        if let link = config.manager {
            do { _ = try parseAddress(link.address) } catch {
                throw ConfigError.invalid(path: path, key: "manager.address", reason: "expected HOST:PORT, got \"\(link.address)\"")
            }
            for address in link.fallbackAddresses ?? [] {
                do { _ = try parseAddress(address) } catch {
                    throw ConfigError.invalid(
                        path: path, key: "manager.fallbackAddresses",
                        reason: "expected HOST:PORT, got \"\(address)\"")
                }
            }
            if Set(link.addresses).count != link.addresses.count {
                throw ConfigError.invalid(
                    path: path, key: "manager.fallbackAddresses",
                    reason: "names an address twice (manager.address included)")
            }
            let timers = [
                ("manager.heartbeatSeconds", link.heartbeatSeconds), ("manager.idleTimeoutSeconds", link.idleTimeoutSeconds),
                ("manager.statusIntervalSeconds", link.statusIntervalSeconds),
                ("manager.reconnectInitialSeconds", link.reconnectInitialSeconds),
                ("manager.reconnectMaxSeconds", link.reconnectMaxSeconds),
            ]
            if let cap = link.uploadBytesPerSecond, !(cap >= 1024) {
                throw ConfigError.invalid(path: path, key: "manager.uploadBytesPerSecond", reason: "must be at least 1024 bytes per second")
            }
            for (key, value) in timers {
                if let value, !(value > 0 && value <= 3600) {
                    throw ConfigError.invalid(path: path, key: key, reason: "must be more than 0 and at most 3600")
                }
            }
        }
        return config
    }
}

extension AgentConfig.CameraSettings {
    /// The Aravis camera's settings from a checked config.
    public var genicamSettings: AravisCamera.Settings {
        var settings = AravisCamera.Settings(camera: device)
        settings.width = width
        settings.height = height
        settings.framesPerSecond = framesPerSecond
        settings.exposureMicroseconds = exposureMicroseconds
        settings.gainDecibels = gainDecibels
        settings.packetSize = packetSize
        settings.packetResend = packetResend ?? true
        if let format = pixelFormat.flatMap(GenICamPixelFormat.init(rawValue:)) { settings.pixelFormats = [format] }
        settings.trigger = trigger.flatMap(CameraTrigger.init(name:)) ?? .freeRun
        return settings
    }
}
