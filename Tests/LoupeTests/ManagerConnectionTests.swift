import Foundation
import LoupePKI
import LoupeProto
import LoupeWire
import NIOCore
import Synchronization
import Testing
import LoupeTesting

/// The manager's mutual-TLS front door, over real sockets on loopback with
/// certificates made in the test.
@Suite struct ManagerConnectionTests {
    private static func echo(_ connection: WireConnection, bytes: Int = 64) async throws -> Bool {
        var echo = Loupe_V1_Echo()
        echo.payload = Data((0..<bytes).map { UInt8($0 & 0xFF) })
        let reply = try await connection.request(.echo(echo))
        guard case .echo(let back) = reply.body else { return false }
        return back.payload == echo.payload
    }

    @Test func agentAndOperatorCompleteTheHandshake() async throws {
        let manager = try await ManagerHarness.start()
        defer { Task { await manager.stop() } }
        let agent = try manager.pki.member(.agent, "cam-1")
        let welcome = try await WireClient.withConnection(manager.client(agent)) { connection, welcome in
            let echoed = try await Self.echo(connection)
            #expect(echoed)
            #expect(connection.peer?.role == .manager)
            return welcome
        }
        #expect(welcome.peerIdentity == "cam-1")
        #expect(welcome.peerRole == .agent)
        #expect(welcome.managerID == "test-plant")
        #expect(welcome.protocolVersion == WireProtocol.version)

        let alice = try manager.pki.member(.operator, "alice")
        let cameras = try await WireClient.withConnection(manager.client(alice)) { connection, welcome in
            #expect(welcome.peerRole == .operator)
            let reply = try await connection.request(.fleetStatusQuery(Loupe_V1_FleetStatusQuery()))
            guard case .fleetStatusReply(let fleet) = reply.body else { return [Loupe_V1_CameraStatus]() }
            return fleet.cameras
        }
        #expect(cameras.map(\.cameraID) == ["cam-1"])
        #expect(cameras.first?.online == false, "cam-1 said goodbye before the query")
    }

    @Test(
        arguments: SampleMessages.all.filter {
            switch $0 {
            case .hello, .heartbeat, .goodbye, .error: return false
            default: return true
            }
        })
    func everyRequestMessageRoundTripsOverMutualTLS(body: Envelope.OneOf_Body) async throws {
        let pki = try TestPKI()
        let server = try await WireServer.bind(WireServerConfiguration(host: "127.0.0.1", port: 0, tls: try pki.manager()))
        let serving = Task {
            try await server.run(
                handshake: { _, _ in Loupe_V1_Welcome() },
                handler: { _, envelope in envelope.body }
            )
        }
        let client = WireClientConfiguration(host: "localhost", port: server.localAddress.port!, tls: try pki.member(.agent, "cam-rt"))
        let reply = try await WireClient.withConnection(client) { connection, _ in
            try await connection.request(body)
        }
        await server.shutdown()
        try await serving.value
        #expect(reply.body == body)
        #expect(reply.replyTo != 0)
    }

    enum BadFrame: String, CaseIterable, Sendable {
        case oversized, garbage, truncated, empty

