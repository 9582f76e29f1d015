#if !LOUPE_FUZZ
import Foundation
import LoupeFraming
import LoupeImaging
import LoupeProto
import NIOCore
import SwiftProtobuf

/// The committed seed corpus (Tests/Fuzz/corpus): valid inputs the fuzzer
/// starts from and mutates. Written by `LoupeFuzz --write-seeds DIR`.
enum Seeds {
    static func write(to directory: String) throws {
        let gradient = try Image8(width: 24, height: 16, samples: (0..<(24 * 16)).map { UInt8(truncatingIfNeeded: $0 * 7) })
        let colour = try Image8(width: 8, height: 8, channels: 3, samples: (0..<(8 * 8 * 3)).map { UInt8(truncatingIfNeeded: $0 * 13) })
        let deep = try Image16(width: 8, height: 6, samples: (0..<48).map { UInt16($0 * 1361) })
        let mask = try Image8(width: 24, height: 16, samples: (0..<(24 * 16)).map { $0 % 24 > 12 ? 1 : 0 })
        let png = [
            ("gray8.png", try PNGCodec.encode(gradient)), ("rgb8.png", try PNGCodec.encode(colour)),
            ("gray16.png", try PNGCodec.encode(deep)), ("mask.png", try PNGCodec.encode(mask)),
        ]
        let jpeg = [("gray.jpg", try JPEGCodec.encode(gradient, quality: 90)), ("rgb.jpg", try JPEGCodec.encode(colour, quality: 75))]

        var hello = Envelope()
        hello.requestID = 1
        hello.hello = .with {
            $0.protocolVersion = 1; $0.softwareVersion = "loupe 0.1"; $0.capabilities = ["roi-upload"]; $0.maxFrameBytes = 1 << 20
        }
        var heartbeat = Envelope()
        heartbeat.heartbeat = .with {
            $0.sentAtUnixMs = 1_790_000_000_000; $0.sequence = 7
        }
        var status = Envelope()
        status.requestID = 2
        status.agentStatus = .with {
            $0.framesPerSecond = 24.5; $0.latencyP50Ms = 12; $0.passCount = 900; $0.failCount = 3; $0.diskFreeBytes = 1 << 34
        }
        var upload = Envelope()
        upload.requestID = 3
        upload.roiUpload = .with {
            $0.contentSha256 = Data(repeating: 0xAB, count: 32)
            $0.inspectionType = "part"
            $0.roiName = "left"
            $0.capturedAtUnixMs = 1_790_000_000_000
            $0.recipeVersion = "r1"
            $0.imagePng = png[0].1
            $0.maskPng = png[3].1
        }
        var chunk = Envelope()
        chunk.requestID = 4
        chunk.modelChunk = .with {
            $0.modelVersion = "part-v2"; $0.offset = 65536; $0.data = Data(repeating: 0x5A, count: 64); $0.last = true
        }
        // Each frames seed: one slicing byte, then one or more frames.
        func stream(_ slice: UInt8, _ envelopes: [Envelope]) throws -> Data {
            var data = Data([slice])
            for envelope in envelopes { data.append(contentsOf: Array(buffer: try EnvelopeEncoder.frame(envelope))) }
            return data
        }
        let frames = [
            ("hello.bin", try stream(255, [hello])),
            ("heartbeat-sliced.bin", try stream(0, [heartbeat])),
            ("status-then-upload.bin", try stream(16, [status, upload])),
            ("chunk.bin", try stream(63, [chunk])),
            ("all.bin", try stream(7, [hello, heartbeat, status, upload, chunk])),
        ]
        for (target, files) in [("png", png), ("jpeg", jpeg), ("frames", frames)] {
            let folder = directory + "/" + target
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            for (name, data) in files { try data.write(to: URL(fileURLWithPath: folder + "/" + name)) }
        }
    }
}
#endif
