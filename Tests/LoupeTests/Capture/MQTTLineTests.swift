import CMosquitto
import Foundation
import LoupeAgent
import LoupeTesting
import LoupeWire
import Synchronization
import Testing

/// A real MQTT client (libmosquitto, its own network thread) as a line's
/// MES or PLC gateway uses one: a persistent session (clean_session false)
/// subscribed at QoS 1, so the broker keeps its messages across a restart.
final class LineSubscriber: @unchecked Sendable {
    struct Message: Sendable {
        var topic: String
        var payload: Data
        var retained: Bool
    }

    private let client: OpaquePointer
    private let box: Box
    final class Box: Sendable {
        let messages = Mutex<[Message]>([])
        let subscribed = Atomic<Int>(0)
        let connections = Atomic<Int>(0)
        let acknowledged = Atomic<Int>(0)
    }

    init(port: Int, id: String, topic: String) throws {
        mosquitto_lib_init()
        box = Box()
        guard let client = mosquitto_new(id, false, Unmanaged.passUnretained(box).toOpaque()) else { throw TestSetupError("mosquitto_new") }
        self.client = client
        mosquitto_reconnect_delay_set(client, 1, 1, false)
        mosquitto_connect_callback_set(client) { client, context, rc in
            let box = Unmanaged<Box>.fromOpaque(context!).takeUnretainedValue()
            guard rc == 0 else { return }
            box.connections.add(1, ordering: .relaxed)
        }
        mosquitto_subscribe_callback_set(client) { _, context, _, _, _ in
            Unmanaged<Box>.fromOpaque(context!).takeUnretainedValue().subscribed.add(1, ordering: .relaxed)
        }
        mosquitto_publish_callback_set(client) { _, context, _ in
            Unmanaged<Box>.fromOpaque(context!).takeUnretainedValue().acknowledged.add(1, ordering: .relaxed)
        }
        mosquitto_message_callback_set(client) { _, context, message in
            let box = Unmanaged<Box>.fromOpaque(context!).takeUnretainedValue()
            guard let message = message?.pointee else { return }
            let payload = message.payloadlen > 0 ? Data(bytes: message.payload, count: Int(message.payloadlen)) : Data()
            box.messages.withLock { $0.append(Message(topic: String(cString: message.topic), payload: payload, retained: message.retain)) }
        }
        guard mosquitto_connect(client, "127.0.0.1", Int32(port), 5) == MOSQ_ERR_SUCCESS.rawValue else {
            throw TestSetupError("subscriber connect")
        }
        guard mosquitto_subscribe(client, nil, topic, 1) == MOSQ_ERR_SUCCESS.rawValue else { throw TestSetupError("subscribe") }
        guard mosquitto_loop_start(client) == MOSQ_ERR_SUCCESS.rawValue else { throw TestSetupError("loop_start") }
    }

    deinit {
        mosquitto_disconnect(client)
        mosquitto_loop_stop(client, true)
        mosquitto_destroy(client)
    }

    var subscribed: Bool { box.subscribed.load(ordering: .relaxed) > 0 }
    var connections: Int { box.connections.load(ordering: .relaxed) }
    /// Its own publishes the broker acknowledged (a persistent session resends the others after a reconnect).
    var acknowledged: Int { box.acknowledged.load(ordering: .relaxed) }
    func messages(on topic: String) -> [Message] { box.messages.withLock { $0.filter { $0.topic == topic } } }

    /// QoS 1, as a gateway sends triggers.
    func publish(_ topic: String, _ payload: [UInt8], retain: Bool = false) throws {
        let rc = mosquitto_publish(client, nil, topic, Int32(payload.count), payload, 1, retain)
        guard rc == MOSQ_ERR_SUCCESS.rawValue else { throw TestSetupError("publish: \(String(cString: mosquitto_strerror(rc)))") }
    }
}

extension FakeGigESuite {
    @Suite struct MQTTLineTests {
        static let topics = (
            record: "loupe/gige-cam/record", status: "loupe/gige-cam/status", trigger: "loupe/gige-cam/trigger",
            answer: "loupe/gige-cam/trigger/answer"
        )

