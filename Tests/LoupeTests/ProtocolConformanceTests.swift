import Foundation
import Logging
import LoupeManager
import LoupePKI
import LoupeProto
import LoupeWire
import NIOCore
import SwiftProtobuf
import Testing
import LoupeTesting

/// What an independent client, written from docs/protocol.md and the schema alone, found the manager doing
/// against the document (issue 22, item 5), each checked against the real manager over mutual TLS on loopback,
/// mostly with a raw client that sends exactly the bytes a test names.
@Suite struct ProtocolConformanceTests {
    /// Opens a raw connection as `files`, writes `buffer` in one write (one TLS record when small) and
    /// collects what comes back until the manager closes.
    static func exchange(
        _ manager: ManagerHarness, as files: TLSFiles, _ buffer: ByteBuffer, timeout: Duration = .seconds(10)
    ) async throws -> RawTLSClient.Outcome {
        let raw = try await RawTLSClient.connect(port: manager.port, caPath: manager.pki.caPath, identity: files)
        return try await raw.executeThenClose { inbound, outbound in
            try await outbound.write(buffer)
            return await RawTLSClient.collect(inbound, timeout: timeout)
        }
    }

    /// ROIs the manager's training data holds from one camera, read from its file as a second reader would.
    static func stored(_ manager: ManagerHarness, from camera: String) async throws -> Int {
        try await TrainingDataStore(path: manager.config.dataDir + "/training-data.sqlite").count(cameraId: camera)
    }

    static func echo(_ bytes: Int) -> Envelope.OneOf_Body {
        var echo = Loupe_V1_Echo()
        echo.payload = Data((0..<bytes).map { UInt8(truncatingIfNeeded: $0) })
        return .echo(echo)
    }

    static func replies(_ outcome: RawTLSClient.Outcome) -> [UInt64: Envelope] {
        Dictionary(outcome.envelopes.filter { $0.replyTo != 0 }.map { ($0.replyTo, $0) }) { first, _ in first }
    }

