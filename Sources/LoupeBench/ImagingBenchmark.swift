import Foundation
import LoupeCapture
public import LoupeImaging
import LoupeVision
import LoupeWire

/// `loupe bench imaging`: the per-frame pixel work of the live pipeline on
/// 1280x1024 frames from the synthetic camera, as medians.
public struct ImagingBenchmark: Sendable {
    public struct Row: Sendable, Codable {
        public var name: String
        public var medianMilliseconds: Double
        /// The target from the imaging issue, if it sets one.
        public var targetMilliseconds: Double?

        enum CodingKeys: String, CodingKey {
            case name = "step", medianMilliseconds = "median_ms", targetMilliseconds = "target_ms"
        }
    }

    /// One click of the wand on a planted defect, for a peer to repeat.
    public struct Click: Sendable, Codable {
        public var frame: Int
        public var x: Int
        public var y: Int
        public var label: Int
        /// IoU of Loupe's wand against the defect's class (in a 160x160
        /// window around the click, as in WandTests).
        public var iou: Double
    }

    /// What `loupe bench imaging --json` prints: the figures, and what a
    /// peer needs to repeat the work on the saved frames.
    public struct Result: Sendable, Codable {
        public var rows: [Row]
        public var clicks: [Click]
        public var template = ImagingBenchmark.template
        public var rois = ImagingBenchmark.regions
        public var targetsMet: Bool {
            !rows.contains { row in row.targetMilliseconds.map { row.medianMilliseconds > $0 } ?? false }
        }
        public var meanIoU: Double { clicks.map(\.iou).reduce(0, +) / Double(max(1, clicks.count)) }
    }

    public var repetitions: Int
    /// Where to write the frames (frame-N.jpg, mask-N.png, reference.png) so
    /// a peer (Tests/Reference/imaging_peers.py) can run on the same pixels.
    public var saveDirectory: String?
    private let progress: @Sendable (String) -> Void

    public init(repetitions: Int = 15, saveDirectory: String? = nil, progress: @escaping @Sendable (String) -> Void) {
        self.repetitions = repetitions
        self.saveDirectory = saveDirectory
        self.progress = progress
    }

    /// The template and ROIs the benchmark uses, in reference coordinates.
    public static let template = PixelRect(x: 320, y: 256, width: 640, height: 512)
    public static let regions = [PixelRect(x: 260, y: 300, width: 256, height: 256), PixelRect(x: 760, y: 460, width: 256, height: 256)]

    public func run() throws -> Result {
        let camera = try SyntheticCamera()
        var frames: [SyntheticCamera.Frame] = []
        for index in 0..<repetitions {
            progress("rendering frame \(index + 1)/\(repetitions)")
            frames.append(camera.render().0)
        }
        let jpegs = try frames.map { try JPEGCodec.encode($0.image, quality: 90) }
        let aligner = try Aligner(
            reference: camera.reference, configuration: AlignerConfiguration(template: Self.template, angleRangeDegrees: 15))
        let rois = Self.regions.enumerated().map { RegionOfInterest(name: "roi-\($0.offset + 1)", rect: $0.element) }
        // One click near the middle of each planted defect, as an operator would.
        let clicks: [[(x: Int, y: Int, label: Int)]] = frames.map { frame in
            let width = frame.mask.width
            return MaskTools.blobs(frame.mask).filter { $0.area >= 30 }.sorted { $0.area > $1.area }.map { blob in
                let click = MaskTools.centralPixel(of: blob, width: width, height: frame.mask.height)
                return (click % width, click / width, Int(blob.label))
            }
        }
        if let saveDirectory {
            try FileManager.default.createDirectory(atPath: saveDirectory, withIntermediateDirectories: true)
            try PNGCodec.encode(camera.reference).write(to: URL(fileURLWithPath: saveDirectory + "/reference.png"))
            for (index, frame) in frames.enumerated() {
                try jpegs[index].write(to: URL(fileURLWithPath: saveDirectory + "/frame-\(index).jpg"))
                try PNGCodec.encode(frame.mask).write(to: URL(fileURLWithPath: saveDirectory + "/mask-\(index).png"))
            }
        }
        var rows: [Row] = []
        rows.append(
            Row(
                name: "JPEG decode 1280x1024 grey",
                medianMilliseconds: try time("JPEG decode") { index in
                    _ = try JPEGCodec.decode(jpegs[index])
                }, targetMilliseconds: nil))
        var poses: [SimilarityTransform] = Array(repeating: .identity, count: repetitions)
        rows.append(
            Row(
                name: "align, +/-15 degrees",
                medianMilliseconds: try time("align") { index in
                    poses[index] = try aligner.align(frames[index].image).pose
                }, targetMilliseconds: 15))
        rows.append(
            Row(
                name: "crop two 256x256 ROIs",
                medianMilliseconds: try time("ROI crop") { index in
                    for roi in rois { _ = try roi.crop(frames[index].image, pose: poses[index]) }
                }, targetMilliseconds: nil))
        let wand = Wand()
        var wandClicks: [Click] = []
        rows.append(
            Row(
                name: "wand, one click",
                medianMilliseconds: try time("wand") { index in
                    let frame = frames[index]
                    let click = clicks[index].first ?? (frame.mask.width / 2, frame.mask.height / 2, 0)
                    _ = wand.select(frame.image, x: click.x, y: click.y, tolerance: 0.5)
                }, targetMilliseconds: 150))
        // Its quality on every defect, outside the timing.
        for (index, frame) in frames.enumerated() {
            for click in clicks[index] {
                let selection = wand.select(frame.image, x: click.x, y: click.y, tolerance: 0.5)
                wandClicks.append(
                    Click(
                        frame: index, x: click.x, y: click.y, label: click.label,
                        iou: Self.intersectionOverUnion(selection, frame.mask, label: UInt8(click.label), around: (click.x, click.y))))
            }
        }
        let colors = [RGB(0, 0, 0), RGB(255, 64, 64), RGB(64, 255, 64), RGB(64, 128, 255)]
        rows.append(
            Row(
                name: "overlay 1280x1024 at 0.5",
                medianMilliseconds: try time("overlay") { index in
                    _ = try frames[index].image.overlay(mask: frames[index].mask, colors: colors, opacity: 0.5)
                }, targetMilliseconds: nil))
        return Result(rows: rows, clicks: wandClicks)
    }

    /// IoU of a selection against one class of a mask, in a 160x160 window
    /// around the click (the rest of a 1280x1024 frame would only add
    /// agreement on empty background).
    public static func intersectionOverUnion(_ selection: Image8, _ mask: Image8, label: UInt8, around click: (Int, Int)) -> Double {
        let side = 160
        let x0 = max(0, min(mask.width - side, click.0 - side / 2)), y0 = max(0, min(mask.height - side, click.1 - side / 2))
        var intersection = 0, union = 0
        for y in y0..<(y0 + side) {
            for x in x0..<(x0 + side) {
                let chosen = selection[x, y] != 0, wanted = mask[x, y] == label
                if chosen && wanted { intersection += 1 }
                if chosen || wanted { union += 1 }
            }
        }
        return Double(intersection) / Double(max(1, union))
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
