import Foundation
import LoupeProto
import LoupeWire
import NIOCore
import NIOPosix
import NIOSSL
import SwiftProtobuf

/// A TLS client that speaks raw bytes, so tests can send what a real
/// client never would: garbage, oversized headers, half frames, no certificate.
enum RawTLSClient {
    typealias Channel = NIOAsyncChannel<ByteBuffer, ByteBuffer>

    static func connect(
        port: Int, caPath: String, identity: TLSFiles?, alpn: [String] = [WireProtocol.alpn], tlsVersion: TLSVersion = .tlsv13
    ) async throws -> Channel {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = tlsVersion
        configuration.maximumTLSVersion = tlsVersion
        configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caPath))
        configuration.applicationProtocols = alpn
        if let identity {
            configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(identity.cert).map { .certificate($0) }
            configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: identity.key, format: .pem))
        }
        let context = try NIOSSLContext(configuration: configuration)
        return try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: "localhost"))
                    return try Channel(wrappingChannelSynchronously: channel)
                }
            }
    }

    static func frame(_ envelope: Envelope) throws -> ByteBuffer {
        let bytes: [UInt8] = try envelope.serializedBytes()
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(bytes.count))
        buffer.writeBytes(bytes)
        return buffer
    }

    static func hello(id: UInt64 = 1, maxFrameBytes: UInt32 = 0) throws -> ByteBuffer {
        var hello = Loupe_V1_Hello()
        hello.protocolVersion = WireProtocol.version
        hello.softwareVersion = "raw test client"
        hello.maxFrameBytes = maxFrameBytes
        var envelope = Envelope()
        envelope.requestID = id
        envelope.body = .hello(hello)
        return try frame(envelope)
    }

    /// Frames of several envelopes in one buffer: one write, so one TLS record when small.
    static func frames(_ envelopes: [Envelope]) throws -> ByteBuffer {
        var buffer = ByteBuffer()
        for envelope in envelopes {
            var frame = try frame(envelope)
            buffer.writeBuffer(&frame)
        }
        return buffer
    }

    /// An envelope with this request id (0: an event) and body.
    static func envelope(_ requestID: UInt64, _ body: Envelope.OneOf_Body, replyTo: UInt64 = 0) -> Envelope {
        var envelope = Envelope()
        envelope.requestID = requestID
        envelope.replyTo = replyTo
        envelope.body = body
        return envelope
    }

    /// Splits received bytes into envelopes, whatever the chunking.
    struct FrameReader {
        private var pending = ByteBuffer()

        mutating func append(_ chunk: ByteBuffer) throws -> [Envelope] {
            var chunk = chunk
            pending.writeBuffer(&chunk)
            var envelopes: [Envelope] = []
            while let length = pending.getInteger(at: pending.readerIndex, as: UInt32.self), pending.readableBytes >= 4 + Int(length) {
                pending.moveReaderIndex(forwardBy: 4)
                envelopes.append(try Envelope(serializedBytes: Array(pending.readSlice(length: Int(length))!.readableBytesView)))
            }
            pending.discardReadBytes()
            return envelopes
        }
    }

    /// What came back before the server closed the connection (or the time ran out).
    struct Outcome: Sendable {
        var envelopes: [Envelope] = []
        var closed = false
        var failure: String?

        var errors: [Loupe_V1_Error] {
            envelopes.compactMap { if case .error(let error) = $0.body { return error } else { return nil } }
        }
    }

    /// Reads frames until the connection closes or `timeout` passes.
    static func collect(_ inbound: NIOAsyncChannelInboundStream<ByteBuffer>, timeout: Duration = .seconds(10)) async -> Outcome {
        await withTaskGroup(of: Outcome?.self) { group in
            group.addTask {
                var outcome = Outcome()
                var reader = FrameReader()
                do {
                    for try await chunk in inbound {
                        outcome.envelopes += try reader.append(chunk)
                    }
                    outcome.closed = true
                } catch {
                    outcome.closed = true
                    outcome.failure = "\(error)"
                }
                return outcome
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next()!
            group.cancelAll()
            return first ?? Outcome(closed: false)
        }
    }
}
