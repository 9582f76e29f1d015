import Foundation
import LoupeImaging
import LoupeSegmentation
import Testing

extension SegmentationTests {
    @Suite struct InferenceTests {
        let fixture: ReferenceFixture

        init() throws {
            DNNLRuntime.setThreads(1)
            fixture = try ReferenceFixture()
        }

        /// Batch norm folded into the convolutions, ReLU fused: the logits PyTorch gives in eval mode.
        @Test func foldedInferenceMatchesPyTorchEvalMode() throws {
            let model = SegmentationModel(weights: try fixture.weights(prefix: "final/", bufferPrefix: "final/"))
            let segmenter = try Segmenter(model: model)
            let batch = fixture.batch
            let reference = fixture["eval_logits"].values
            let perImage = batch.channels * batch.height * batch.width
            let perLogits = model.configuration.classes * batch.height * batch.width
            var worst: Float = 0
            for n in 0..<batch.count {
                let logits = try segmenter.logits(
                    planar: Array(batch.images[n * perImage..<(n + 1) * perImage]), width: batch.width, height: batch.height)
                worst = max(worst, largestDifference(logits, Array(reference[n * perLogits..<(n + 1) * perLogits])).difference)
            }
            print("folded fp32 inference: largest logit difference from PyTorch eval \(worst)")
            #expect(worst <= 1e-4)
        }

        /// On a CPU without AVX-512, asking for bf16 is refused by name, not with oneDNN's "unimplemented".
        @Test(.enabled(if: !DNNLRuntime.canRunBF16, "this CPU runs bf16 (bf16InferenceStaysCloseToFP32 covers it)"))
        func bf16IsRefusedByNameWithoutAVX512() throws {
            let model = SegmentationModel(weights: try fixture.weights(prefix: "final/", bufferPrefix: "final/"))
            #expect { _ = try Segmenter(model: model, precision: .bf16) } throws: { error in
                "\(error)".contains("bf16 inference needs AVX-512") && "\(error)".contains(DNNLRuntime.cpuISA)
            }
        }

        /// bf16 stays close to fp32 and agrees on almost every pixel's class.
        @Test(
            .enabled(
                if: DNNLRuntime.canRunBF16,
                "this CPU has no AVX-512, so oneDNN 2.6 has no bf16 kernel (bf16IsRefusedByNameWithoutAVX512 covers it)"))
        func bf16InferenceStaysCloseToFP32() throws {
            let model = SegmentationModel(weights: try fixture.weights(prefix: "final/", bufferPrefix: "final/"))
            let fp32 = try Segmenter(model: model, precision: .fp32)
            let bf16 = try Segmenter(model: model, precision: .bf16)
            let batch = fixture.batch
            let input = Array(batch.images[0..<batch.height * batch.width])
            let a = try fp32.logits(planar: input, width: batch.width, height: batch.height)
            let b = try bf16.logits(planar: input, width: batch.width, height: batch.height)
            let (difference, scale) = largestDifference(b, a)
            print("bf16 vs fp32: largest logit difference \(difference) (logits up to \(scale))")
            #expect(difference <= 0.1 * max(1, scale))
            #expect(difference > 0, "bf16 should not be bit-identical to fp32; the reduced-precision path did not run")
        }

        /// Any size works: inputs are padded to a multiple of 2^depth and the result cropped back.
        @Test func oddSizesArePaddedAndCroppedBack() throws {
            let model = SegmentationModel(weights: try fixture.weights(prefix: "final/", bufferPrefix: "final/"))
            let segmenter = try Segmenter(model: model)
            var generator = SeededGenerator(seed: 7)
            let image = try Image8(width: 37, height: 29, samples: (0..<(37 * 29)).map { _ in UInt8(generator.below(256)) })
            let result = try segmenter.segment(image)
            #expect(result.width == 37 && result.height == 29 && result.classes.count == 37 * 29)
            #expect(result.confidence.allSatisfy { $0 >= 1 / 3 - 1e-5 && $0 <= 1 })
            // Thresholds only ever remove defect pixels.
            let loose = result.mask(threshold: 0).samples.filter { $0 != 0 }.count
            let strict = result.mask(threshold: 0.9).samples.filter { $0 != 0 }.count
            let none = result.mask(threshold: 1.01).samples.filter { $0 != 0 }.count
            #expect(loose >= strict && none == 0)
            #expect(loose == result.classes.filter { $0 != 0 }.count)
        }
    }
}
