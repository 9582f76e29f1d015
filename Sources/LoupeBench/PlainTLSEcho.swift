import Foundation
import LoupeWire
import NIOCore
import NIOPosix
import NIOSSL

/// The ceiling for `loupe bench wire`: a NIOSSL server with Loupe's TLS
/// settings (TLS 1.3, mutual authentication, ALPN) that writes back every byte
/// it reads, with no framing or protobuf at all.
final class PlainTLSEcho: Sendable {
    let port: Int
    private let channel: any Channel

    private init(port: Int, channel: any Channel) {
        self.port = port
        self.channel = channel
    }

    static func start(tls: TLSFiles) async throws -> PlainTLSEcho {
        let context = try TLSSettings.serverContext(tls)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    try channel.pipeline.syncOperations.addHandler(EchoHandler())
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        return PlainTLSEcho(port: channel.localAddress!.port!, channel: channel)
    }

    func stop() {
        channel.close(promise: nil)
    }

    /// Writes back whatever arrives, flushing once per read burst.
    private final class EchoHandler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            context.write(data, promise: nil)
        }

        func channelReadComplete(context: ChannelHandlerContext) {
            context.flush()
        }
    }

    /// A raw TLS client sending length-prefixed payloads and reading the
    /// same bytes back.
    struct Client {
        let inbound: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
        let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
        let secondsPerRound: Double

        func roundTrips(payloadBytes: Int, window: Int) async throws -> Int {
            var message = ByteBuffer()
            message.writeInteger(UInt32(payloadBytes))
            message.writeRepeatingByte(0x42, count: payloadBytes)
            let expected = message.readableBytes * window
            var iterator = inbound
            let deadline = ContinuousClock.now + .nanoseconds(Int64(secondsPerRound * 1e9))
            var completed = 0
            while ContinuousClock.now < deadline {
                for _ in 0..<window { try await outbound.write(message) }
                var received = 0
                while received < expected {
                    guard let chunk = try await iterator.next() else { throw WireError.connectionClosed }
                    received += chunk.readableBytes
                }
                completed += window
            }
            return completed
        }
    }

    static func withClient<Result>(
        port: Int, tls: TLSFiles, secondsPerRound: Double = 1, _ body: (Client) async throws -> Result
    ) async throws -> Result {
        let context = try TLSSettings.clientContext(tls)
        let address = try SocketAddress(ipAddress: "127.0.0.1", port: port)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(to: address) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: "localhost"))
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            try await body(Client(inbound: inbound.makeAsyncIterator(), outbound: outbound, secondsPerRound: secondsPerRound))
        }
    }
}
