import Foundation
import LoupeImaging
import LoupeSegmentation
import Testing

extension SegmentationTests {
    /// Precision, recall and IoU over the confidence threshold, and the threshold a trained model carries.
    @Suite struct ThresholdCalibrationTests {
        // Six pixels, background and one defect class.
        static let truth: [UInt8] = [0, 0, 1, 1, 1, 0]
        static let result = Segmentation(width: 6, height: 1, classes: [0, 1, 1, 1, 0, 1], confidence: [0.9, 0.3, 0.8, 0.6, 0.7, 0.95])

        @Test func theFiguresAtAThresholdAreWhatTheLiveMaskAtThatThresholdScores() throws {
            var tally = ConfidenceTally(classes: 2)
            tally.add(truth: Self.truth, Self.result)
            for threshold: Float in [0, 0.05, 0.3, 0.35, 0.5, 0.6, 0.65, 0.8, 0.85, 0.95] {
                // The reference: the mask live inspection would draw at this threshold, scored pixel by pixel.
                var matrix = ConfusionMatrix(classes: 2)
                matrix.add(truth: Self.truth, predicted: Self.result.mask(threshold: threshold).samples)
                let point = tally.point(at: threshold)
                #expect(point.iou == matrix.iou, "IoU at \(threshold): \(point.iou) against the mask's \(matrix.iou)")
            }
            // By hand, at 0.5: the 0.3 call drops out; two of three defect pixels found, one false call left.
            let half = tally.point(at: 0.5)
            #expect(half.precision[1] == 2.0 / 3 && half.recall[1] == 2.0 / 3 && half.iou[1] == 0.5)
            // At 0.85 only the false call (0.95) is left.
            let high = tally.point(at: 0.85)
            #expect(high.precision[1] == 0 && high.recall[1] == 0 && high.iou[1] == 0)
            // The best threshold is the lowest of the plateau where IoU is 0.5 (0.35 to 0.60).
            #expect(abs(tally.best.threshold - 0.35) < 1e-6 && tally.best.defectMeanIoU == 0.5, "\(tally.best)")
            #expect(tally.curve.count == 19 && tally.curve.first?.threshold == 0.05)
        }

        @Test func aDivergedModelsProbabilitiesAreTalliedAsTheLiveMaskKeepsThem() {
            // NaN and infinite probabilities (a model whose weights blew up) must not stop the tally.
            let result = Segmentation(width: 4, height: 1, classes: [1, 1, 1, 0], confidence: [.nan, .infinity, -.infinity, .nan])
            let truth: [UInt8] = [1, 0, 1, 0]
            var tally = ConfidenceTally(classes: 2)
            tally.add(truth: truth, result)
            for threshold: Float in [0.05, 0.5, 0.95] {
                var matrix = ConfusionMatrix(classes: 2)
                matrix.add(truth: truth, predicted: result.mask(threshold: threshold).samples)
                #expect(tally.point(at: threshold).iou == matrix.iou, "at \(threshold)")
            }
        }

        @Test func talliesOfTwoHalvesAddUpToTheTallyOfTheWhole() {
            var whole = ConfidenceTally(classes: 2), left = whole, right = whole
            whole.add(truth: Self.truth, Self.result)
            left.add(truth: Array(Self.truth[0..<3]), Segmentation(width: 3, height: 1, classes: [0, 1, 1], confidence: [0.9, 0.3, 0.8]))
            right.add(truth: Array(Self.truth[3...]), Segmentation(width: 3, height: 1, classes: [1, 0, 1], confidence: [0.6, 0.7, 0.95]))
            left.add(right)
            #expect(left == whole)
        }

        @Test func aTrainedModelCarriesItsCalibratedThresholdThroughItsFile() throws {
            let data = try ToyData.dataset(count: 24)
            let result = try Trainer(configuration: ToyData.configuration(passes: 6)).train(data)
            let metadata = result.model.metadata
            #expect(metadata.calibration.count == 19, "a point per threshold")
            #expect(metadata.calibratedThreshold > 0 && metadata.calibratedThreshold < 1)
            let chosen = try #require(metadata.calibration.first { $0.threshold == metadata.calibratedThreshold })
            #expect(
                metadata.calibration.allSatisfy { $0.defectMeanIoU <= chosen.defectMeanIoU }, "the chosen threshold is the curve's best")
            // At threshold 0.05 nearly every call is kept: the figures agree with the validation IoU the trainer kept.
            let lowest = try #require(metadata.calibration.first)
            #expect(abs(lowest.iou[1] - metadata.validationIoU[1]) < 0.05, "\(lowest.iou) against \(metadata.validationIoU)")
            // The file keeps all of it.
            let path = NSTemporaryDirectory() + "/calibrated-\(UUID().uuidString).loupe"
            defer { try? FileManager.default.removeItem(atPath: path) }
            try ModelFile.write(result.model, to: path)
            let (read, _) = try ModelFile.read(path: path)
            #expect(read.metadata.calibratedThreshold == metadata.calibratedThreshold)
            #expect(read.metadata.calibration == metadata.calibration)
        }

        @Test func aModelTrainedWithoutAValidationSplitHasNoCalibration() throws {
            let data = try ToyData.dataset(count: 8)
            var configuration = ToyData.configuration(passes: 2)
            configuration.validationFraction = 0
            let result = try Trainer(configuration: configuration).train(data)
            #expect(result.model.metadata.calibratedThreshold == 0 && result.model.metadata.calibration.isEmpty)
        }
    }
}
