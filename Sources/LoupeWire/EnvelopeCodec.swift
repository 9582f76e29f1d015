import LoupeProto
import NIOCore
import SwiftProtobuf

/// Turns frames into `Envelope`s and `Envelope`s into length-prefixed frames.
///
/// Sits above `FrameDecoder`. Bytes that do not parse fail the channel with
/// `WireError.malformedEnvelope`. An outbound envelope larger than the peer's
/// frame limit fails the write with `WireError.frameTooLarge`, so an oversized
/// message never reaches the wire.
public final class EnvelopeCodec: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = Envelope
    public typealias OutboundIn = Envelope
    public typealias OutboundOut = ByteBuffer

    private let maxOutboundFrameBytes: Int

    public init(maxOutboundFrameBytes: Int = WireProtocol.defaultMaxFrameBytes) {
        self.maxOutboundFrameBytes = maxOutboundFrameBytes
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        do {
            let envelope = try Envelope(serializedBytes: FrameBytes(message: frame))
            context.fireChannelRead(wrapInboundOut(envelope))
        } catch {
            context.fireErrorCaught(WireError.malformedEnvelope(frameLength: frame.readableBytes, reason: "\(error)"))
        }
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let envelope = unwrapOutboundIn(data)
        do {
            let frame: FrameBytes = try envelope.serializedBytes()
            guard frame.count <= maxOutboundFrameBytes else {
                throw WireError.frameTooLarge(length: frame.count, limit: maxOutboundFrameBytes)
            }
            context.write(wrapOutboundOut(frame.buffer), promise: promise)
        } catch {
            promise?.fail(error)
        }
    }
}
