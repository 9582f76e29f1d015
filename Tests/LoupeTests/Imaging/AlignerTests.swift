import Foundation
import LoupeCapture
import LoupeImaging
import LoupeVision
import Testing

@Suite struct AlignerTests {
    /// Distance between where two poses put a reference point, in pixels.
    private func positionError(_ a: SimilarityTransform, _ b: SimilarityTransform, at point: (Double, Double)) -> Double {
        let p = a.apply(point.0, point.1), q = b.apply(point.0, point.1)
        return ((p.x - q.x) * (p.x - q.x) + (p.y - q.y) * (p.y - q.y)).squareRoot()
    }

    private func angleErrorDegrees(_ a: SimilarityTransform, _ b: SimilarityTransform) -> Double {
        abs(a.angle - b.angle) * 180 / .pi
    }

    private func smallCamera(seed: UInt64) throws -> SyntheticCamera {
        try SyntheticCamera(configuration: .init(width: 480, height: 384, maxShift: 20, maxRotationDegrees: 12, seed: seed))
    }

    @Test func theSyntheticCameraRefusesSizesItCannotDrawAPartIn() {
        #expect(throws: CaptureError.self) { try SyntheticCamera(configuration: .init(width: 100, height: 80)) }
        #expect(throws: CaptureError.self) { try SyntheticCamera(configuration: .init(noise: -1)) }
    }

    @Test func theSyntheticCameraIsDeterministicAndLabelsWhatItPlants() throws {
        let a = try smallCamera(seed: 9), b = try smallCamera(seed: 9)
        var labelled = 0
        for _ in 0..<4 {
            let (first, _) = a.render()
            let (second, _) = b.render()
            #expect(first.image == second.image && first.mask == second.mask && first.pose == second.pose)
            #expect(first.mask.samples.allSatisfy { $0 <= 3 })
            labelled += first.mask.samples.filter { $0 > 0 }.count
        }
        #expect(labelled > 0, "four frames planted no defect")
        let (other, _) = try smallCamera(seed: 10).render()
        #expect(other.pose != a.render().0.pose)
    }

    @Test func recoversShiftAndRotationOnSyntheticFrames() throws {
        let camera = try smallCamera(seed: 3)
        let template = PixelRect(x: 120, y: 96, width: 240, height: 192)
        let aligner = try Aligner(
            reference: camera.reference, configuration: AlignerConfiguration(template: template, angleRangeDegrees: 15))
        let center = (Double(template.x + template.width / 2), Double(template.y + template.height / 2))
        var worstShift = 0.0, worstAngle = 0.0
        for _ in 0..<6 {
            let (frame, _) = camera.render()
            let found = try aligner.align(frame.image)
            #expect(found.aligned, "score \(found.score)")
            worstShift = max(worstShift, positionError(found.pose, frame.pose, at: center))
            worstAngle = max(worstAngle, angleErrorDegrees(found.pose, frame.pose))
        }
        print("aligner on synthetic frames: worst position error \(worstShift) px, worst angle error \(worstAngle) degrees")
        #expect(worstShift <= 0.5, "worst position error \(worstShift) px")
        #expect(worstAngle <= 0.5, "worst angle error \(worstAngle) degrees")
    }

    @Test func recoversKnownWarpsOfNEUSegImages() throws {
        guard FileManager.default.fileExists(atPath: NEUSeg.root) else {
            print("skipped: NEU-Seg not found at \(NEUSeg.root)")
            return
        }
        let names = try FileManager.default.contentsOfDirectory(atPath: NEUSeg.root + "/images/test").sorted()
        var generator = SeededGenerator(seed: 5)
        var worstShift = 0.0, worstAngle = 0.0, tried = 0
        for name in names.prefix(40) where tried < 8 {
            let image = try ImageFile.read(NEUSeg.root + "/images/test/" + name).gray8
            let template = PixelRect(x: 50, y: 50, width: 100, height: 100)
            guard
                let aligner = try? Aligner(reference: image, configuration: AlignerConfiguration(template: template, angleRangeDegrees: 10))
            else { continue }
            tried += 1
            let truth = SimilarityTransform.rotation(
                Double.random(in: -8...8, using: &generator) * .pi / 180, about: (99.5, 99.5),
                shift: (Double.random(in: -8...8, using: &generator), Double.random(in: -8...8, using: &generator))
            )
            let moved = try image.warped(by: truth, width: 200, height: 200, fill: 128)
            let found = try aligner.align(moved)
            worstShift = max(worstShift, positionError(found.pose, truth, at: (99.5, 99.5)))
            worstAngle = max(worstAngle, angleErrorDegrees(found.pose, truth))
        }
        print("aligner on NEU-Seg: worst position error \(worstShift) px, worst angle error \(worstAngle) degrees over \(tried) images")
        #expect(tried == 8)
        #expect(worstShift <= 0.5, "worst position error \(worstShift) px on NEU-Seg")
        #expect(worstAngle <= 0.5, "worst angle error \(worstAngle) degrees on NEU-Seg")
    }

    @Test func aFrameWithoutThePartIsNotAligned() throws {
        let camera = try smallCamera(seed: 4)
        let aligner = try Aligner(
            reference: camera.reference,
            configuration: AlignerConfiguration(template: PixelRect(x: 120, y: 96, width: 240, height: 192), minScore: 0.5))
        var noise = try Image8(width: 480, height: 384)
        var generator = SeededGenerator(seed: 1)
        for index in noise.samples.indices { noise.samples[index] = UInt8.random(in: 0...255, using: &generator) }
        let found = try aligner.align(noise)
        print("aligner on noise: score \(found.score)")
        #expect(!found.aligned, "score \(found.score) on noise")
    }

    @Test func roiCropsFollowThePartAndMatchThePlantedDefects() throws {
        let camera = try SyntheticCamera(configuration: .init(width: 480, height: 384, defectsPerFrame: 3...4, seed: 12))
        let template = PixelRect(x: 120, y: 96, width: 240, height: 192)
        let aligner = try Aligner(reference: camera.reference, configuration: AlignerConfiguration(template: template))
        let roi = RegionOfInterest(name: "plate", rect: camera.partRect)
        var intersection = 0, union = 0
        for _ in 0..<3 {
            let (frame, _) = camera.render()
            let found = try aligner.align(frame.image)
            let cropped = try roi.cropMask(frame.mask, pose: found.pose)
            let planted = try frame.referenceMask.cropped(to: camera.partRect)
            for (a, b) in zip(cropped.samples, planted.samples) {
                if a > 0 && a == b { intersection += 1 }
                if a > 0 || b > 0 { union += 1 }
            }
        }
        let iou = Double(intersection) / Double(max(1, union))
        print("ROI crops vs planted defects: IoU \(iou)")
        #expect(union > 0)
        #expect(iou >= 0.85, "ROI crops of the frame mask match the planted defects with IoU \(iou)")
    }

    @Test func aRotatedROIIsCutAlongItsOwnAxes() throws {
        var reference = try Image8(width: 100, height: 100)
        for y in 0..<100 { for x in 0..<100 { reference[x, y] = UInt8(x + y) } }
        let roi = RegionOfInterest(name: "tilted", centerX: 50, centerY: 50, width: 21, height: 11, angleDegrees: 90)
        let crop = try roi.crop(reference, pose: .identity)
        #expect(crop.width == 21 && crop.height == 11)
        // Turned 90 degrees, the ROI's x axis runs down the reference image.
        #expect(crop[10, 5] == reference[50, 50])
        #expect(abs(Int(crop[20, 5]) - Int(reference[50, 60])) <= 1)
    }
}