        var bytes: ByteBuffer {
            var buffer = ByteBuffer()
            switch self {
            case .oversized:
                buffer.writeInteger(UInt32(64 << 20))
                buffer.writeRepeatingByte(0, count: 100)
            case .garbage:
                buffer.writeInteger(UInt32(8))
                buffer.writeBytes([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
            case .truncated:
                buffer.writeInteger(UInt32(1000))
                buffer.writeRepeatingByte(0x0A, count: 10)
            case .empty:
                buffer.writeInteger(UInt32(0))
            }
            return buffer
        }

        var expected: Loupe_V1_Error.Code {
            switch self {
            case .oversized: return .frameTooLarge
            case .garbage, .empty: return .malformedEnvelope
            case .truncated: return .truncatedFrame
            }
        }
    }

    @Test(arguments: BadFrame.allCases)
    func badFramesAreRefusedByNameWhileAnotherClientIsServed(bad: BadFrame) async throws {
        // The truncated frame is refused after the stall timeout (0.75 x idle = 2.25 s);
        // the well-behaved client heartbeats every 0.3 s, far inside the idle timeout
        // even when the machine is loaded.
        let manager = try await ManagerHarness.start(idleTimeoutSeconds: 3)
        defer { Task { await manager.stop() } }
        let agent = try manager.pki.member(.agent, "cam-good")
        let bystander = try manager.pki.member(.agent, "cam-bad")
        var client = manager.client(agent)
        client.connection.heartbeatInterval = .milliseconds(300)
        try await WireClient.withConnection(client) { connection, _ in
            let echoed = try await Self.echo(connection)
            #expect(echoed)
            let raw = try await RawTLSClient.connect(port: manager.port, caPath: manager.pki.caPath, identity: bystander)
            let outcome = try await raw.executeThenClose { inbound, outbound in
                try await outbound.write(RawTLSClient.hello())
                try await outbound.write(bad.bytes)
                return await RawTLSClient.collect(inbound)
            }
            #expect(outcome.closed, "the server must close the connection after a bad frame")
            let error = try #require(outcome.errors.last, "no Error frame before close; got \(outcome.envelopes.map(\.bodyName))")
            #expect(error.code == bad.expected, "\(error.message)")
            #expect(!error.message.isEmpty)
            // The well-behaved client is still served.
            let echoedAfter = try await Self.echo(connection)
            #expect(echoedAfter)
        }
    }

    @Test func silentPeersAreClosedByTheIdleTimeout() async throws {
        // Heartbeats every 0.3 s and a 3 s idle timeout: several heartbeats fit before the close, even under load (the
        // Welcome goes out from the task pool, which a loaded suite start once held for most of a 2 s timeout).
        let manager = try await ManagerHarness.start(heartbeatSeconds: 0.3, idleTimeoutSeconds: 3)
        defer { Task { await manager.stop() } }
        let raw = try await RawTLSClient.connect(
            port: manager.port, caPath: manager.pki.caPath, identity: try manager.pki.member(.agent, "cam-quiet"))
        let started = ContinuousClock.now
        let outcome = try await raw.executeThenClose { inbound, outbound in
            try await outbound.write(RawTLSClient.hello())
            return await RawTLSClient.collect(inbound)
        }
        #expect(outcome.closed)
        #expect(outcome.envelopes.contains { if case .welcome = $0.body { true } else { false } })
        #expect(
            outcome.envelopes.contains { if case .heartbeat = $0.body { true } else { false } }, "the manager sends heartbeats while idle")
        #expect(outcome.errors.last?.code == .idleTimeout)
        #expect(ContinuousClock.now - started < .seconds(10), "a 3 s idle timeout must close the connection, not wait on the peer")
    }