        func records(_ subscriber: LineSubscriber) throws -> [InspectionRecord] {
            try subscriber.messages(on: Self.topics.record).map { try JSONDecoder.iso.decode(InspectionRecord.self, from: $0.payload) }
        }

        @Test func aSubscriberSeesEveryRecordOnceInOrderThroughABrokerRestart() async throws {
            let folder = try TestPKI().dir
            let broker = try MosquittoBroker(folder: folder + "/broker")
            let fake = try await FakeGigECamera(serial: "LPQ1", picture: try gigePicture())
            defer { withExtendedLifetime(fake) {} }
            let subscriber = try LineSubscriber(port: broker.port, id: "mes-gateway", topic: "loupe/gige-cam/#")
            #expect(try await eventually(timeout: .seconds(5)) { subscriber.subscribed }, "the subscriber's SUBACK")
            // A stale trigger left retained on the broker: it must not fire when the agent subscribes.
            try subscriber.publish(Self.topics.trigger, Array("{}".utf8), retain: true)
            // A model that fails every ROI, so every frame is a fail the Library keeps.
            let (agent, pki) = try await GenICamAgentTests.startAgent(
                serial: "LPQ1", trigger: "software",
                line: ["mqtt": ["broker": "127.0.0.1:\(broker.port)", "acceptTriggers": true, "keepaliveSeconds": 5]],
                model: SegmentationTests.LivePipelineTests.constantModel(), more: ["library": ["maxPerMinute": 600]])
            defer { withExtendedLifetime(pki) {} }
            try await agent.saveFailingRecipe()
            #expect(
                try await eventually { subscriber.messages(on: Self.topics.status).last?.payload == Data("online".utf8) },
                "the agent says it is online:\n\(agent.process.log.suffix(2000))")

            // Six triggers over MQTT, one at a time as a PLC gateway sends them: each answered and each record published.
            for n in 1...6 {
                try subscriber.publish(Self.topics.trigger, Array(#"{"id": "part-\#(n)"}"#.utf8))
                let answered = try await eventually(timeout: .seconds(10)) {
                    try self.records(subscriber).contains { $0.trigger?.sequence == n }
                        && subscriber.messages(on: Self.topics.answer).count == n
                }
                #expect(answered, "trigger \(n):\n\(agent.process.log.suffix(2000))")
            }
            let answers = try subscriber.messages(on: Self.topics.answer).map {
                try JSONDecoder().decode(MQTTLink.TriggerAnswer.self, from: $0.payload)
            }
            #expect(answers.map(\.id) == (1...6).map { "part-\($0)" } && answers.allSatisfy(\.accepted))
            #expect(answers.map(\.sequence) == Array(1...6))
            var seen = try records(subscriber)
            #expect(seen.map { $0.trigger } == (1...6).map { TriggerStamp(source: "mqtt", sequence: $0) }, "once each, in order")
            #expect(
                seen.allSatisfy {
                    $0.camera == "gige-cam" && $0.verdict == .fail && $0.modelVersion == "part-v1" && $0.rois.map(\.name) == ["left"]
                },
                "\(seen.map { "\($0.verdict) \($0.modelVersion)" })")

            // Malformed, oversized and retained triggers are counted, not acted on.
            try subscriber.publish(Self.topics.trigger, Array("not json{".utf8))
            try subscriber.publish(Self.topics.trigger, Array("[1, 2]".utf8))
            try subscriber.publish(Self.topics.trigger, [UInt8](repeating: 0x20, count: 5000))
            var live = try await agent.live()
            #expect(
                try await eventually {
                    live = try await agent.live(); return live.line?.mqtt?.triggersMalformed == 4
                }, "\(String(describing: live.line))")
            #expect(live.line?.mqtt?.triggersTaken == 6 && live.framesCaptured == 6, "nothing fired: \(live)")
            #expect(
                try await eventually {
                    live = try await agent.live(); return live.line?.mqtt?.pending == 0 && live.line?.mqtt?.published == 6
                },
                "every record acknowledged: \(String(describing: live.line))")

