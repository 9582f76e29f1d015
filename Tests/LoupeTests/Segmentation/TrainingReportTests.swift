import Foundation
import LoupeImaging
import LoupeSegmentation
import Testing

extension SegmentationTests {
    /// The training report: what it draws from a trained model and a scored split, and the files it writes.
    @Suite struct TrainingReportTests {
        @Test func aReportDrawsTheCurvesTheMatrixAndTheWorstImagesAndWritesThem() throws {
            let data = try ToyData.dataset(count: 24)
            var trained = try Trainer(configuration: ToyData.configuration(passes: 3)).train(data).model
            // A class name an attacker might give a class: it must reach the page as text.
            trained.classes = [
                ClassInfo(name: "background", color: 0), ClassInfo(name: "<script>alert(1)</script>", color: 0xFF0000),
                ClassInfo(name: "scratch & dent", color: 0x00FF00),
            ]
            let threshold = TrainingReport(title: "", model: trained).reportThreshold
            #expect(threshold == trained.metadata.calibratedThreshold && threshold > 0)
            let assessment = try Trainer.assess(trained, on: data, scoredAt: threshold)
            #expect(assessment.worst.count <= data.count && !assessment.worst.isEmpty)
            #expect(zip(assessment.worst, assessment.worst.dropFirst()).allSatisfy { $0.defectIoU <= $1.defectIoU }, "worst first")
            let worst = try TrainingReport.worstImages(trained, on: data, assessment: assessment, count: 3, threshold: threshold)
            #expect(worst.count == 3 && worst.map(\.fileName) == ["worst-01.png", "worst-02.png", "worst-03.png"])
            guard case .rgb8(let strip) = try PNGCodec.decode(worst[0].png) else {
                Issue.record("a worst image is an RGB PNG")
                return
            }
            let item = try data.image(at: assessment.worst[0].index)
            #expect(strip.width == 3 * item.image.width + 8 && strip.height == item.image.height)

            let report = TrainingReport(
                title: "toy on train", model: trained,
                evaluation: TrainingReport.Evaluation(split: "train", images: data.count, assessment: assessment, worst: worst))
            let html = report.html()
            #expect(
                !html.contains("<script>") && html.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && html.contains("scratch &amp; dent"))
            // Loss and mIoU per pass, PR and IoU for each of two defect classes, the parts, and the confusion grid.
            #expect(
                html.components(separatedBy: "<svg").count - 1 == 2 + 2 * 2 + 1 + 1,
                "\(html.components(separatedBy: "<svg").count - 1) charts")
            #expect(html.components(separatedBy: "class=\"cell\"").count - 1 == 9, "a 3x3 confusion grid")
            #expect(html.contains(String(format: "calibrated %.2f", threshold)), "the chosen threshold is marked")
            #expect(!html.contains("style=\""), "no inline style: the agent's policy would block it")

            let directory = NSTemporaryDirectory() + "/report-\(UUID().uuidString)"
            defer { try? FileManager.default.removeItem(atPath: directory) }
            try report.write(to: directory)
            let files = Set(try FileManager.default.contentsOfDirectory(atPath: directory))
            #expect(files == ["index.html", "report.css", "worst-01.png", "worst-02.png", "worst-03.png"])
        }

        @Test func aModelWithoutAValidationSplitSaysWhatItCannotShow() throws {
            let data = try ToyData.dataset(count: 8)
            var configuration = ToyData.configuration(passes: 2)
            configuration.validationFraction = 0
            let model = try Trainer(configuration: configuration).train(data).model
            let html = TrainingReport(title: "no validation", model: model).html()
            #expect(html.contains("none (no validation split)") && html.contains("No parts were judged"))
            #expect(html.components(separatedBy: "<svg").count - 1 == 1, "only the loss curve")
        }
    }
}
