public import NIOCore

/// Splits the inbound byte stream into frames: a 4-byte big-endian length,
/// then that many bytes.
///
/// The length is checked against `maxFrameBytes` as soon as the header is
/// read, before anything of the body is buffered. A frame whose body stops
/// arriving for `stallTimeout`, or whose connection ends mid-frame, fails
/// with `WireError.truncatedFrame`. After an error the decoder drops all
/// further input, since the stream can no longer be split reliably.
public final class FrameDecoder: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer

    private enum State {
        case waitingForHeader
        case waitingForFrame(length: Int)
        case failed
    }

    private let maxFrameBytes: Int
    private let stallTimeout: TimeAmount?
    private var state = State.waitingForHeader
    private var buffer: ByteBuffer?
    private var lastProgress = NIODeadline.uptimeNanoseconds(0)
    private var stallCheck: Scheduled<Void>?

    /// - Parameters:
    ///   - maxFrameBytes: largest body accepted, in bytes.
    ///   - stallTimeout: how long a started frame may go without new bytes.
    public init(maxFrameBytes: Int = WireProtocol.defaultMaxFrameBytes, stallTimeout: TimeAmount? = .seconds(30)) {
        self.maxFrameBytes = maxFrameBytes
        self.stallTimeout = stallTimeout
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .failed = state { return }
        var incoming = unwrapInboundIn(data)
        if buffer == nil {
            buffer = incoming
        } else {
            buffer!.writeBuffer(&incoming)
        }
        lastProgress = context.eventLoop.now
        do {
            while let frame = try nextFrame() {
                context.fireChannelRead(wrapInboundOut(frame))
            }
        } catch {
            fail(context: context, error)
            return
        }
        if let current = buffer, current.readableBytes == 0 {
            buffer = nil  // release storage between frames
        } else {
            buffer?.discardReadBytes()
        }
        scheduleStallCheckIfNeeded(context: context)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        stallCheck?.cancel()
        if case .waitingForFrame(let length) = state {
            fail(context: context, WireError.truncatedFrame(expected: length, received: buffer?.readableBytes ?? 0))
        } else if case .waitingForHeader = state, let pending = buffer?.readableBytes, pending > 0 {
            fail(context: context, WireError.truncatedFrame(expected: 4, received: pending))
        }
        context.fireChannelInactive()
    }

    /// Bytes of storage held for a partly received frame (for tests and metrics).
    public var bufferedCapacity: Int { buffer?.capacity ?? 0 }

    public func handlerRemoved(context: ChannelHandlerContext) {
        stallCheck?.cancel()
    }

    private func nextFrame() throws -> ByteBuffer? {
        guard buffer != nil else { return nil }
        if case .waitingForHeader = state {
            guard let length = buffer!.readInteger(as: UInt32.self) else { return nil }
            guard length > 0 else { throw WireError.emptyFrame }
            guard length <= maxFrameBytes else { throw WireError.frameTooLarge(length: Int(length), limit: maxFrameBytes) }
            state = .waitingForFrame(length: Int(length))
        }
        guard case .waitingForFrame(let length) = state else { return nil }
        guard let frame = buffer!.readSlice(length: length) else {
            // The buffer grows with the bytes that arrive, never to an
            // announced size a peer has not sent (a header alone must not
            // cost 16 MiB). Once half the frame is in, it grows to the whole
            // frame at once, so a large frame is copied at most once more.
            let readable = buffer!.readableBytes
            if readable * 2 >= length, buffer!.capacity - buffer!.readerIndex < length {
                buffer!.reserveCapacity(minimumWritableBytes: length - readable)
            }
            return nil
        }
        state = .waitingForHeader
        return frame
    }

    private func fail(context: ChannelHandlerContext, _ error: any Error) {
        state = .failed
        buffer = nil
        stallCheck?.cancel()
        context.fireErrorCaught(error)
    }

    private func scheduleStallCheckIfNeeded(context: ChannelHandlerContext) {
        guard let stallTimeout, stallCheck == nil else { return }
        let pending: Bool
        switch state {
        case .waitingForFrame: pending = true
        case .waitingForHeader: pending = (buffer?.readableBytes ?? 0) > 0
        case .failed: pending = false
        }
        guard pending else { return }
        stallCheck = context.eventLoop.assumeIsolated().scheduleTask(deadline: lastProgress + stallTimeout) {
            self.stallCheck = nil
            self.checkStall(context: context)
        }
    }

    private func checkStall(context: ChannelHandlerContext) {
        guard let stallTimeout else { return }
        let expected: Int
        switch state {
        case .waitingForFrame(let length): expected = length
        case .waitingForHeader:
            guard (buffer?.readableBytes ?? 0) > 0 else { return }
            expected = 4
        case .failed: return
        }
        if context.eventLoop.now - lastProgress >= stallTimeout {
            fail(context: context, WireError.truncatedFrame(expected: expected, received: buffer?.readableBytes ?? 0))
        } else {
            scheduleStallCheckIfNeeded(context: context)
        }
    }
}
