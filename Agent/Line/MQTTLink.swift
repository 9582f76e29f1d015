import CMosquitto
public import Foundation
import LoupeStorage
public import Logging
public import LoupeVision
import LoupeWire
public import ServiceLifecycle
import Synchronization

/// The agent's MQTT link (libmosquitto), off unless the config has
/// `line.mqtt`: every inspection record published as JSON, QoS 1, to
/// `PREFIX/CAMERA/record`; the agent's presence, retained, on
/// `PREFIX/CAMERA/status` ("online", and "offline" as its will); and, when
/// `acceptTriggers` is set, software triggers taken from
/// `PREFIX/CAMERA/trigger`, each answered on `PREFIX/CAMERA/trigger/answer`.
///
/// Records wait in a bounded outbox the link owns, in order, until the
/// broker acknowledges them (PUBACK); a record leaves it only then. When the
/// broker goes away, the link reconnects with backoff on a fresh session and
/// publishes what is unacknowledged again, oldest first: delivery is at
/// least once, and a record is repeated only when its acknowledgement was
/// lost with the connection. A full outbox drops its oldest record and
/// counts it. The pipeline only appends to the outbox, so a slow or absent
/// broker never holds up inspection. Everything MQTT runs on the link's own
/// thread.
public final class MQTTLink: Service, Sendable {
    /// The settings with their defaults applied.
    public struct Settings: Sendable, Equatable {
        public var host: String
        public var port: Int
        public var clientId: String
        public var keepaliveSeconds: Int
        public var outboxCapacity: Int
        public var maxInflight: Int
        public var acceptTriggers: Bool
        public var recordTopic: String
        public var statusTopic: String
        public var triggerTopic: String
        public var answerTopic: String

        public init(_ settings: AgentConfig.LineSettings.MQTTSettings, camera: String) throws {
            (host, port) = try parseAddress(settings.broker)
            let prefix = settings.topicPrefix ?? "loupe"
            clientId = settings.clientId ?? "loupe-\(camera)"
            keepaliveSeconds = settings.keepaliveSeconds ?? 10
            outboxCapacity = settings.outboxCapacity ?? 10_000
            maxInflight = settings.maxInflight ?? 32
            acceptTriggers = settings.acceptTriggers ?? false
            recordTopic = "\(prefix)/\(camera)/record"
            statusTopic = "\(prefix)/\(camera)/status"
            triggerTopic = "\(prefix)/\(camera)/trigger"
            answerTopic = "\(prefix)/\(camera)/trigger/answer"
        }

        /// The config's checks, each naming its key.
        static func check(_ settings: AgentConfig.LineSettings.MQTTSettings, camera: String, path: String) throws {
            func invalid(_ key: String, _ reason: String) -> ConfigError { .invalid(path: path, key: "line.mqtt.\(key)", reason: reason) }
            do { _ = try parseAddress(settings.broker) } catch { throw invalid("broker", "expected HOST:PORT, got \"\(settings.broker)\"") }
            if let prefix = settings.topicPrefix {
                // A topic level may hold neither wildcard nor NUL; the camera id is a fleet name already.
                guard !prefix.isEmpty, prefix.utf8.count <= 128, !prefix.hasPrefix("/"), !prefix.hasSuffix("/"),
                    !prefix.contains(where: { $0 == "+" || $0 == "#" || $0 == "\0" })
                else {
                    throw invalid("topicPrefix", "must be 1 to 128 bytes without +, #, NUL or a leading or trailing /, got \"\(prefix)\"")
                }
            }
            if let id = settings.clientId, id.isEmpty || id.utf8.count > 64 { throw invalid("clientId", "must be 1 to 64 bytes") }
            if let seconds = settings.keepaliveSeconds, !(5...3600).contains(seconds) {
                throw invalid("keepaliveSeconds", "must be 5 to 3600")
            }
            if let capacity = settings.outboxCapacity, !(1...1_000_000).contains(capacity) {
                throw invalid("outboxCapacity", "must be 1 to 1000000")
            }
            if let inflight = settings.maxInflight, !(1...1000).contains(inflight) { throw invalid("maxInflight", "must be 1 to 1000") }
        }
    }