    /// When other work holds every thread of the Swift task pool, heartbeats
    /// sent from a task wait behind it and the peer closes a healthy
    /// connection as idle; they go out from the event loop instead. The
    /// client here runs its tasks on one thread of its own, which the test
    /// then holds, so the rest of the suite keeps the shared pool.
    @Test func heartbeatsGoOutWhileTheClientsTaskThreadIsBusy() async throws {
        let pki = try TestPKI()
        let server = try await WireServer.bind(
            WireServerConfiguration(
                host: "127.0.0.1", port: 0, tls: try pki.manager(),
                connection: ConnectionSettings(heartbeatInterval: .seconds(5), idleTimeout: .seconds(60))
            ))
        let accepted = Mutex<WireConnection?>(nil)
        let serving = Task {
            try await server.run(
                handshake: { connection, _ in
                    accepted.withLock { $0 = connection }
                    return Loupe_V1_Welcome()
                },
                handler: { _, envelope in envelope.body }
            )
        }
        var client = WireClientConfiguration(host: "localhost", port: server.localAddress.port!, tls: try pki.member(.agent, "cam-busy"))
        client.connection.heartbeatInterval = .milliseconds(100)
        // The handshake and the first echo only show the link works; at the start of a loaded suite run (seen: more
        // than 10 s for the Hello's reply) they may wait longer than a client's defaults. The hold is measured apart.
        client.connectTimeout = .seconds(60)
        client.connection.requestTimeout = .seconds(60)
        // The server's own heartbeats (every 5 s) are not what is measured; a starved suite start must not close the link.
        client.connection.idleTimeout = .seconds(60)
        let thread = OneThreadExecutor()
        let worstSilence = try await withTaskExecutorPreference(thread) {
            try await WireClient.withConnection(client) { connection, _ -> Duration in
                #expect(try await Self.echo(connection))
                let serverSide = try #require(accepted.withLock { $0 })
                // Sampled from a plain thread between 0.5 s and 1.3 s into a 1.5 s hold.
                let probe = SilenceProbe(of: serverSide)
                thread.holdCurrentThread(seconds: 1.5)
                return probe.worst()
            }
        }
        await server.shutdown()
        try await serving.value
        // Heartbeats every 0.1 s: sent from the task thread, they stopped for
        // the whole hold and the server heard nothing for 1.3 s and more.
        #expect(
            worstSilence < .milliseconds(700), "the server heard nothing from the client for \(worstSilence) while its task thread was busy"
        )
    }

    /// A frame error is named by the server's event loop, not by its read
    /// loop on the task pool: here the server's one task thread is held by a
    /// request's handler, and the truncated frame that follows must still be
    /// refused as truncated (after the 2.25 s stall), not left to the 3 s
    /// idle timeout (seen in a loaded run, when the pool was busy).
    @Test func aFrameErrorIsNamedWhileTheServersTaskThreadIsBusy() async throws {
        let pki = try TestPKI()
        let server = try await WireServer.bind(
            WireServerConfiguration(
                host: "127.0.0.1", port: 0, tls: try pki.manager(),
                connection: ConnectionSettings(heartbeatSeconds: 1, idleTimeoutSeconds: 3)
            ))
        let thread = OneThreadExecutor()
        let serving = Task(executorPreference: thread) {
            try await server.run(handshake: { _, _ in Loupe_V1_Welcome() }) { _, envelope in
                thread.holdCurrentThread(seconds: 5)
                return envelope.body
            }
        }
        let raw = try await RawTLSClient.connect(
            port: server.localAddress.port!, caPath: pki.caPath, identity: try pki.member(.agent, "cam-stuck"))
        let outcome = try await raw.executeThenClose { inbound, outbound in
            try await outbound.write(RawTLSClient.hello())
            try await outbound.write(RawTLSClient.frame(RawTLSClient.envelope(2, .echo(Loupe_V1_Echo()))))
            try await outbound.write(BadFrame.truncated.bytes)
            return await RawTLSClient.collect(inbound)
        }
        await server.shutdown()
        try await serving.value
        #expect(outcome.closed)
        #expect(outcome.errors.map(\.code) == [.truncatedFrame], "\(outcome.errors.map(\.message))")
    }

    @Test func aClientWithoutALoupeALPNIsRefused() async throws {
        let manager = try await ManagerHarness.start()
        defer { Task { await manager.stop() } }
        let raw = try await RawTLSClient.connect(
            port: manager.port, caPath: manager.pki.caPath, identity: try manager.pki.member(.agent, "cam-h2"), alpn: ["h2"])
        let outcome = try await raw.executeThenClose { inbound, outbound in
            try? await outbound.write(RawTLSClient.hello())
            return await RawTLSClient.collect(inbound)
        }
        #expect(outcome.closed)
        #expect(!outcome.envelopes.contains { if case .welcome = $0.body { true } else { false } })
        #expect(outcome.errors.last?.code == .protocolVersionMismatch, "\(outcome.errors)")
        #expect(outcome.errors.last?.message.contains("loupe/1") == true)
    }

