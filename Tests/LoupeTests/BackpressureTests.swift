import Foundation
import LoupePKI
import LoupeProto
import LoupeWire
import NIOCore
import SwiftProtobuf
import Testing
import LoupeTesting

/// A slow reader must make the writer wait, not buffer without bound.
@Suite struct BackpressureTests {
    @Test func aWriterWaitsForASlowReaderAndLosesNothing() async throws {
        let pki = try TestPKI()
        let messages = 200
        let payload = Data(repeating: 0x5A, count: 1 << 20)
        let sent = Counter()
        // The raw client only reads after its first two frames, so the server
        // hears nothing from it: an idle timeout well past the transfer time,
        // even on a loaded machine, keeps this about backpressure alone.
        let server = try await WireServer.bind(
            WireServerConfiguration(
                host: "127.0.0.1", port: 0, tls: try pki.manager(),
                connection: ConnectionSettings(idleTimeout: .seconds(120))))
        let serving = Task {
            try await server.run(handshake: { _, _ in Loupe_V1_Welcome() }) { connection, _ in
                // Answer, then push 200 MiB of events at a reader that is not reading.
                Task {
                    var echo = Loupe_V1_Echo()
                    echo.payload = payload
                    for _ in 0..<messages {
                        try await connection.send(event: .echo(echo))
                        sent.increment()
                    }
                }
                return .echo(Loupe_V1_Echo())
            }
        }
        let raw = try await RawTLSClient.connect(
            port: server.localAddress.port!, caPath: pki.caPath, identity: try pki.member(.agent, "cam-slow"))
        let (stalled, received) = try await raw.executeThenClose { inbound, outbound in
            try await outbound.write(RawTLSClient.hello(id: 1))
            var flood = Envelope()
            flood.requestID = 2
            flood.body = .echo(Loupe_V1_Echo())
            try await outbound.write(RawTLSClient.frame(flood))
            // Read nothing for two seconds.
            try await Task.sleep(for: .seconds(2))
            let stalled = sent.current
            // Now read everything.
            var received = 0
            var reader = RawTLSClient.FrameReader()
            for try await chunk in inbound {
                for envelope in try reader.append(chunk) {
                    if envelope.requestID == 0, case .echo(let echo) = envelope.body, echo.payload.count == payload.count {
                        received += 1
                    }
                }
                if received == messages { break }
            }
            return (stalled, received)
        }
        // Kernel socket buffers hold a few MiB; the rest must wait in the writer.
        #expect(stalled < 40, "the server wrote \(stalled) MiB while the client read nothing")
        #expect(received == messages)
        // The writer counts a message once its send returns, which can be just after the reader has it.
        #expect(try await eventually(timeout: .seconds(10)) { sent.current == messages }, "\(sent.current) of \(messages) sent")
        await server.shutdown()
        try await serving.value
    }
}
