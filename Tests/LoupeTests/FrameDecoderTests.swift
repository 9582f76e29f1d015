import LoupeProto
import LoupeWire
import NIOCore
import NIOEmbedded
import Testing

@Suite struct FrameDecoderTests {
    private func channel(max: Int = 1024, stall: TimeAmount? = .seconds(2)) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(FrameDecoder(maxFrameBytes: max, stallTimeout: stall))
        return channel
    }

    private func header(_ length: UInt32) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(length)
        return buffer
    }

    @Test func splitsBackToBackFramesInOneRead() throws {
        let channel = try channel()
        var bytes = ByteBuffer()
        for payload in ["a", "bc", "def"] {
            bytes.writeInteger(UInt32(payload.utf8.count))
            bytes.writeString(payload)
        }
        try channel.writeInbound(bytes)
        var received: [String] = []
        while let frame = try channel.readInbound(as: ByteBuffer.self) {
            received.append(String(buffer: frame))
        }
        #expect(received == ["a", "bc", "def"])
        #expect(try channel.finish().isClean)
    }

    @Test func refusesAnOversizedLengthFromTheHeaderAlone() throws {
        let channel = try channel(max: 1024)
        // Only the 4-byte header arrives; the decoder must refuse without waiting for a body.
        #expect(throws: WireError.frameTooLarge(length: 1025, limit: 1024)) {
            try channel.writeInbound(header(1025))
        }
        // Later bytes are dropped rather than buffered.
        try channel.writeInbound(ByteBuffer(repeating: 0, count: 4096))
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
        _ = try? channel.finish()
    }

    /// A header announcing 16 MiB costs no 16 MiB: storage grows with what
    /// arrives (at most twice it), and the frame still comes out whole.
    @Test func storageGrowsWithTheBytesThatArriveNotWithTheAnnouncedLength() throws {
        let decoder = FrameDecoder(maxFrameBytes: 16 << 20, stallTimeout: nil)
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(decoder)
        var start = header(16 << 20)
        start.writeBytes([UInt8](repeating: 7, count: 100))
        try channel.writeInbound(start)
        #expect(decoder.bufferedCapacity < 64 << 10, "\(decoder.bufferedCapacity) bytes held for 104 received")
        var received = 100
        while received < 16 << 20 {
            let chunk = min(1 << 20, (16 << 20) - received)
            try channel.writeInbound(ByteBuffer(repeating: 7, count: chunk))
            received += chunk
            if received < 16 << 20 {
                #expect(decoder.bufferedCapacity <= 2 * (received + 4) + 65536, "\(decoder.bufferedCapacity) held for \(received)")
            }
        }
        let frame = try #require(try channel.readInbound(as: ByteBuffer.self))
        #expect(frame.readableBytes == 16 << 20)
        _ = try channel.finish()
    }

    @Test func refusesAZeroLengthFrame() throws {
        let channel = try channel()
        #expect(throws: WireError.emptyFrame) { try channel.writeInbound(header(0)) }
        _ = try? channel.finish()
    }

    @Test func reportsAFrameWhoseBodyStalls() throws {
        let channel = try channel(stall: .seconds(2))
        var partial = header(100)
        partial.writeRepeatingByte(1, count: 10)
        try channel.writeInbound(partial)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        try channel.throwIfErrorCaught()
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1500))
        #expect(throws: WireError.truncatedFrame(expected: 100, received: 10)) { try channel.throwIfErrorCaught() }
        _ = try? channel.finish()
    }

    @Test func slowButSteadyBodiesAreNotTruncated() throws {
        let channel = try channel(stall: .seconds(2))
        try channel.writeInbound(header(10))
        for _ in 0..<10 {
            channel.embeddedEventLoop.advanceTime(by: .milliseconds(1500))
            try channel.writeInbound(ByteBuffer(repeating: 9, count: 1))
        }
        try channel.throwIfErrorCaught()
        #expect(try channel.readInbound(as: ByteBuffer.self)?.readableBytes == 10)
        _ = try channel.finish()
    }

    @Test func reportsAFrameCutOffByTheConnectionEnding() throws {
        let channel = try channel()
        var partial = header(50)
        partial.writeRepeatingByte(1, count: 20)
        try channel.writeInbound(partial)
        channel.pipeline.fireChannelInactive()
        #expect(throws: WireError.truncatedFrame(expected: 50, received: 20)) { try channel.throwIfErrorCaught() }
        _ = try? channel.finish()
    }

    @Test func malformedBytesAreNamed() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(FrameDecoder())
        try channel.pipeline.syncOperations.addHandler(EnvelopeDecoder())
        var frame = header(5)
        frame.writeBytes([0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        do {
            try channel.writeInbound(frame)
            try channel.throwIfErrorCaught()
            Issue.record("garbage parsed as an Envelope")
        } catch let error as WireError {
            guard case .malformedEnvelope(let length, _) = error else {
                Issue.record("wrong error \(error)")
                return
            }
            #expect(length == 5)
            #expect(error.code == .malformedEnvelope)
        }
        _ = try? channel.finish()
    }
}
