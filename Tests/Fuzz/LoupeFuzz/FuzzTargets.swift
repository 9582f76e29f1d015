import Foundation
import LoupeFraming
import LoupeImaging
import LoupeProto
import NIOCore
import NIOEmbedded
import SwiftProtobuf

/// What one fuzz input is fed to. The same functions run under libFuzzer
/// (`Tests/Fuzz/run`, built with `LOUPE_FUZZ=1`) and, without it, as a
/// replay of the committed corpus (`LoupeFuzz frames Tests/Fuzz/corpus/frames`),
/// which the test suite runs.
enum FuzzTarget: String, CaseIterable {
    /// Bytes from a peer, in chunks: the frame decoder, then the envelope
    /// decoder (every message type of the protocol). Each envelope that
    /// decodes must encode to a frame that decodes and encodes to the same
    /// bytes.
    case frames
    /// A PNG file from an operator or a camera upload.
    case png
    /// A JPEG file.
    case jpeg

    /// Inputs may ask for at most this much: the decoders' own limits are
    /// tested elsewhere, and a fuzzer wants many small inputs per second.
    static let limits = ImageLimits(maxWidth: 4096, maxHeight: 4096, maxPixels: 4 << 20)

    func run(_ bytes: UnsafeRawBufferPointer) {
        switch self {
        case .png:
            if let image = try? PNGCodec.decode(Data(bytes), limits: Self.limits) { check(image) }
        case .jpeg:
            if let image = try? JPEGCodec.decode(Data(bytes), limits: Self.limits) { check(image) }
        case .frames:
            runFrames(bytes)
        }
    }

    /// A decoded image must be within the limits it was decoded under (a
    /// decompression bomb must be refused, not decoded).
    private func check(_ image: DecodedImage) {
        precondition(
            image.width <= Self.limits.maxWidth && image.height <= Self.limits.maxHeight
                && image.width * image.height <= Self.limits.maxPixels, "decoded \(image.width)x\(image.height), past the limits")
    }

    private func runFrames(_ bytes: UnsafeRawBufferPointer) {
        guard let first = bytes.first else { return }
        // The first byte picks how the rest arrives: in slices of 1 to 256
        // bytes, as TCP may cut it anywhere.
        let slice = Int(first) + 1
        var chunks: [ByteBuffer] = []
        var offset = 1
        while offset < bytes.count {
            let end = min(bytes.count, offset + slice)
            chunks.append(ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: bytes[offset..<end])))
            offset = end
        }
        for envelope in Self.decode(chunks) {
            // Compared as deterministic bytes, not as messages: a double
            // field may hold NaN, and maps have no order on the wire.
            guard let frame = try? EnvelopeEncoder.frame(envelope, limit: 1 << 20) else { continue }
            let again = Self.decode([frame])
            precondition(again.count == 1, "an encoded envelope did not decode again")
            precondition(Self.canonical(again[0]) == Self.canonical(envelope), "an envelope did not survive encoding and decoding")
        }
    }

    static func canonical(_ envelope: Envelope) -> [UInt8]? {
        var options = BinaryEncodingOptions()
        options.useDeterministicOrdering = true
        return try? envelope.serializedBytes(options: options)
    }

    /// The envelopes a receiving connection's pipeline makes of these chunks.
    static func decode(_ chunks: [ByteBuffer]) -> [Envelope] {
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish() }
        do {
            try channel.pipeline.syncOperations.addHandlers([FrameDecoder(maxFrameBytes: 1 << 20, stallTimeout: nil), EnvelopeDecoder()])
        } catch {
            preconditionFailure("cannot build the pipeline: \(error)")
        }
        var envelopes: [Envelope] = []
        for chunk in chunks {
            // A malformed stream fails the channel with a named WireError;
            // nothing more is read from it.
            guard (try? channel.writeInbound(chunk)) != nil else { break }
            while let envelope = try? channel.readInbound(as: Envelope.self) { envelopes.append(envelope) }
        }
        return envelopes
    }
}