    @Test func requestsThatArriveWithAGoodbyeInOneRecordAreAllAnsweredBeforeTheClose() async throws {
        let manager = try await ManagerHarness.start()
        defer { Task { await manager.stop() } }
        let upload = try ResourceLimitTests.upload(type: "disc")
        var envelopes = [RawTLSClient.envelope(1, .hello(Loupe_V1_Hello.with { $0.protocolVersion = WireProtocol.version }))]
        for id in 2...11 { envelopes.append(RawTLSClient.envelope(UInt64(id), Self.echo(id * 10))) }
        envelopes.append(RawTLSClient.envelope(12, .roiUpload(upload)))
        envelopes.append(RawTLSClient.envelope(0, .goodbye(Loupe_V1_Goodbye.with { $0.reason = "done" })))
        let outcome = try await Self.exchange(manager, as: try manager.pki.member(.agent, "cam-bye"), try RawTLSClient.frames(envelopes))
        #expect(outcome.closed, "the manager closes after the Goodbye")
        let replies = Self.replies(outcome)
        guard case .welcome = replies[1]?.body else {
            Issue.record("no Welcome: \(outcome.envelopes.map(\.bodyName))")
            return
        }
        for id in 2...11 {
            #expect(
                replies[UInt64(id)]?.body == Self.echo(id * 10),
                "echo \(id) unanswered or wrong: \(replies[UInt64(id)]?.bodyName ?? "none")")
        }
        // The upload was stored, and the camera heard so: nothing acknowledged is lost, nothing stored goes unacknowledged.
        guard case .roiAck(let ack) = replies[12]?.body else {
            Issue.record("the upload sent with the Goodbye got \(replies[12]?.bodyName ?? "no reply")")
            return
        }
        #expect(ack.status == .stored)
        #expect(try await Self.stored(manager, from: "cam-bye") == 1)
    }

    @Test func thePeersAnnouncedFrameLimitBoundsEveryFrameSentToIt() async throws {
        let records = LogRecord()
        let manager = try await ManagerHarness.start(logger: records.logger(level: .warning))
        defer { Task { await manager.stop() } }
        let operatorFiles = try manager.pki.member(.operator, "alice")
        // A client that takes frames of at most 1,024 bytes: an echo whose reply would be larger is refused by
        // name (the request itself is within the manager's limit), and the connection goes on serving.
        let envelopes = [
            RawTLSClient.envelope(
                1,
                .hello(
                    Loupe_V1_Hello.with {
                        $0.protocolVersion = WireProtocol.version; $0.maxFrameBytes = 1024
                    })),
            RawTLSClient.envelope(2, Self.echo(600)),
            RawTLSClient.envelope(3, Self.echo(2000)),
            RawTLSClient.envelope(4, Self.echo(100)),
            RawTLSClient.envelope(0, .goodbye(Loupe_V1_Goodbye())),
        ]
        let outcome = try await Self.exchange(manager, as: operatorFiles, try RawTLSClient.frames(envelopes))
        let replies = Self.replies(outcome)
        for envelope in outcome.envelopes {
            let bytes: [UInt8] = try envelope.serializedBytes()
            let size = bytes.count
            #expect(size <= 1024, "a \(size)-byte \(envelope.bodyName) was sent to a peer that takes 1024")
        }
        #expect(replies[2]?.body == Self.echo(600))
        guard case .error(let error) = replies[3]?.body else {
            Issue.record("the 2000-byte echo got \(replies[3]?.bodyName ?? "no reply")")
            return
        }
        #expect(error.code == .frameTooLarge && error.message.contains("1024") && error.message.contains("echo"), "\(error.message)")
        #expect(replies[4]?.body == Self.echo(100), "the connection serves on after the refusal")

        // A limit too small for the protocol's own frames is refused at the Hello, naming the minimum.
        let tiny = try await Self.exchange(manager, as: operatorFiles, try RawTLSClient.hello(maxFrameBytes: 100))
        let refusal = try #require(tiny.errors.first, "no Error: \(tiny.envelopes.map(\.bodyName))")
        #expect(
            refusal.code == .invalidArgument && refusal.message.contains("1024") && refusal.message.contains("max_frame_bytes"),
            "\(refusal.message)")
        #expect(tiny.closed)
    }

    @Test func aClientHoldsItsRequestsToTheManagersAnnouncedLimit() async throws {
        let manager = try await ManagerHarness.start(maxFrameBytes: 4096)
        defer { Task { await manager.stop() } }
        try await WireClient.withConnection(manager.client(try manager.pki.member(.operator, "bob"))) { connection, welcome in
            #expect(welcome.maxFrameBytes == 4096)
            #expect(connection.peerMaxFrameBytes == 4096)
            // Refused before a byte is written, at once, naming both sizes; the connection is untouched.
            let started = ContinuousClock.now
            await #expect {
                _ = try await connection.request(Self.echo(8000))
            } throws: { error in
                guard case WireError.frameTooLarge(let length, let limit) = error else { return false }
                return length > 8000 && limit == 4096
            }
            #expect(ContinuousClock.now - started < .seconds(5), "the refusal must not wait for the connection to close")
            let reply = try await connection.request(Self.echo(100))
            #expect(reply.body == Self.echo(100))
        }
    }

    @Test func aReplyToARequestNeverSentIsAProtocolViolation() async throws {
        let records = LogRecord()
        let manager = try await ManagerHarness.start(logger: records.logger(level: .warning))
        defer { Task { await manager.stop() } }
        var stray = RawTLSClient.envelope(0, Self.echo(8), replyTo: 999)
        stray.requestID = 0
        var buffer = try RawTLSClient.hello()
        var frame = try RawTLSClient.frame(stray)
        buffer.writeBuffer(&frame)
        let outcome = try await Self.exchange(manager, as: try manager.pki.member(.agent, "cam-stray"), buffer)
        let error = try #require(outcome.errors.last, "no Error: \(outcome.envelopes.map(\.bodyName))")
        #expect(error.code == .unknownRequest && error.message.contains("999"), "\(error.message)")
        #expect(outcome.closed)
        // Unsolicited: it answers no request of the client's.
        #expect(outcome.envelopes.last { if case .error = $0.body { true } else { false } }?.replyTo == 0)
        let logged = try await eventually(timeout: .seconds(5)) {
            !records.warnings(containing: "closing connection", "cam-stray", "999").isEmpty
        }
        #expect(logged, "the manager logs the violation: \(records.all.map(\.text))")
    }

    @Test func trainingATypeWithNoROIsIsRefusedAtOnceByName() async throws {
        let manager = try await ManagerHarness.start()
        defer { Task { await manager.stop() } }
        try await WireClient.withConnection(manager.client(try manager.pki.member(.operator, "carol"))) { connection, _ in
            var start = Loupe_V1_TrainingStart()
            start.inspectionType = "never-uploaded"
            start.timeBudgetSeconds = 5
            await #expect {
                _ = try await connection.request(.trainingStart(start))
            } throws: { error in
                guard case WireError.remote(let code, let message) = error else { return false }
                return code == .notFound && message.contains("never-uploaded") && message.contains("no labelled ROIs")
            }
            // Nothing was queued to fail later.
            let status = try await connection.request(.trainingStatusQuery(Loupe_V1_TrainingStatusQuery()))
            guard case .trainingStatusReply(let reply) = status.body else {
                Issue.record("got \(status.bodyName)")
                return
            }
            #expect(reply.jobs.isEmpty, "\(reply.jobs.map(\.jobID))")
        }
    }

    @Test func refusedRequestsDroppedMessagesAndViolationsAreInTheManagersLog() async throws {
        let records = LogRecord()
        let manager = try await ManagerHarness.start(logger: records.logger(level: .warning))
        defer { Task { await manager.stop() } }
        let camera = try manager.pki.member(.agent, "cam-log")
        var corrupt = try ResourceLimitTests.upload(type: "disc")
        corrupt.contentSha256 = Data(repeating: 7, count: 32)
        let good = try ResourceLimitTests.upload(type: "disc")
        let envelopes = [
            RawTLSClient.envelope(1, .hello(Loupe_V1_Hello.with { $0.protocolVersion = WireProtocol.version })),
            // A refused upload: the camera is told, and so is whoever reads the manager's log.
            RawTLSClient.envelope(2, .roiUpload(corrupt)),
            // A request sent as an event: nobody would hear its acknowledgement, so it is not stored.
            RawTLSClient.envelope(0, .roiUpload(good)),
            // A message the role may not send, as an event: dropped, and logged.
            RawTLSClient.envelope(0, .fleetStatusQuery(Loupe_V1_FleetStatusQuery())),
            RawTLSClient.envelope(0, .modelOffer(Loupe_V1_ModelOffer())),
            // Permission is decided before anything else; the refusal reads as English.
            RawTLSClient.envelope(3, .fleetStatusQuery(Loupe_V1_FleetStatusQuery())),
            RawTLSClient.envelope(0, .goodbye(Loupe_V1_Goodbye())),
        ]
        let outcome = try await Self.exchange(manager, as: camera, try RawTLSClient.frames(envelopes))
        let replies = Self.replies(outcome)
        guard case .error(let refused) = replies[2]?.body, case .error(let forbidden) = replies[3]?.body else {
            Issue.record("expected two Errors, got \(outcome.envelopes.map(\.bodyName))")
            return
        }
        #expect(refused.code == .invalidArgument && refused.message.contains("content_sha256"), "\(refused.message)")
        #expect(
            forbidden.code == .permissionDenied && forbidden.message.hasPrefix("an agent certificate may not send fleet_status_query"),
            "\(forbidden.message)")
        #expect(try await Self.stored(manager, from: "cam-log") == 0, "the upload sent without a request id was stored")
        let logged = try await eventually(timeout: .seconds(5)) {
            !records.warnings(containing: "request refused", "roi_upload", "content_sha256", "cam-log").isEmpty
                && !records.warnings(containing: "request without a request_id dropped", "roi_upload", "cam-log").isEmpty
                && !records.warnings(containing: "dropped", "fleet_status_query", "cam-log").isEmpty
                && !records.warnings(containing: "event not taken", "model_offer", "cam-log").isEmpty
        }
        #expect(logged, "\(records.all.map(\.text).joined(separator: "\n"))")
        // A frame that is not an Envelope: the violation is logged with the connection's peer.
        var garbage = try RawTLSClient.hello()
        garbage.writeInteger(UInt32(4))
        garbage.writeBytes([0xFF, 0xFF, 0xFF, 0xFF])
        _ = try await Self.exchange(manager, as: camera, garbage)
        let violation = try await eventually(timeout: .seconds(5)) {
            !records.warnings(containing: "closing connection", "cam-log", "malformed").isEmpty
        }
        #expect(violation, "\(records.all.map(\.text).joined(separator: "\n"))")
    }

    /// The name rules docs/protocol.md gives for an upload, each refused by name with INVALID_ARGUMENT.
    @Test(arguments: [
        ("inspection_type", "disc/../etc", "inspection_type"),
        ("roi_name", "-hub", "roi_name"),
        ("class_names", "background,scratch,scratch", "unique"),
        ("class_names", "background," + String(repeating: "x", count: 65), "1–64 characters"),
        ("class_names", "background", "2…255"),
    ])
    func uploadsFollowTheDocumentedNameRules(field: String, value: String, named: String) async throws {
        let manager = try await ManagerHarness.start()
        defer { Task { await manager.stop() } }
        var upload = try ResourceLimitTests.upload(type: "disc")
        switch field {
        case "inspection_type": upload.inspectionType = value
        case "roi_name": upload.roiName = value
        default: upload.classNames = value.split(separator: ",").map(String.init)
        }
        let refused = upload
        try await WireClient.withConnection(manager.client(try manager.pki.member(.agent, "cam-names"))) { connection, _ in
            await #expect {
                _ = try await connection.request(.roiUpload(refused))
            } throws: { error in
                guard case WireError.remote(let code, let message) = error else { return false }
                return code == .invalidArgument && message.contains(named)
            }
        }
    }
}