    /// A trigger message's payload: empty, or a JSON object with an optional id echoed in the answer.
    public struct TriggerRequest: Codable, Sendable, Equatable {
        public var id: String?
        public init(id: String? = nil) { self.id = id }
        /// The most a trigger message may carry, bytes.
        public static let maxBytes = 1024
    }

    /// What the agent says to each trigger it takes or refuses.
    public struct TriggerAnswer: Codable, Sendable, Equatable {
        public var id: String?
        public var accepted: Bool
        /// The trigger's sequence number, when accepted: its record carries the same.
        public var sequence: Int?
        /// Why it was refused: the pipeline was busy ("missed"), or not in software trigger mode, or live is off.
        public var reason: String?
    }

    private let settings: Settings
    private let camera: String
    private let pipeline: LivePipeline
    private let logger: Logger
    private let outbox: Mutex<MQTTOutbox>
    private let counters = Mutex(MQTTStatistics())
    private let stopping = Atomic<Bool>(false)

    public init(settings: Settings, camera: String, pipeline: LivePipeline, logger: Logger) {
        self.settings = settings
        self.camera = camera
        self.pipeline = pipeline
        self.logger = logger
        outbox = Mutex(MQTTOutbox(capacity: settings.outboxCapacity))
        counters.withLock { $0.broker = "\(settings.host):\(settings.port)" }
        pipeline.observe { [weak self] _, result, threshold in self?.enqueue(result, threshold: threshold) }
        pipeline.reportLine { [weak self] status in
            guard let self else { return }
            status.mqtt = self.statistics
        }
    }

    /// The link's counters and the outbox's depth now.
    public var statistics: MQTTStatistics {
        var statistics = counters.withLock { $0 }
        outbox.withLock { outbox in
            statistics.pending = outbox.entries.count
            statistics.inflight = outbox.entries.reduce(0) { $0 + ($1.mid == nil ? 0 : 1) }
            statistics.dropped = outbox.dropped
        }
        return statistics
    }

    /// The pipeline's hook: append, drop the oldest when full; never waits on the network.
    private func enqueue(_ result: InspectionResult, threshold: Double) {
        let record = InspectionRecord(camera: camera, result: result, threshold: threshold)
        let dropped = outbox.withLock { $0.append(record) }
        if dropped {
            logger.warning("mqtt outbox full: the oldest record was dropped", metadata: ["capacity": "\(settings.outboxCapacity)"])
        }
    }

    public func run() async throws {
        let done = DispatchSemaphore(value: 0)
        DedicatedThread.start("loupe-mqtt") { [self] in
            serve()
            done.signal()
        }
        try? await gracefulShutdown()
        stopping.store(true, ordering: .relaxed)
        await LivePipeline.wait(for: done)
        // The outbox lives in memory: what the broker had not acknowledged by now is not sent (the Library keeps the frames).
        let unsent = outbox.withLock { $0.entries.count }
        if unsent > 0 {
            logger.warning("mqtt stopped with records the broker had not acknowledged", metadata: ["unsent": "\(unsent)"])
        } else {
            logger.info("mqtt stopped")
        }
    }

    // MARK: The link's thread

    /// One connection's state, reached from libmosquitto's callbacks through their `obj` pointer.
    private final class Session {
        let link: MQTTLink
        var connected = false
        var lost = false
        init(link: MQTTLink) { self.link = link }
    }

