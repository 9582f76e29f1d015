public import LoupeProto
public import NIOCore
import SwiftProtobuf
import Synchronization

/// Turns the frames `FrameDecoder` splits off into `Envelope`s. Bytes that do
/// not parse fail the channel with `WireError.malformedEnvelope`.
public final class EnvelopeDecoder: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = Envelope

    public init() {}

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        do {
            let envelope = try Envelope(serializedBytes: FrameBytes(message: frame))
            context.fireChannelRead(wrapInboundOut(envelope))
        } catch {
            context.fireErrorCaught(WireError.malformedEnvelope(frameLength: frame.readableBytes, reason: "\(error)"))
        }
    }
}

/// Turns an `Envelope` into a frame: its 4-byte big-endian length, then its bytes.
public enum EnvelopeEncoder {
    /// The whole frame, serialized in one pass. An envelope larger than
    /// `limit` (the peer's frame limit) throws `WireError.frameTooLarge`, so
    /// it never reaches the wire. An envelope with nothing set serializes to
    /// no bytes, a frame `FrameDecoder` refuses, so it throws
    /// `WireError.emptyFrame` here instead (found by the frames fuzz target).
    public static func frame(_ envelope: Envelope, limit: Int = WireProtocol.defaultMaxFrameBytes) throws -> ByteBuffer {
        let frame: FrameBytes = try envelope.serializedBytes()
        guard frame.count > 0 else { throw WireError.emptyFrame }
        guard frame.count <= limit else {
            throw WireError.frameTooLarge(length: frame.count, limit: limit)
        }
        return frame.buffer
    }
}

/// The largest frame the peer accepts: the protocol's default until the peer
/// announces its own (`Hello.max_frame_bytes`, `Welcome.max_frame_bytes`).
/// Read by `EnvelopeFramer` on the event loop, set by the connection's task.
public final class PeerFrameLimit: Sendable {
    private let value: Atomic<Int>

    public init(bytes: Int = WireProtocol.defaultMaxFrameBytes) {
        value = Atomic(bytes)
    }

    public var bytes: Int { value.load(ordering: .relaxed) }

    /// Takes what the peer announced (0 means the default), refusing a limit too small for the protocol's own frames.
    public func adopt(announced: UInt32, field: String) throws(WireError) {
        guard announced == 0 || announced >= WireProtocol.minimumMaxFrameBytes else {
            throw .refused(
                code: .invalidArgument,
                message: "\(field) \(announced) is below the protocol's minimum of \(WireProtocol.minimumMaxFrameBytes) bytes")
        }
        value.store(announced == 0 ? WireProtocol.defaultMaxFrameBytes : Int(announced), ordering: .relaxed)
    }
}

/// Frames outbound envelopes on the event loop, next to the TLS encryption
/// that follows, so a large frame is written while it is still in cache. A
/// frame over the peer's announced limit never leaves: its write fails with
/// `WireError.frameTooLarge`.
public final class EnvelopeFramer: ChannelOutboundHandler, RemovableChannelHandler {
    public typealias OutboundIn = Envelope
    public typealias OutboundOut = ByteBuffer

    private let limit: PeerFrameLimit

    public init(limit: PeerFrameLimit) {
        self.limit = limit
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        do {
            context.write(wrapOutboundOut(try EnvelopeEncoder.frame(unwrapOutboundIn(data), limit: limit.bytes)), promise: promise)
        } catch {
            promise?.fail(error)
        }
    }
}
