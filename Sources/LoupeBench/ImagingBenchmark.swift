import Foundation
import LoupeCapture
import LoupeImaging
import LoupeVision
import LoupeWire

/// `loupe bench imaging`: the per-frame pixel work of the live pipeline on
/// 1280x1024 frames from the synthetic camera, as medians.
public struct ImagingBenchmark: Sendable {
    public struct Row: Sendable {
        public var name: String
        public var medianMilliseconds: Double
        /// The target from the imaging issue, if it sets one.
        public var targetMilliseconds: Double?
    }

    public var repetitions: Int
    private let progress: @Sendable (String) -> Void

    public init(repetitions: Int = 15, progress: @escaping @Sendable (String) -> Void) {
        self.repetitions = repetitions
        self.progress = progress
    }

    public func run() throws -> [Row] {
        let camera = try SyntheticCamera()
        var frames: [SyntheticCamera.Frame] = []
        for index in 0..<repetitions {
            progress("rendering frame \(index + 1)/\(repetitions)")
            frames.append(camera.render().0)
        }
        let jpegs = try frames.map { try JPEGCodec.encode($0.image, quality: 90) }
        let template = PixelRect(x: 320, y: 256, width: 640, height: 512)
        let aligner = try Aligner(reference: camera.reference, configuration: AlignerConfiguration(template: template, angleRangeDegrees: 15))
        let rois = [
            RegionOfInterest(name: "left", rect: PixelRect(x: 260, y: 300, width: 256, height: 256)),
            RegionOfInterest(name: "right", rect: PixelRect(x: 760, y: 460, width: 256, height: 256)),
        ]
        var rows: [Row] = []
        rows.append(Row(name: "JPEG decode 1280x1024 grey", medianMilliseconds: try time("JPEG decode") { index in
            _ = try JPEGCodec.decode(jpegs[index])
        }, targetMilliseconds: nil))
        var poses: [SimilarityTransform] = Array(repeating: .identity, count: repetitions)
        rows.append(Row(name: "align, +/-15 degrees", medianMilliseconds: try time("align") { index in
            poses[index] = try aligner.align(frames[index].image).pose
        }, targetMilliseconds: 15))
        rows.append(Row(name: "crop two 256x256 ROIs", medianMilliseconds: try time("ROI crop") { index in
            for roi in rois { _ = try roi.crop(frames[index].image, pose: poses[index]) }
        }, targetMilliseconds: nil))
        let wand = Wand()
        rows.append(Row(name: "wand, one click", medianMilliseconds: try time("wand") { index in
            let frame = frames[index]
            let click = frame.mask.samples.firstIndex { $0 != 0 } ?? (frame.mask.width * frame.mask.height / 2)
            _ = wand.select(frame.image, x: click % frame.mask.width, y: click / frame.mask.width, tolerance: 0.5)
        }, targetMilliseconds: 150))
        let colors = [RGB(0, 0, 0), RGB(255, 64, 64), RGB(64, 255, 64), RGB(64, 128, 255)]
        rows.append(Row(name: "overlay 1280x1024 at 0.5", medianMilliseconds: try time("overlay") { index in
            _ = try frames[index].image.overlay(mask: frames[index].mask, colors: colors, opacity: 0.5)
        }, targetMilliseconds: nil))
        return rows
    }

    private func time(_ name: String, _ body: (Int) throws -> Void) throws -> Double {
        var samples: [Double] = []
        for index in 0..<repetitions {
            progress("\(name): \(index + 1)/\(repetitions)")
            let start = ContinuousClock.now
            try body(index)
            samples.append((ContinuousClock.now - start).seconds * 1000)
        }
        return median(samples)
    }
}