    private func serve() {
        mosquitto_lib_init()
        defer { mosquitto_lib_cleanup() }
        var backoff = 0.25
        while !stopping.load(ordering: .relaxed) {
            let session = Session(link: self)
            if let client = open(session) {
                while !stopping.load(ordering: .relaxed), !session.lost {
                    if session.connected { publishPending(client) }
                    let rc = mosquitto_loop(client, 100, 1)
                    if rc != MOSQ_ERR_SUCCESS.rawValue, !session.lost {
                        lost(session, reason: Self.describe(rc))
                    }
                }
                if session.connected {
                    backoff = 0.25
                    if stopping.load(ordering: .relaxed) { close(client) }
                }
                mosquitto_destroy(client)
            }
            outbox.withLock { $0.unsendAll() }
            counters.withLock { $0.connected = false }
            // Reconnect, doubling the wait up to 5 s, until stopped.
            let until = ContinuousClock.now + .milliseconds(Int(backoff * 1000))
            while !stopping.load(ordering: .relaxed), ContinuousClock.now < until { Thread.sleep(forTimeInterval: 0.05) }
            backoff = min(backoff * 2, 5)
        }
    }

    /// A fresh client, its will and callbacks set, the TCP connection made (CONNACK comes in the loop).
    private func open(_ session: Session) -> OpaquePointer? {
        guard let client = mosquitto_new(settings.clientId, true, Unmanaged.passUnretained(session).toOpaque()) else {
            failed("cannot make an MQTT client: \(String(cString: strerror(loupe_mosquitto_errno())))")
            return nil
        }
        mosquitto_max_inflight_messages_set(client, UInt32(settings.maxInflight))
        let offline = Array("offline".utf8)
        mosquitto_will_set(client, settings.statusTopic, Int32(offline.count), offline, 1, true)
        mosquitto_connect_callback_set(client) { client, context, rc in
            let session = Unmanaged<Session>.fromOpaque(context!).takeUnretainedValue()
            session.link.connected(session, client: client!, rc: rc)
        }
        mosquitto_disconnect_callback_set(client) { _, context, rc in
            let session = Unmanaged<Session>.fromOpaque(context!).takeUnretainedValue()
            session.link.lost(session, reason: rc == 0 ? "disconnected" : MQTTLink.describe(rc))
        }
        mosquitto_publish_callback_set(client) { _, context, mid in
            let session = Unmanaged<Session>.fromOpaque(context!).takeUnretainedValue()
            session.link.acknowledged(mid)
        }
        mosquitto_message_callback_set(client) { client, context, message in
            let session = Unmanaged<Session>.fromOpaque(context!).takeUnretainedValue()
            if let message { session.link.received(message.pointee, client: client!) }
        }
        let rc = mosquitto_connect(client, settings.host, Int32(settings.port), Int32(settings.keepaliveSeconds))
        guard rc == MOSQ_ERR_SUCCESS.rawValue else {
            failed("cannot reach the MQTT broker at \(settings.host):\(settings.port): \(Self.describe(rc))")
            mosquitto_destroy(client)
            return nil
        }
        return client
    }

    private func connected(_ session: Session, client: OpaquePointer, rc: Int32) {
        guard rc == 0 else {
            lost(session, reason: "the broker refused the connection: \(String(cString: mosquitto_connack_string(rc)))")
            return
        }
        session.connected = true
        let again = counters.withLock { counters in
            counters.connected = true
            counters.lastError = nil
            defer { counters.connections += 1 }
            return counters.connections > 0
        }
        if again { counters.withLock { $0.reconnects += 1 } }
        logger.info("mqtt connected", metadata: ["broker": "\(settings.host):\(settings.port)", "client": "\(settings.clientId)"])
        let online = Array("online".utf8)
        mosquitto_publish(client, nil, settings.statusTopic, Int32(online.count), online, 1, true)
        if settings.acceptTriggers { mosquitto_subscribe(client, nil, settings.triggerTopic, 1) }
    }

    private func lost(_ session: Session, reason: String) {
        guard !session.lost else { return }
        session.lost = true
        // A connection that was up is logged each time it goes; a broker that refuses us, once per reason.
        if session.connected { logger.warning("mqtt connection lost", metadata: ["reason": "\(reason)"]) }
        failed(reason, log: !session.connected)
    }

