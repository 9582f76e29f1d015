import Foundation
import LoupeImaging
import LoupeSegmentation
import LoupeVision
import Testing

extension SegmentationTests {
    /// Parts judged by the fail rule over the threshold: escapes and false rejects, by hand, through the trainer and
    /// through the model file.
    @Suite struct PartVerdictsTests {
        /// A 20x20 part: a truth mask with a square of `truthSide` px of `truthClass` at (2, 2), and a prediction with a
        /// square of `predictedSide` px of `predictedClass` at (10, 10) at confidence `confidence`.
        static func part(
            truthSide: Int, truthClass: UInt8 = 1, predictedSide: Int, predictedClass: UInt8 = 1, confidence: Float
        ) -> (Image8, Segmentation) {
            var truth = [UInt8](repeating: 0, count: 400), classes = truth
            var probability = [Float](repeating: 0.99, count: 400)
            for y in 0..<truthSide { for x in 0..<truthSide { truth[(2 + y) * 20 + 2 + x] = truthClass } }
            for y in 0..<predictedSide {
                for x in 0..<predictedSide {
                    classes[(10 + y) * 20 + 10 + x] = predictedClass
                    probability[(10 + y) * 20 + 10 + x] = confidence
                }
            }
            return (
                Image8(validWidth: 20, height: 20, samples: truth),
                Segmentation(width: 20, height: 20, classes: classes, confidence: probability)
            )
        }

        @Test func escapesAndFalseRejectsFollowTheRuleAndTheThreshold() throws {
            var parts = PartVerdicts(classes: 3, rule: FailRule(minimumDefectPixels: 25))
            // A good part (a 4x4 = 16 px truth region is under the rule) that the model rejects for a 6x6 class-2 region at 0.6.
            let (good, rejected) = Self.part(truthSide: 4, predictedSide: 6, predictedClass: 2, confidence: 0.6)
            parts.add(truth: good, rejected)
            // A defective part (6x6 of class 1) the model finds (elsewhere, but the verdict is the part's) at 0.8.
            let (bad, found) = Self.part(truthSide: 6, predictedSide: 5, confidence: 0.8)
            parts.add(truth: bad, found)
            // A defective part of class 2 the model sees only as a 4x4 region: too small to fail it at any threshold.
            let (bad2, missed) = Self.part(truthSide: 7, truthClass: 2, predictedSide: 4, confidence: 0.99)
            parts.add(truth: bad2, missed)
            #expect(parts.goodParts == 1 && parts.defectiveParts == [2, 1, 1])

            let low = try #require(parts.point(at: 0.5))
            #expect(low.escapes == [1, 0, 1], "only the class-2 part escapes at 0.5: \(low)")
            #expect(low.falseRejects == [1, 0, 1], "the good part is rejected for class 2 at 0.5")
            let middle = try #require(parts.point(at: 0.7))
            #expect(middle.escapes == [1, 0, 1] && middle.falseRejects == [0, 0, 0], "the 0.6 region is gone at 0.7: \(middle)")
            let high = try #require(parts.point(at: 0.85))
            #expect(high.escapes == [2, 1, 1] && high.falseRejects == [0, 0, 0], "the 0.8 region is gone at 0.85: \(high)")
            #expect(parts.escapeRate(high) == 1 && parts.falseRejectRate(low) == 1 && parts.escapeRate(low, class: 1) == 0)
            let figures = try #require(parts.figures(at: 0.5))
            #expect(figures.escapeRate == 0.5 && figures.falseRejectRate == 1)
            #expect(
                figures.summary == "escape rate 50.0 % (1 of 2), false-reject rate 100.0 % (1 of 1) at threshold 0.50", "\(figures.summary)"
            )

            // What the live verdict decides is what the tally counted: the same rule on the mask at the threshold.
            for threshold: Float in [0.5, 0.7, 0.85] {
                let live = FailRule(minimumDefectPixels: 25).fails(MaskTools.blobs(rejected.mask(threshold: threshold)))
                #expect(live == (parts.point(at: threshold)!.falseRejects[0] == 1), "at \(threshold)")
            }
        }

        @Test func talliesOfTwoHalvesAddUpAndARestoredTallyIsChecked() throws {
            let rule = FailRule(minimumDefectPixels: 25)
            var whole = PartVerdicts(classes: 2, rule: rule), left = whole, right = whole
            let a = Self.part(truthSide: 6, predictedSide: 6, confidence: 0.7)
            let b = Self.part(truthSide: 2, predictedSide: 8, confidence: 0.4)
            whole.add(truth: a.0, a.1)
            whole.add(truth: b.0, b.1)
            left.add(truth: a.0, a.1)
            right.add(truth: b.0, b.1)
            left.add(right)
            #expect(left == whole)
            let restored = PartVerdicts(
                classes: 2, rule: rule, goodParts: whole.goodParts, defectiveParts: whole.defectiveParts, curve: whole.curve)
            #expect(restored == whole)
            // Counts no tally could make: more escapes than defective parts, a class list of the wrong length.
            var broken = whole.curve
            broken[0].escapes[0] = whole.defectiveParts[0] + 1
            #expect(
                PartVerdicts(classes: 2, rule: rule, goodParts: whole.goodParts, defectiveParts: whole.defectiveParts, curve: broken) == nil
            )
            #expect(PartVerdicts(classes: 3, rule: rule, goodParts: 1, defectiveParts: [1, 1], curve: []) == nil)
        }

        @Test func aTrainedModelCarriesItsPartFiguresAndItsCurveThroughItsFile() throws {
            let data = try ToyData.dataset(count: 24)
            let result = try Trainer(configuration: ToyData.configuration(passes: 4)).train(data)
            let metadata = result.model.metadata
            let parts = try #require(metadata.parts)
            #expect(parts.goodParts + parts.defectiveParts[0] == metadata.validationImages, "every validation image judged once")
            #expect(parts.curve.map(\.threshold) == ConfidenceTally.thresholds)
            let figures = try #require(metadata.partFigures)
            #expect(figures.threshold == metadata.calibratedThreshold)
            #expect(metadata.history.count == result.passes && metadata.history.allSatisfy { $0.validationMIoU != nil })
            #expect(metadata.history.map(\.pass) == Array(1...result.passes))
            let path = NSTemporaryDirectory() + "/parts-\(UUID().uuidString).loupe"
            defer { try? FileManager.default.removeItem(atPath: path) }
            try ModelFile.write(result.model, to: path)
            let (read, _) = try ModelFile.read(path: path)
            #expect(read.metadata.parts == metadata.parts && read.metadata.history == metadata.history)
        }
    }
}
