import Foundation
import LoupeImaging
import LoupeSegmentation
import Testing

extension SegmentationTests {
    /// The recipe's loss: class weights over the pixels the sampling draws; hard example mining in the cross-entropy
    /// (which pixels count, and that the gradient is the loss's).
    @Suite struct LossTests {
        @Test func classWeightsCountThePixelsTheSamplingDraws() throws {
            // Three good parts and one with 10 px of class 1, 100 px each.
            var items: [LabelledImage] = []
            for index in 0..<4 {
                var mask = [UInt8](repeating: 0, count: 100)
                if index == 3 { for p in 0..<10 { mask[p] = 1 } }
                items.append(
                    try LabelledImage(
                        name: "part-\(index)", image: Image8(validWidth: 10, height: 10, fill: 128),
                        mask: Image8(validWidth: 10, height: 10, samples: mask), classes: 2))
            }
            let set = SegmentationDataset(items: items, classes: 2)
            // Raw pixels: sqrt(390 / 10).
            let raw = Trainer.classWeights(set, repeats: [1, 1, 1, 1], cap: 10)
            #expect(raw[0] == 1 && abs(raw[1] - Float(39.0.squareRoot())) < 1e-5, "\(raw)")
            // Repeat factors draw the defective part twice as often (0.8, 0.8, 0.8, 1.6): sqrt(384 / 16).
            let repeats = Trainer.repeatFactors(set, threshold: 1)
            #expect(repeats.map { ($0 * 10).rounded() / 10 } == [0.8, 0.8, 0.8, 1.6], "\(repeats)")
            let drawn = Trainer.classWeights(set, repeats: repeats, cap: 10)
            #expect(abs(drawn[1] - Float(24.0.squareRoot())) < 1e-4, "\(drawn)")
            #expect(Trainer.classWeights(set, repeats: repeats, cap: 3) == [1, 3])
            #expect(Trainer.classWeights(set, repeats: repeats, cap: 1) == [1, 1], "a cap of 1 turns weighting off")
        }

        /// 16 pixels of two classes, one image: 12 easy ones (true class's probability 0.90 to 0.99, all different)
        /// and 4 hard ones (about 0.2).
        static let labels: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 1]
        static let margins: [Float] = [4.6, 4.4, 4.2, 4.0, 3.8, 3.6, 3.4, 3.2, 3.0, 2.8, 2.6, 2.4, -1.3, -1.4, -1.5, -1.6]
        static var logits: [Float] {
            // Class 0's logits then class 1's (NCHW); the margin favours the true class.
            let first = zip(labels, margins).map { $0 == 0 ? $1 : 0 }
            let second = zip(labels, margins).map { $0 == 1 ? $1 : 0 }
            return first + second
        }

        static func loss(_ logits: [Float], _ configuration: LossConfiguration) -> (value: LossValue, gradient: [Float]) {
            SegmentationLoss.evaluate(logits: logits, labels: labels, batch: 1, classes: 2, pixels: 16, configuration: configuration)
        }

        @Test func onlyPixelsBelowTheProbabilityCountAndAtLeastTheMinimumShare() {
            let all = Self.loss(Self.logits, LossConfiguration(diceWeight: 0))
            let mined = Self.loss(Self.logits, LossConfiguration(diceWeight: 0, hardPixelProbability: 0.7))
            func pixelGradient(_ g: [Float], _ p: Int) -> Float { abs(g[p]) + abs(g[16 + p]) }
            #expect((0..<12).allSatisfy { pixelGradient(mined.gradient, $0) == 0 }, "easy pixels give no gradient")
            #expect((12..<16).allSatisfy { pixelGradient(mined.gradient, $0) > 0 })
            #expect((0..<16).allSatisfy { pixelGradient(all.gradient, $0) > 0 }, "without mining every pixel counts")
            // The mined loss is the mean over the four hard pixels: larger than the mean over all sixteen.
            let hard = (12..<16).map { log(1 + exp(Double(Self.margins[$0]) * -1)) }.reduce(0, +) / 4
            #expect(abs(Double(mined.value.crossEntropy) - hard) < 1e-4 && mined.value.crossEntropy > all.value.crossEntropy)
            // A minimum share of half the pixels keeps the four hard ones and the four hardest of the easy ones.
            let half = Self.loss(Self.logits, LossConfiguration(diceWeight: 0, hardPixelProbability: 0.7, hardPixelMinimumShare: 0.5))
            let kept = (0..<16).filter { pixelGradient(half.gradient, $0) > 0 }
            #expect(kept == [8, 9, 10, 11, 12, 13, 14, 15], "\(kept)")
        }

        @Test func theMinedLossesGradientIsItsDerivative() {
            let configuration = LossConfiguration(diceWeight: 1, hardPixelProbability: 0.7, hardPixelMinimumShare: 0.25)
            let analytic = Self.loss(Self.logits, configuration).gradient
            for index in [0, 5, 9, 12, 15, 16 + 3, 16 + 13] {
                var up = Self.logits, down = Self.logits
                up[index] += 1e-2
                down[index] -= 1e-2
                let numeric = (Self.loss(up, configuration).value.total - Self.loss(down, configuration).value.total) / 2e-2
                #expect(abs(numeric - analytic[index]) < 2e-3, "logit \(index): \(numeric) against \(analytic[index])")
            }
        }
    }
}
