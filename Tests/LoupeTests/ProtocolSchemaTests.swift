import Crypto
import Foundation
import LoupeProto
import LoupeWire
import NIOCore
import NIOEmbedded
import Testing
import LoupeStorage

@Suite struct ProtocolSchemaTests {
    @Test func generatedCodeMatchesEveryProtoFile() throws {
        let folder = Repository.root + "/Proto"
        let protos = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".proto") }
        #expect(!protos.isEmpty)
        for name in protos {
            let data = try #require(FileManager.default.contents(atPath: folder + "/" + name))
            let digest = SHA256.hash(data: data).hexString
            #expect(
                ProtoSources.sha256[name] == digest,
                "Proto/\(name) changed since its Swift was generated: run Proto/generate and commit the result"
            )
        }
        #expect(Set(ProtoSources.sha256.keys) == Set(protos), "generated code exists for a .proto that is gone")
    }

    @Test func samplesCoverEveryEnvelopeBody() throws {
        let text = try String(contentsOfFile: Repository.root + "/Proto/loupe.proto", encoding: .utf8)
        let oneof = try #require(text.range(of: "oneof body {"))
        let end = try #require(text[oneof.upperBound...].range(of: "}"))
        let declared = text[oneof.upperBound..<end.lowerBound]
            .split(separator: "\n")
            .compactMap { line -> String? in
                let words = line.trimmingCharacters(in: .whitespaces).split(separator: " ")
                guard words.count >= 4, words[2] == "=" else { return nil }
                return String(words[1])
            }
        let sampled = SampleMessages.all.map(\.name)
        #expect(Set(declared) == Set(sampled))
        #expect(declared.count == 37)
    }

    @Test(arguments: SampleMessages.all)
    func everyMessageRoundTripsThroughTheFrameCodec(body: Envelope.OneOf_Body) throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(FrameDecoder())
        try channel.pipeline.syncOperations.addHandler(EnvelopeDecoder())
        var envelope = Envelope()
        envelope.requestID = 77
        envelope.replyTo = 5
        envelope.body = body
        let frame = try EnvelopeEncoder.frame(envelope)
        #expect(frame.getInteger(at: frame.readerIndex, as: UInt32.self) == UInt32(frame.readableBytes - 4))
        // Deliver the frame one byte at a time: reassembly must not depend on chunking.
        for index in 0..<frame.readableBytes {
            try channel.writeInbound(frame.getSlice(at: frame.readerIndex + index, length: 1)!)
        }
        let decoded = try #require(try channel.readInbound(as: Envelope.self))
        #expect(decoded == envelope)
        _ = try channel.finish()
    }

    @Test func anEnvelopeOverThePeersLimitIsNeverFramed() throws {
        var echo = Loupe_V1_Echo()
        echo.payload = Data(count: 2000)
        var envelope = Envelope()
        envelope.body = .echo(echo)
        #expect(throws: WireError.frameTooLarge(length: 2006, limit: 1024)) {
            try EnvelopeEncoder.frame(envelope, limit: 1024)
        }
    }
}