            // The gateway's own ten publishes acknowledged, so none comes again after the restart.
            #expect(try await eventually { subscriber.acknowledged == 10 }, "\(subscriber.acknowledged)")
            // The broker goes away: inspection goes on, records wait in the outbox.
            broker.stop()
            #expect(
                try await eventually {
                    live = try await agent.live(); return live.line?.mqtt?.connected == false
                }, "\(String(describing: live.line))")
            for n in 7...10 {
                let (status, body) = try await agent.http("POST", "/api/v1/live/trigger?wait=true")
                #expect(status == 200, "trigger \(n) while the broker is down: \(String(decoding: body, as: UTF8.self))")
            }
            live = try await agent.live()
            #expect(live.line?.mqtt?.pending == 4 && live.framesInspected == 10, "\(String(describing: live.line))")

            // It comes back: every record arrives, the acknowledged ones not again.
            try broker.start()
            let drained = try await eventually(timeout: .seconds(30)) {
                try self.records(subscriber).contains { $0.trigger?.sequence == 10 }
            }
            let after = try? await agent.live().line
            #expect(drained, "the outbox drained after the restart: \(String(describing: after))\n\(agent.process.log.suffix(2000))")
            seen = try records(subscriber)
            let sequences = seen.compactMap { $0.trigger?.sequence }
            var firsts: [Int] = []
            for sequence in sequences where !firsts.contains(sequence) { firsts.append(sequence) }
            #expect(firsts == Array(1...10), "every record, first seen in order: \(sequences)")
            #expect(
                sequences.prefix(6) == [1, 2, 3, 4, 5, 6] && sequences.filter { $0 <= 6 }.count == 6,
                "acknowledged records are not repeated: \(sequences)")
            #expect(seen.suffix(4).allSatisfy { $0.trigger?.source == "api" })
            #expect(
                try await eventually {
                    live = try await agent.live(); return live.line?.mqtt?.pending == 0 && live.line?.mqtt?.connected == true
                })
            #expect((live.line?.mqtt?.reconnects ?? 0) >= 1 && live.line?.mqtt?.dropped == 0, "\(String(describing: live.line))")
            // The retained trigger came again with the new subscription, and was ignored again.
            #expect(
                try await eventually {
                    live = try await agent.live(); return live.line?.mqtt?.triggersMalformed == 5
                }, "\(String(describing: live.line))")
            #expect(live.line?.mqtt?.triggersTaken == 6 && live.framesCaptured == 10)

            // The records are the agent's own results, field for field.
            let (_, body) = try await agent.http("GET", "/api/v1/live/results?limit=10")
            let results = try JSONDecoder.iso.decode([InspectionResult].self, from: body).reversed()
            let byTrigger = Dictionary(seen.map { ($0.trigger?.sequence ?? 0, $0) }, uniquingKeysWith: { first, _ in first })
            for result in results {
                let record = try #require(byTrigger[result.trigger?.sequence ?? -1], "no record for \(String(describing: result.trigger))")
                #expect(
                    record.sequence == result.sequence && record.verdict == result.verdict && record.rois == result.rois
                        && record.recipeVersion == result.recipeVersion && record.modelVersion == result.modelVersion
                        && abs(record.capturedAt.timeIntervalSince(result.capturedAt)) < 1)
            }
            #expect(subscriber.connections >= 2, "the subscriber reconnected to the restarted broker")

            // And the Library's: every failed frame kept, each with the record's trigger, sequence, verdict and classes.
            let kept = try await agent.libraryByTrigger(count: 10)
            for (trigger, record) in byTrigger {
                let frame = try #require(kept[trigger], "trigger \(trigger) is not in the Library")
                #expect(
                    frame["sequence"] as? Int == record.sequence && frame["verdict"] as? String == record.verdict.rawValue
                        && frame["triggerSource"] as? String == record.trigger?.source && frame["classes"] as? [String] == ["scratch"]
                        && frame["modelVersion"] as? String == record.modelVersion, "\(frame) vs \(record)")
            }
        }

        @Test func theOutboxKeepsOrderDropsTheOldestAndResendsWhatWasNotAcknowledged() throws {
            func record(_ n: Int) -> InspectionRecord {
                InspectionRecord(
                    camera: "c",
                    result: InspectionResult(
                        sequence: n, capturedAt: Date(), verdict: .pass, alignScore: nil, rois: [],
                        modelVersion: "m", recipeVersion: 1), threshold: 0.5)
            }
            var outbox = MQTTOutbox(capacity: 3)
            for n in 1...3 {
                let dropped = outbox.append(record(n))
                #expect(!dropped)
            }
            let full = outbox.append(record(4))
            #expect(full, "full: the oldest goes")
            #expect(outbox.dropped == 1 && outbox.entries.map(\.record.sequence) == [2, 3, 4])
            let batch = outbox.unsent(limit: 2)
            #expect(batch.map(\.1.sequence) == [2, 3], "oldest first, at most the in-flight bound")
            outbox.sent(batch[0].0, mid: 11)
            outbox.sent(batch[1].0, mid: 12)
            #expect(outbox.unsent(limit: 2).isEmpty, "two in flight")
            let acknowledged = [outbox.acknowledge(12), outbox.acknowledge(12), outbox.acknowledge(99)]
            #expect(acknowledged == [true, false, false], "each acknowledgement once; an unknown id is ignored")
            #expect(outbox.entries.map(\.record.sequence) == [2, 4])
            outbox.unsendAll()
            #expect(outbox.unsent(limit: 5).map(\.1.sequence) == [2, 4], "after a lost connection, the unacknowledged go again in order")
        }

        @Test func theMQTTSettingsAreCheckedWhereTheyAreRead() throws {
            let folder = try TemporaryDirectory.make(prefix: "loupe-mqtt-config")
            let path = folder + "/agent.json"
            func load(_ mqtt: [String: Any]) throws -> AgentConfig {
                try writeJSON(
                    ["cameraId": "cam-1", "tls": ["ca": "a", "cert": "b", "key": "c"], "dataDir": "d", "line": ["mqtt": mqtt]], to: path)
                return try AgentConfig.load(path: path)
            }
            #expect(throws: ConfigError.invalid(path: path, key: "line.mqtt.broker", reason: "expected HOST:PORT, got \"broker\"")) {
                _ = try load(["broker": "broker"])
            }
            for prefix in ["plant/#", "a/+/b", "/loupe", "loupe/", ""] {
                #expect(throws: ConfigError.self, "\(prefix)") { _ = try load(["broker": "127.0.0.1:1883", "topicPrefix": prefix]) }
            }
            #expect(throws: ConfigError.invalid(path: path, key: "line.mqtt.outboxCapacity", reason: "must be 1 to 1000000")) {
                _ = try load(["broker": "127.0.0.1:1883", "outboxCapacity": 0])
            }
            let config = try load(["broker": "10.0.4.2:1883", "topicPrefix": "plant7/line3"])
            let settings = try MQTTLink.Settings(try #require(config.line?.mqtt), camera: config.cameraId)
            #expect(settings.recordTopic == "plant7/line3/cam-1/record" && settings.triggerTopic == "plant7/line3/cam-1/trigger")
            #expect(settings.host == "10.0.4.2" && settings.port == 1883 && settings.clientId == "loupe-cam-1" && !settings.acceptTriggers)
        }

        @Test func triggerMessagesAreParsedStrictly() throws {
            #expect(try MQTTLink.parseTrigger(Data(), retained: false) == MQTTLink.TriggerRequest())
            #expect(try MQTTLink.parseTrigger(Data(#"{"id":"a7"}"#.utf8), retained: false).id == "a7")
            for bad in ["nope", "[]", "\"x\"", #"{"id": 5}"#, "{\"id\": \"\(String(repeating: "x", count: 200))\"}"] {
                #expect(throws: LineError.self, "\(bad)") { try MQTTLink.parseTrigger(Data(bad.utf8), retained: false) }
            }
            #expect(throws: LineError.self) { try MQTTLink.parseTrigger(Data("{}".utf8), retained: true) }
            #expect(throws: LineError.self) { try MQTTLink.parseTrigger(Data(repeating: 0x20, count: 2000), retained: false) }
        }
    }
}
