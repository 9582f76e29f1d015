import NIOCore
import SwiftProtobuf

/// Lets SwiftProtobuf serialize straight into, and parse straight from, a
/// NIO `ByteBuffer`, so a frame costs one copy each way instead of three.
///
/// When SwiftProtobuf creates one to serialize into, the buffer starts with
/// the frame's 4-byte big-endian length, followed by the message; `count` and
/// the byte views cover the message only.
struct FrameBytes: SwiftProtobufContiguousBytes {
    private(set) var buffer: ByteBuffer
    private let prefix: Int

    /// Wraps a received frame body (no length prefix) for parsing.
    init(message: ByteBuffer) {
        buffer = message
        prefix = 0
    }

    init(repeating byte: UInt8, count: Int) {
        buffer = ByteBufferAllocator().buffer(capacity: 4 + count)
        buffer.writeInteger(UInt32(truncatingIfNeeded: count))
        if byte == 0 {
            // SwiftProtobuf asks for zeros only to overwrite every byte: skip the fill.
            buffer.moveWriterIndex(forwardBy: count)
        } else {
            buffer.writeRepeatingByte(byte, count: count)
        }
        prefix = 4
    }

    init<Bytes: Sequence>(_ sequence: Bytes) where Bytes.Element == UInt8 {
        let bytes = Array(sequence)
        buffer = ByteBufferAllocator().buffer(capacity: 4 + bytes.count)
        buffer.writeInteger(UInt32(truncatingIfNeeded: bytes.count))
        buffer.writeBytes(bytes)
        prefix = 4
    }

    var count: Int { buffer.readableBytes - prefix }

    func withUnsafeBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        try buffer.withUnsafeReadableBytes { bytes in
            try body(UnsafeRawBufferPointer(rebasing: bytes[prefix...]))
        }
    }

    mutating func withUnsafeMutableBytes<Result>(_ body: (UnsafeMutableRawBufferPointer) throws -> Result) rethrows -> Result {
        let prefix = self.prefix
        return try buffer.withUnsafeMutableReadableBytes { bytes in
            try body(UnsafeMutableRawBufferPointer(rebasing: bytes[prefix...]))
        }
    }
}