    private func failed(_ reason: String, log: Bool = true) {
        let first = counters.withLock { counters in
            defer { counters.lastError = reason }
            return counters.lastError != reason
        }
        // A broker that stays away is logged once, not at every retry.
        if log, first { logger.warning("mqtt", metadata: ["error": "\(reason)"]) }
    }

    /// Publishes outbox records not yet on this connection, oldest first, up to the in-flight bound.
    private func publishPending(_ client: OpaquePointer) {
        let batch = outbox.withLock { $0.unsent(limit: settings.maxInflight) }
        for (id, record) in batch {
            guard let payload = try? JSONEncoder.iso.encode(record) else { continue }
            var mid: Int32 = 0
            let rc = payload.withUnsafeBytes {
                mosquitto_publish(client, &mid, settings.recordTopic, Int32($0.count), $0.baseAddress, 1, false)
            }
            guard rc == MOSQ_ERR_SUCCESS.rawValue else {
                failed("publish: \(Self.describe(rc))")
                return
            }
            outbox.withLock { $0.sent(id, mid: mid) }
        }
    }

    private func acknowledged(_ mid: Int32) {
        if outbox.withLock({ $0.acknowledge(mid) }) { counters.withLock { $0.published += 1 } }
    }

    /// A message on the trigger topic: fire, answer, count; anything malformed is counted and logged, never acted on.
    private func received(_ message: mosquitto_message, client: OpaquePointer) {
        guard String(cString: message.topic) == settings.triggerTopic else { return }
        let bytes = message.payloadlen > 0 ? Data(bytes: message.payload, count: Int(message.payloadlen)) : Data()
        let request: TriggerRequest
        do {
            request = try Self.parseTrigger(bytes, retained: message.retain)
        } catch {
            counters.withLock { $0.triggersMalformed += 1 }
            logger.warning("mqtt trigger ignored", metadata: ["reason": "\(error)"])
            return
        }
        var answer = TriggerAnswer(id: request.id, accepted: false)
        do {
            let stamp = try pipeline.trigger(source: "mqtt")
            answer.accepted = true
            answer.sequence = stamp.sequence
            counters.withLock { $0.triggersTaken += 1 }
        } catch TriggerError.missed(let busy) {
            answer.reason = "missed: trigger \(busy) is still being inspected"
            counters.withLock { $0.triggersMissed += 1 }
        } catch {
            answer.reason = "\(error)"
            counters.withLock { $0.triggersRefused += 1 }
        }
        if let payload = try? JSONEncoder.iso.encode(answer) {
            _ = payload.withUnsafeBytes { mosquitto_publish(client, nil, settings.answerTopic, Int32($0.count), $0.baseAddress, 1, false) }
        }
    }

    /// Why a trigger message is not one: too long, retained (an old trigger must not fire on connect), or not the JSON it should be.
    public static func parseTrigger(_ bytes: Data, retained: Bool) throws(LineError) -> TriggerRequest {
        guard !retained else { throw .mqtt("a retained trigger message (a stale trigger must not fire when the agent connects)") }
        guard bytes.count <= TriggerRequest.maxBytes else {
            throw .mqtt("a \(bytes.count)-byte trigger message (at most \(TriggerRequest.maxBytes))")
        }
        guard !bytes.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) else { return TriggerRequest() }
        let request: TriggerRequest
        do { request = try JSONDecoder().decode(TriggerRequest.self, from: bytes) } catch {
            throw .mqtt(
                "a trigger message that is not a JSON object like {\"id\": \"...\"}: \(String(decoding: bytes.prefix(64), as: UTF8.self))")
        }
        if let id = request.id, id.utf8.count > 128 { throw .mqtt("a trigger id of \(id.utf8.count) bytes (at most 128)") }
        return request
    }

    /// On shutdown: say offline (the will is for crashes), and leave cleanly.
    private func close(_ client: OpaquePointer) {
        let offline = Array("offline".utf8)
        mosquitto_publish(client, nil, settings.statusTopic, Int32(offline.count), offline, 1, true)
        for _ in 0..<5 { mosquitto_loop(client, 20, 1) }
        mosquitto_disconnect(client)
        mosquitto_loop(client, 20, 1)
    }

    static func describe(_ rc: Int32) -> String {
        rc == MOSQ_ERR_ERRNO.rawValue ? String(cString: strerror(loupe_mosquitto_errno())) : String(cString: mosquitto_strerror(rc))
    }
}

