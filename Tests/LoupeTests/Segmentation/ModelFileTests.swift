import Crypto
import Foundation
import LoupeSegmentation
import Testing

extension SegmentationTests {
    @Suite struct ModelFileTests {
        init() { DNNLRuntime.setThreads(1) }

        static func model() throws -> SegmentationModel {
            var model = SegmentationModel(weights: try ReferenceFixture().weights(prefix: "final/", bufferPrefix: "final/"))
            model.metadata.validationIoU = [0.9, 0.5, 0.25]
            model.metadata.validationMIoU = 0.55
            model.metadata.datasetSHA256 = String(repeating: "ab", count: 32)
            model.metadata.createdAt = Date(timeIntervalSince1970: 1_800_000_000.123)
            model.metadata.version = 7
            model.metadata.parentVersion = 6
            model.metadata.trainingConfigJSON = #"{"passes":3}"#
            return model
        }

        @Test func aSignedModelRoundTripsAndVerifies() throws {
            let model = try Self.model()
            let key = Curve25519.Signing.PrivateKey()
            let data = try ModelFile.encode(model, signingKey: key)
            let (decoded, status) = try ModelFile.decode(data, trustedKeys: [key.publicKey])
            #expect(decoded == model)
            #expect(status == .signed(publicKey: key.publicKey.rawRepresentation))
            // Signing an unsigned file later gives the same payload, now signed.
            let later = try ModelFile.sign(try ModelFile.encode(model), with: key)
            #expect(try ModelFile.decode(later, trustedKeys: [key.publicKey]).0 == model)
        }

        @Test func damagedOrForeignFilesAreRefusedByName() throws {
            let key = Curve25519.Signing.PrivateKey()
            let data = try ModelFile.encode(try Self.model(), signingKey: key)

            func refusal(_ bytes: Data, trusted: [Curve25519.Signing.PublicKey]? = nil) -> String {
                do {
                    _ = try ModelFile.decode(bytes, name: "m.loupe", trustedKeys: trusted)
                    return "accepted"
                } catch {
                    return error.description
                }
            }
            #expect(refusal(data.prefix(data.count / 2)).contains("m.loupe"))
            #expect(refusal(data.prefix(data.count / 2)).contains("truncated"))
            var tampered = data
            tampered[data.count / 2] ^= 0x01
            let tamperedReason = refusal(tampered)
            #expect(tamperedReason.contains("SHA-256 does not match") || tamperedReason.contains("corrupt"), "\(tamperedReason)")
            #expect(refusal(Data("PK\u{3}\u{4}not a model".utf8)).contains("not a Loupe model"))
            #expect(refusal(Data()).contains("empty"))
            #expect(refusal(data, trusted: [Curve25519.Signing.PrivateKey().publicKey]).contains("not a trusted key"))
            #expect(refusal(try ModelFile.encode(try Self.model()), trusted: [key.publicKey]).contains("not signed"))
        }

        @Test func aCalibrationOutOfRangeIsRefusedByName() throws {
            for threshold: Float in [.nan, -0.1, 1.5] {
                var model = try Self.model()
                model.metadata.calibratedThreshold = threshold
                let error = #expect(throws: SegmentationError.self) { try ModelFile.decode(try ModelFile.encode(model), name: "m.loupe") }
                #expect(error?.description.contains("calibrated threshold") == true, "\(String(describing: error))")
            }
            var model = try Self.model()
            model.metadata.calibratedThreshold = 0.5
            // A curve point with figures for two classes, in a model of three.
            model.metadata.calibration = [ThresholdPoint(threshold: 0.5, precision: [1, 1], recall: [1, 1], iou: [1, 1])]
            let error = #expect(throws: SegmentationError.self) { try ModelFile.decode(try ModelFile.encode(model), name: "m.loupe") }
            #expect(error?.description.contains("calibration point") == true, "\(String(describing: error))")
            // Within range, it reads back as written.
            model.metadata.calibration = [
                ThresholdPoint(threshold: 0.5, precision: [1, 0.5, 0.25], recall: [1, 1, 1], iou: [1, 0.5, 0.25])
            ]
            #expect(try ModelFile.decode(try ModelFile.encode(model)).0 == model)
        }

        @Test func anUnknownFormatVersionIsRefused() throws {
            let data = try ModelFile.encode(try Self.model())
            // Field 1 (format_version, varint) is the container's first byte pair: 0x08 0x01.
            var future = data
            let at = ModelFile.magic.count
            #expect(future[at] == 0x08 && future[at + 1] == 0x01)
            future[at + 1] = 0x09
            do {
                _ = try ModelFile.decode(future, name: "future.loupe")
                Issue.record("a version-9 file was accepted")
            } catch {
                #expect(error.description.contains("format version 9 is unknown"))
            }
        }

        @Test func aSignatureOverOtherBytesIsRefused() throws {
            let key = Curve25519.Signing.PrivateKey()
            var a = try Self.model()
            let signedA = try ModelFile.encode(a, signingKey: key)
            a.metadata.version = 8
            let signedB = try ModelFile.encode(a, signingKey: key)
            // B's container with A's signature bytes (the last 64 bytes of each file):
            // the hash matches B's payload, the signature does not.
            var forged = signedB
            forged.replaceSubrange(forged.count - 64..<forged.count, with: signedA.suffix(64))
            #expect(forged != signedB)
            do {
                _ = try ModelFile.decode(forged, name: "forged.loupe", trustedKeys: [key.publicKey])
                Issue.record("a forged signature was accepted")
            } catch {
                #expect(error.description.contains("signature does not match"))
            }
        }
    }
}