    @Test func aThousandRequestsInFlightOnOneConnectionAreAllAnswered() async throws {
        let manager = try await ManagerHarness.start()
        defer { Task { await manager.stop() } }
        let agent = try manager.pki.member(.agent, "cam-busy")
        let answered = try await WireClient.withConnection(manager.client(agent)) { connection, _ in
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for index in 0..<1000 {
                    group.addTask {
                        var echo = Loupe_V1_Echo()
                        echo.payload = Data("request \(index)".utf8)
                        let reply = try await connection.request(.echo(echo))
                        guard case .echo(let back) = reply.body else { return false }
                        return back.payload == echo.payload
                    }
                }
                var matched = 0
                for try await ok in group where ok { matched += 1 }
                return matched
            }
        }
        #expect(answered == 1000)
    }

    @Test func aRequestWithoutAReplyTimesOutAfterItsOwnLimit() async throws {
        let pki = try TestPKI()
        let server = try await WireServer.bind(WireServerConfiguration(host: "127.0.0.1", port: 0, tls: try pki.manager()))
        let serving = Task {
            try await server.run(handshake: { _, _ in Loupe_V1_Welcome() }) { _, _ in
                try? await Task.sleep(for: .seconds(5))
                return nil
            }
        }
        let client = WireClientConfiguration(host: "localhost", port: server.localAddress.port!, tls: try pki.member(.agent, "cam-wait"))
        let (outcome, waited) = try await WireClient.withConnection(client) { connection, _ -> (WireError?, Duration) in
            // Timed around the request alone: connecting and closing vary with the machine's load.
            let started = ContinuousClock.now
            do {
                _ = try await connection.request(.echo(Loupe_V1_Echo()), timeout: .milliseconds(400))
                return (nil, ContinuousClock.now - started)
            } catch let error as WireError {
                return (error, ContinuousClock.now - started)
            }
        }
        #expect(outcome == .requestTimedOut(seconds: 0.4))
        #expect(waited < .seconds(4), "the handler would have answered after 5 s")
        await server.shutdown()
        try await serving.value
    }

    @Test func aProtocolVersionMismatchGetsAClearError() async throws {
        let manager = try await ManagerHarness.start()
        defer { Task { await manager.stop() } }
        let agent = try manager.pki.member(.agent, "cam-future")
        await #expect {
            try await WireClient.withConnection(manager.client(agent, protocolVersion: 2)) { _, _ in }
        } throws: { error in
            guard case WireError.remote(let code, let message) = error else { return false }
            return code == .protocolVersionMismatch && message.contains("version 2") && message.contains("version 1")
        }
    }
}

/// Runs the tasks that prefer it on one serial queue, so a test can hold
/// that one thread without starving the shared task pool.
final class OneThreadExecutor: TaskExecutor {
    private let queue = DispatchQueue(label: "loupe.test.one-thread-executor")

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        queue.async { job.runSynchronously(on: executor) }
    }

    /// Blocks the calling thread, which must be this executor's.
    func holdCurrentThread(seconds: Double) {
        dispatchPrecondition(condition: .onQueue(queue))
        Thread.sleep(forTimeInterval: seconds)
    }
}

/// Watches, from a plain thread, how long a connection goes without hearing
/// from its peer: sampled every 50 ms from 0.5 s to 1.3 s after it starts.
final class SilenceProbe: Sendable {
    private let longest = Mutex(Duration.zero)
    private let done = DispatchSemaphore(value: 0)

    init(of connection: WireConnection) {
        Thread.detachNewThread { [self] in
            Thread.sleep(forTimeInterval: 0.5)
            for _ in 0..<16 {
                let silence = ContinuousClock.now - connection.lastHeard
                longest.withLock { $0 = max($0, silence) }
                Thread.sleep(forTimeInterval: 0.05)
            }
            done.signal()
        }
    }

    /// The longest silence seen; blocks until sampling is over.
    func worst() -> Duration {
        done.wait()
        return longest.withLock { $0 }
    }
}