/// The record published for every inspected frame (docs/line-integration.md).
public struct InspectionRecord: Codable, Sendable, Equatable {
    public var camera: String
    public var sequence: Int
    public var capturedAt: Date
    public var verdict: InspectionResult.Verdict
    /// The trigger it answers (source and sequence), when the camera is triggered.
    public var trigger: TriggerStamp?
    public var recipeVersion: Int
    public var modelVersion: String
    /// The confidence threshold it was judged at.
    public var threshold: Double
    public var alignScore: Double?
    public var placement: PartPlacement?
    public var rois: [ROIResult]
    public var timings: StageTimings

    public init(camera: String, result: InspectionResult, threshold: Double) {
        self.camera = camera
        sequence = result.sequence
        capturedAt = result.capturedAt
        verdict = result.verdict
        trigger = result.trigger
        recipeVersion = result.recipeVersion
        modelVersion = result.modelVersion
        self.threshold = threshold
        alignScore = result.alignScore
        placement = result.placement
        rois = result.rois
        timings = result.timings
    }
}

/// The MQTT link's state for the page and `GET /api/v1/live`.
public struct MQTTStatistics: Codable, Sendable, Equatable {
    public var broker = ""
    public var connected = false
    /// Records the broker acknowledged.
    public var published = 0
    /// Records in the outbox (not yet acknowledged), and of those the ones sent on this connection.
    public var pending = 0
    public var inflight = 0
    /// Records dropped because the outbox was full.
    public var dropped = 0
    /// Connections made, and of those the ones after the first.
    public var connections = 0
    public var reconnects = 0
    public var triggersTaken = 0
    public var triggersMissed = 0
    /// Triggers refused for another reason (live off, not in software trigger mode).
    public var triggersRefused = 0
    public var triggersMalformed = 0
    public var lastError: String?
}

/// The records not yet acknowledged, oldest first, each with the message id
/// it was last sent under on the current connection (nil: not sent on it).
public struct MQTTOutbox: Sendable {
    public struct Entry: Sendable {
        public var id: UInt64
        public var record: InspectionRecord
        public var mid: Int32?
    }

    public let capacity: Int
    public private(set) var entries: [Entry] = []
    public private(set) var dropped = 0
    private var nextId: UInt64 = 0

    public init(capacity: Int) { self.capacity = capacity }

    /// Appends; true when the oldest record was dropped to make room.
    public mutating func append(_ record: InspectionRecord) -> Bool {
        nextId += 1
        entries.append(Entry(id: nextId, record: record))
        guard entries.count > capacity else { return false }
        entries.removeFirst(entries.count - capacity)
        dropped += 1
        return true
    }

    /// The oldest unsent records, as many as leave at most `limit` in flight.
    public func unsent(limit: Int) -> [(UInt64, InspectionRecord)] {
        let inflight = entries.reduce(0) { $0 + ($1.mid == nil ? 0 : 1) }
        guard inflight < limit else { return [] }
        return entries.lazy.filter { $0.mid == nil }.prefix(limit - inflight).map { ($0.id, $0.record) }
    }

    public mutating func sent(_ id: UInt64, mid: Int32) {
        if let index = entries.firstIndex(where: { $0.id == id }) { entries[index].mid = mid }
    }

    /// Removes the record sent under `mid`; false when none was (dropped meanwhile).
    public mutating func acknowledge(_ mid: Int32) -> Bool {
        guard let index = entries.firstIndex(where: { $0.mid == mid }) else { return false }
        entries.remove(at: index)
        return true
    }

    /// The connection is gone: everything is sent again on the next.
    public mutating func unsendAll() {
        for index in entries.indices { entries[index].mid = nil }
    }
}
