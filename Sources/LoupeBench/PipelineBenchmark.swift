import Foundation
import Logging
public import LoupeAgent
import LoupeCapture
import LoupeImaging
public import LoupeSegmentation
import LoupeVision
import LoupeWire
import ServiceLifecycle

/// The agent's live pipeline on synthetic 1280x1024 frames with two 256x256
/// ROIs: align (+/-15 degrees), crop, segment, judge. The real LivePipeline
/// runs: a capture task feeding a one-frame slot, an align thread taking the
/// newest frame, a segment thread taking the newest aligned ROIs. Frames are rendered before the run and handed
/// over as a camera driver would, at the camera's rate (60 fps by default,
/// above the target, so the rate measured is the pipeline's own); frames it
/// could not take are dropped, as in the field.
public struct PipelineBenchmark {
    public struct Options: Sendable {
        public var width = 1280
        public var height = 1024
        public var seconds = 15.0
        public var frames = 24
        /// The camera's rate: frames are handed over this often (a camera faster than the target).
        public var cameraFramesPerSecond = 60.0
        public var precision: InferencePrecision = InferencePrecision.measured.fastest
        /// oneDNN threads for the segment stage; the align stage has a core of its own.
        public var threads = max(1, ProcessInfo.processInfo.activeProcessorCount - 1)
        /// A trained model file; nil runs an untrained network of the standard shape (same cost per frame).
        public var modelPath: String?
        public init() {}
    }

    public struct Report: Sendable {
        public var statistics: LiveStatistics
        public var seconds: Double
        public var framesPerSecond: Double
        public var modelDescription: String
    }

    public let options: Options
    let report: (String) -> Void

    public init(options: Options, report: @escaping (String) -> Void = { _ in }) {
        self.options = options
        self.report = report
    }

    public func run() async throws -> Report {
        let camera = try SyntheticCamera(
            configuration: .init(width: options.width, height: options.height, maxShift: 40, maxRotationDegrees: 10))
        var images: [Image8] = []
        for index in 0..<options.frames {
            report("rendering frames \(index + 1)/\(options.frames)")
            images.append(camera.render().0.image)
        }
        let (inspector, modelDescription) = try BenchStation.inspector(
            width: options.width, height: options.height, reference: camera.reference,
            modelPath: options.modelPath, precision: options.precision)
        let pipeline = LivePipeline(
            source: try FrameReplay(images: images, origin: "synthetic"), pacing: .seconds(1 / options.cameraFramesPerSecond),
            threads: options.threads,
            inspector: inspector, live: true, logger: Logger(label: "loupe.bench.pipeline", factory: { _ in SwiftLogNoOpLogHandler() }))
        let group = ServiceGroup(services: [pipeline], logger: Logger(label: "loupe.bench", factory: { _ in SwiftLogNoOpLogHandler() }))
        let seconds = options.seconds
        let started = ContinuousClock.now
        var inspectedAtWarmup = 0
        var warmupEnd = started
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            // Warm up (first-frame primitive creation), then measure.
            while pipeline.statistics.framesInspected < 3 { try await Task.sleep(for: .milliseconds(20)) }
            inspectedAtWarmup = pipeline.statistics.framesInspected
            warmupEnd = .now
            while ContinuousClock.now - warmupEnd < .seconds(seconds) {
                try await Task.sleep(for: .milliseconds(250))
                let elapsed = (ContinuousClock.now - warmupEnd).seconds
                report(
                    String(
                        format: "measuring %.0f/%.0f s, %d frames inspected", elapsed, seconds,
                        pipeline.statistics.framesInspected - inspectedAtWarmup))
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        let statistics = pipeline.statistics
        let measured = (ContinuousClock.now - warmupEnd).seconds
        return Report(
            statistics: statistics, seconds: measured, framesPerSecond: Double(statistics.framesInspected - inspectedAtWarmup) / measured,
            modelDescription: modelDescription)
    }
}

/// The station the pipeline benchmarks inspect: the synthetic part's recipe
/// with two 256x256 ROIs, and a model (a trained file, or an untrained
/// network of the standard shape: the same cost per frame).
enum BenchStation {
    static func inspector(
        width w: Int, height h: Int, reference: Image8, modelPath: String?, precision: InferencePrecision
    ) throws -> (Inspector, String) {
        let model: SegmentationModel
        let description: String
        if let path = modelPath {
            model = try ModelFile.read(path: path).0
            description = path
        } else {
            model = SegmentationModel(weights: Weights(configuration: .standard, seed: 1))
            description =
                "untrained U-Net, standard shape (\(UNetConfiguration.standard.baseWidth) wide, depth \(UNetConfiguration.standard.depth))"
        }
        let recipe = Recipe(
            version: 1, inspectionType: "bench", template: PixelRect(x: w / 4, y: h / 4, width: w / 2, height: h / 2),
            rois: [
                RecipeROI(name: "left", rect: PixelRect(x: w * 260 / 1280, y: h * 300 / 1024, width: 256, height: 256)),
                RecipeROI(name: "right", rect: PixelRect(x: w * 760 / 1280, y: h * 460 / 1024, width: 256, height: 256)),
            ],
            confidenceThreshold: 0.5)
        let inspector = try Inspector(
            recipe: recipe, reference: reference, segmenter: try Segmenter(model: model, precision: precision), modelVersion: "bench")
        return (inspector, description)
    }
}
