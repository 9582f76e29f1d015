import Foundation
import Logging
import LoupeAgent
import LoupeCapture
import LoupeImaging
public import LoupeSegmentation
import LoupeTesting
import LoupeVision
import LoupeWire
import ServiceLifecycle

/// Triggered inspection through a GenICam camera: software trigger to result,
/// at 1280x1024 with two 256x256 ROIs, through the real path (Aravis, GVSP,
/// the live pipeline, the segmenter). The camera is a real one (`camera`) or
/// Aravis' GigE Vision simulator on loopback streaming a synthetic part
/// (`fakeCamera`: the Tests/FakeGigE helper).
///
/// Measured in the same run: the camera alone (trigger to whole frame in
/// memory, no inspection), the floor the pipeline's latency sits on; then
/// trigger to result one trigger at a time; then rising trigger rates fired
/// on a fixed clock without waiting, each for a few seconds, to find the
/// highest rate held with no trigger missed.
public struct TriggerBenchmark {
    public struct Options: Sendable {
        public var width = 1280
        public var height = 1024
        /// A camera to open (serial, address or id); nil starts `fakeCamera`.
        public var camera: String?
        /// The fake GigE camera helper (Tests/FakeGigE/build/loupe-fake-gige).
        public var fakeCamera: String?
        public var triggers = 60
        public var rates: [Double] = [1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30]
        public var secondsPerRate = 4.0
        public var precision: InferencePrecision = InferencePrecision.measured.fastest
        public var threads = max(1, ProcessInfo.processInfo.activeProcessorCount - 1)
        public var modelPath: String?
        public init() {}
    }

    public struct RateStep: Sendable {
        public var rate: Double
        public var fired: Int
        public var missed: Int
    }

    public struct Report: Sendable {
        public var cameraOnly: LatencySummary
        public var triggerToResult: LatencySummary
        public var steps: [RateStep]
        /// The highest rate that, with every slower one, had no miss (0 if none held).
        public var highestRateHeld: Double
        /// The pipeline's stage medians over the one-at-a-time triggers, ms (where the time goes).
        public var stages: [String: Double]
        public var device: String
        public var modelDescription: String
    }

    public struct LatencySummary: Sendable {
        public var p50: Double
        public var p99: Double
        public var count: Int

        init(_ milliseconds: [Double]) {
            p50 = percentile(milliseconds, 0.5)
            p99 = percentile(milliseconds, 0.99)
            count = milliseconds.count
        }
    }

    public let options: Options
    let report: (String) -> Void

    public init(options: Options, report: @escaping (String) -> Void = { _ in }) {
        self.options = options
        self.report = report
    }

    public func run() async throws -> Report {
        let part = try SyntheticCamera(
            configuration: .init(width: options.width, height: options.height, maxShift: 40, maxRotationDegrees: 10))
        var helper: FakeGigELauncher.Running?
        defer {
            if let helper, helper.process.isRunning { kill(helper.process.processIdentifier, SIGKILL); helper.process.waitUntilExit() }
        }
        var name = options.camera
        if name == nil {
            guard let binary = options.fakeCamera else {
                throw CaptureError.invalidConfiguration(
                    "give --camera (a GenICam camera) or --fake-gige (the helper: make -C Tests/FakeGigE)")
            }
            report("starting the fake GigE camera")
            let picture = part.render().0.image
            helper = try FakeGigELauncher.launch(
                binary, serial: "BENCH1", width: picture.width, height: picture.height, grey: picture.samples,
                folder: TemporaryDirectory.make(prefix: "loupe-bench-trigger"))
            guard helper != nil else { throw CaptureError.invalidConfiguration("the fake GigE camera \(binary) did not start") }
            name = "BENCH1"
        }
        var settings = AravisCamera.Settings(camera: name)
        settings.width = options.width
        settings.height = options.height
        settings.trigger = .software

        // The camera alone: trigger to whole frame.
        var cameraOnly: [Double] = []
        do {
            let camera = try AravisCamera(settings: settings)
            for index in 0..<(options.triggers / 2 + 3) {
                report("camera alone: trigger \(index + 1)")
                let started = ContinuousClock.now
                try camera.trigger()
                _ = try await camera.nextFrame()
                if index >= 3 { cameraOnly.append((ContinuousClock.now - started).milliseconds) }
            }
        }
        try await Task.sleep(for: .milliseconds(500))  // the device lets the next controller in

        let (inspector, modelDescription) = try BenchStation.inspector(
            width: options.width, height: options.height, reference: part.reference,
            modelPath: options.modelPath, precision: options.precision)
        let camera = try AravisCamera(settings: settings)
        let device = camera.streamStatistics.device
        let quiet = Logger(label: "loupe.bench.trigger", factory: { _ in SwiftLogNoOpLogHandler() })
        let pipeline = LivePipeline(
            source: camera, pacing: nil, threads: options.threads, inspector: inspector, live: true, logger: quiet, trigger: .software)
        let group = ServiceGroup(services: [pipeline], logger: quiet)
        var latencies: [Double] = []
        var steps: [RateStep] = []
        var stages: [String: Double] = [:]
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            defer { tasks.cancelAll() }
            // One at a time: trigger to result.
            for index in 0..<(options.triggers + 3) {
                report("trigger to result: \(index + 1)/\(options.triggers + 3)")
                let started = ContinuousClock.now
                let stamp = try pipeline.trigger(source: "bench")
                guard await pipeline.result(of: stamp, timeout: .seconds(10)) != nil else {
                    throw CaptureError.device(path: device, reason: "trigger \(stamp.sequence) gave no result")
                }
                if index >= 3 { latencies.append((ContinuousClock.now - started).milliseconds) }
            }
            stages = pipeline.statistics.p50
            // Rising rates on a fixed clock, without waiting for results.
            for rate in options.rates {
                let count = max(1, Int(rate * options.secondsPerRate))
                var missed = 0
                let start = ContinuousClock.now
                for index in 0..<count {
                    try await Task.sleep(until: start + .seconds(Double(index) / rate), clock: .continuous)
                    do { _ = try pipeline.trigger(source: "bench") } catch TriggerError.missed { missed += 1 }
                }
                steps.append(RateStep(rate: rate, fired: count, missed: missed))
                report(String(format: "%.0f triggers/s: %d fired, %d missed", rate, count, missed))
                while pipeline.statistics.trigger?.inFlight != nil { try await Task.sleep(for: .milliseconds(20)) }
                if missed > count / 2 { break }  // far past the pipeline's rate
            }
            await group.triggerGracefulShutdown()
        }
        // Held: this rate and every slower one with no miss (a lucky faster step does not count).
        let held = steps.prefix { $0.missed == 0 }.last?.rate ?? 0
        return Report(
            cameraOnly: LatencySummary(cameraOnly), triggerToResult: LatencySummary(latencies), steps: steps, highestRateHeld: held,
            stages: stages, device: device, modelDescription: modelDescription)
    }
}
