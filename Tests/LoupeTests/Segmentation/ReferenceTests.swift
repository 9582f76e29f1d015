import Foundation
import LoupeSegmentation
import Testing

extension SegmentationTests {
    /// Loupe's U-Net against PyTorch, the llm.c way: the same network, weights
    /// and batch give the same logits, loss, gradients and AdamW trajectory.
    @Suite struct ReferenceTests {
        let fixture: ReferenceFixture

        init() throws {
            DNNLRuntime.setThreads(1)
            fixture = try ReferenceFixture()
        }

        @Test func logitsLossAndEveryGradientMatchPyTorch() throws {
            let weights = try fixture.weights()
            let engine = try TrainingEngine(weights: weights, loss: LossConfiguration(classWeights: fixture["class_weights"].values))
            let (loss, logits, gradients) = try engine.gradients(fixture.batch)

            let logitDifference = largestDifference(logits, fixture["logits"].values)
            print("logits: largest difference \(logitDifference.difference) (values up to \(logitDifference.scale))")
            #expect(logitDifference.difference <= 1e-4 * max(1, logitDifference.scale))

            let referenceLoss = fixture["loss"].values[0]
            print("loss: Loupe \(loss.total), PyTorch \(referenceLoss), difference \(abs(loss.total - referenceLoss))")
            #expect(abs(loss.total - referenceLoss) <= 1e-5 * max(1, abs(referenceLoss)))

            var worst: (name: String, relative: Float) = ("", 0)
            for (parameter, gradient) in zip(weights.parameters, gradients) {
                let (difference, scale) = largestDifference(gradient, fixture["grad/" + parameter.name].values)
                let relative = difference / max(scale, 1e-6)
                if relative > worst.relative { worst = (parameter.name, relative) }
                #expect(relative <= 1e-3, "gradient of \(parameter.name): largest difference \(difference) against values up to \(scale)")
            }
            print("gradients: \(gradients.count) tensors, worst relative difference \(worst.relative) (\(worst.name))")
        }

        @Test func fiveAdamWStepsFollowPyTorch() throws {
            let optimizer = fixture["optimizer"].values
            let engine = try TrainingEngine(
                weights: try fixture.weights(),
                loss: LossConfiguration(classWeights: fixture["class_weights"].values),
                optimizer: AdamWConfiguration(learningRate: optimizer[0], weightDecay: optimizer[1]))
            var losses: [Float] = []
            for _ in 0..<5 {
                losses.append(try engine.step(fixture.batch, learningRate: optimizer[0]).total)
            }
            let reference = fixture["adamw_losses"].values
            let (difference, _) = largestDifference(losses, reference)
            print("AdamW losses: Loupe \(losses), PyTorch \(reference), largest difference \(difference)")
            #expect(difference <= 1e-4)

            let final = try fixture.weights(prefix: "final/", bufferPrefix: "final/")
            var worst: Float = 0
            for (mine, theirs) in zip(engine.weights.parameters + engine.weights.buffers, final.parameters + final.buffers) {
                let (difference, scale) = largestDifference(mine.values, theirs.values)
                worst = max(worst, difference)
                // Adam moves each weight by up to the learning rate (1e-2) per step
                // whatever the gradient's size, so a float32 rounding of a
                // near-zero gradient can shift a weight by a fraction of a step:
                // half a step is the bound. Running variances come from oneDNN's
                // float32 batch statistics (PyTorch's are float64 here).
                let tolerance: Float = 5e-3
                #expect(
                    difference <= tolerance * max(1, scale),
                    "\(mine.name) after 5 steps: largest difference \(difference) against values up to \(scale)")
            }
            print("weights and running statistics after 5 steps: largest difference \(worst)")
        }
    }
}
