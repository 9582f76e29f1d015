import Foundation
import LoupeStorage
public import Logging
public import LoupeCapture
public import LoupeImaging
import LoupeSegmentation
public import LoupeVision
import LoupeWire
public import ServiceLifecycle
import Synchronization

/// Figures over the rolling log, for the page, the status report and the benchmark.
public struct LiveStatistics: Codable, Sendable, Equatable {
    public var live: Bool
    public var threshold: Double
    /// Results per second over the last few seconds.
    public var framesPerSecond: Double
    /// Frames the source delivered, and those dropped because the pipeline was busy.
    public var framesCaptured: Int
    public var framesDropped: Int
    public var framesInspected: Int
    public var passCount: Int
    public var failCount: Int
    /// Parts passed and failed over the last 60 minutes.
    public var passLastHour: Int
    public var failLastHour: Int
    public var notAlignedCount: Int
    /// Median and 99th percentile of each stage over the log, milliseconds.
    public var p50: [String: Double]
    public var p99: [String: Double]
    public var modelVersion: String
    /// The running model's calibrated threshold (where its defect IoU on its validation split peaked), for the
    /// page's slider to mark; nil without one.
    public var calibratedThreshold: Double?
    public var recipeVersion: Int
    public var sourceError: String?
    /// A GenICam camera's stream: frames completed, incomplete and failed, packets missing and resent, reconnections.
    public var camera: CameraStreamStatistics?
    /// A triggered camera's triggers: accepted, missed, abandoned, the one in flight.
    public var trigger: TriggerStatistics?
    /// The line links (Modbus, MQTT), when configured.
    public var line: LineStatus?
}

/// The live inspection loop: a capture task takes frames from the source at
/// its own rate into a one-frame slot; an align thread takes the newest frame
/// from it, finds the part and cuts the ROIs, and hands them through a second
/// one-frame slot to a segment thread (oneDNN), so the two stages overlap on
/// two cores. When a stage falls behind, frames are dropped (and counted),
/// never queued. Results go to a rolling log and to
/// subscribers (the page's event stream); the newest frame and its outcome
/// are kept for the MJPEG stream, which draws the overlay only when watched.
public final class LivePipeline: Service, Sendable {
    public struct Latest: Sendable {
        public var image: Image8
        public var outcome: Inspector.Outcome
        /// The frame's true labels, when the source knows them (the synthetic camera).
        public var groundTruth: Image8?

        public init(image: Image8, outcome: Inspector.Outcome, groundTruth: Image8? = nil) {
            self.image = image
            self.outcome = outcome
            self.groundTruth = groundTruth
        }

        /// A judged frame scored against its true labels.
        public struct TruthCheck: Sendable {
            /// Per defect class, the pixels where prediction and truth agree
            /// (intersection) and where either marks it (union), over every
            /// ROI: to be pooled over frames into each class's IoU.
            public var overlap: [Int: (intersection: Int, union: Int)] = [:]
            /// Whether the true labels fail the frame by the fail rule given: the right verdict.
            public var truthFails = false
        }

        /// The frame's masks against its true labels, each ROI's truth cut once.
        /// Nil without ground truth or for a frame that was not judged.
        public func checkAgainstTruth(failRule: FailRule) throws -> TruthCheck? {
            guard let truth = groundTruth, !outcome.masks.isEmpty, outcome.masks.count == outcome.regions.count else { return nil }
            var check = TruthCheck()
            for (region, mask) in zip(outcome.regions, outcome.masks) {
                guard let mask else { return nil }
                let expected = try region.cropMask(truth, pose: outcome.pose)
                for index in mask.samples.indices {
                    let p = Int(mask.samples[index]), t = Int(expected.samples[index])
                    if p == t {
                        if p != 0 { check.overlap[p, default: (0, 0)].intersection += 1; check.overlap[p, default: (0, 0)].union += 1 }
                    } else {
                        if p != 0 { check.overlap[p, default: (0, 0)].union += 1 }
                        if t != 0 { check.overlap[t, default: (0, 0)].union += 1 }
                    }
                }
                if !check.truthFails { check.truthFails = failRule.fails(MaskTools.blobs(expected)) }
            }
            return check
        }
    }

    private struct Slot {
        var frame: CapturedFrameInput?
        var stopped = false
    }

    private struct Handoff {
        var prepared: (Inspector.Prepared, Inspector)?
        var stopped = false
    }

    private struct Log {
        var results: [InspectionResult] = []
        var next = 0
        var captured = 0, dropped = 0, inspected = 0, passed = 0, failed = 0, notAligned = 0
        var recentTimes: [ContinuousClock.Instant] = []
        var sourceError: String?
        /// Pass and fail counts per minute (keyed by minutes since the epoch), the last 60.
        var minutes: [Int: (pass: Int, fail: Int)] = [:]

        mutating func count(pass: Bool, at date: Date) {
            let minute = Int(date.timeIntervalSince1970 / 60)
            if pass { minutes[minute, default: (0, 0)].pass += 1 } else { minutes[minute, default: (0, 0)].fail += 1 }
            if minutes.count > 61 { minutes = minutes.filter { $0.key > minute - 60 } }
        }

        func lastHour(at date: Date) -> (pass: Int, fail: Int) {
            let minute = Int(date.timeIntervalSince1970 / 60)
            return minutes.filter { $0.key > minute - 60 }.values.reduce((0, 0)) { ($0.0 + $1.pass, $0.1 + $1.fail) }
        }
    }

    public static let logCapacity = 1000

    private let source: (any FrameSource)?
    private let pacing: Duration?
    private let threads: Int
    private let logger: Logger
    private let inspector: Mutex<Inspector>
    private let settings: Mutex<(live: Bool, threshold: Double)>
    private let slot = Mutex(Slot())
    private let wakeup = DispatchSemaphore(value: 0)
    private let handoff = Mutex(Handoff())
    private let segmentWakeup = DispatchSemaphore(value: 0)
    /// Signalled when each stage thread has ended.
    private let workerEnded = DispatchSemaphore(value: 0)
    private let log = Mutex(Log())
    private let newest = Mutex<Latest?>(nil)
    private let newestRaw = Mutex<CapturedFrame?>(nil)
    private let results = Broadcast<InspectionResult>()
    private let triggers: TriggerGate

    /// - Parameters:
    ///   - source: the camera; nil for an agent without one (labels only).
    ///   - pacing: least time between frames taken from the source (the camera
    ///     rate for sources that have none of their own: files, synthetic).
    ///   - threads: oneDNN threads for the segment stage (1 on two cores:
    ///     the align stage has the other).
    ///   - trigger: what makes the camera take a frame; triggered, one frame is inspected at a time.
    public init(
        source: (any FrameSource)?, pacing: Duration?, threads: Int, inspector: Inspector, live: Bool, logger: Logger,
        trigger: CameraTrigger = .freeRun
    ) {
        self.source = source
        self.configuredTrigger = trigger
        self.triggers = TriggerGate(mode: trigger)
        self.pacing = pacing
        self.threads = max(1, threads)
        self.inspector = Mutex(inspector)
        self.settings = Mutex((live, inspector.recipe.confidenceThreshold))
        self.logger = logger
        applyTrigger(of: inspector.recipe)
    }

    public var hasSource: Bool { source != nil }

    /// For what needs a camera: `CaptureError.notConfigured` on an agent without one.
    public func requireCamera() throws(CaptureError) {
        guard source != nil else { throw .notConfigured }
    }

    /// The camera config's trigger mode; a recipe's `trigger` overrides it while that recipe is in use.
    private let configuredTrigger: CameraTrigger

    /// Why this camera cannot run `recipe` (a trigger mode on a camera that has none); nil when it can.
    public func refusal(of recipe: Recipe) -> String? {
        guard let name = recipe.trigger, let trigger = CameraTrigger(name: name), trigger != .freeRun, !(source is any TriggerConfigurable)
        else { return nil }
        return
            "the recipe's trigger \"\(name)\" needs a GenICam camera (camera.source \"genicam\"); this agent's camera "
            + "\(source == nil ? "is not configured" : "takes no triggers")"
    }

    /// Puts the camera and the trigger gate in the recipe's mode (or the config's, when the recipe names none).
    private func applyTrigger(of recipe: Recipe) {
        guard let camera = source as? any TriggerConfigurable else { return }
        let wanted = recipe.trigger.flatMap(CameraTrigger.init(name:)) ?? configuredTrigger
        guard wanted != triggers.mode else { return }
        camera.setTriggerMode(wanted)
        triggers.setMode(wanted)
        logger.info("trigger mode changed", metadata: ["mode": "\(wanted.name)", "recipe": "\(recipe.version)"])
    }

    /// Fires the camera's software trigger (`camera.trigger` "software"): the
    /// trigger's stamp once the camera took it. Throws `TriggerError.missed`
    /// while an earlier trigger is still being inspected (counted, not queued).
    public func trigger(source name: String = "api") throws -> TriggerStamp {
        guard triggers.mode == .software, let camera = (source as? any SoftwareTriggered), camera.takesSoftwareTriggers else {
            throw TriggerError.notTriggered(mode: source == nil ? "no camera" : triggers.mode.name)
        }
        guard settings.withLock({ $0.live }) else { throw TriggerError.liveOff }
        let stamp = try triggers.accept(source: name)
        do { try camera.trigger() } catch {
            triggers.withdraw(stamp)
            throw error
        }
        return stamp
    }

    /// The triggers' counts (cheap: no percentiles), nil when free-running.
    public var triggerStatistics: TriggerStatistics? { triggers.isTriggered ? triggers.statistics : nil }

    /// Why the camera gives no frames, while it does not (cheap).
    public var sourceError: String? { log.withLock { $0.sourceError } }

    public var isLive: Bool { settings.withLock { $0.live } }

    /// The result of an accepted trigger, waiting up to `timeout` (nil: its frame failed or did not come in time).
    public func result(of stamp: TriggerStamp, timeout: Duration) async -> InspectionResult? {
        await triggers.result(of: stamp, timeout: timeout)
    }

    /// Why an accepted trigger got no result, when its frame came broken.
    public func failure(of stamp: TriggerStamp) -> String? { triggers.failure(of: stamp) }

    /// Replaces recipe, aligner and model; the next frame uses the new ones.
    public func swap(_ next: Inspector) {
        inspector.withLock { $0 = next }
        settings.withLock { $0.threshold = next.recipe.confidenceThreshold }
        applyTrigger(of: next.recipe)
    }

    public var currentInspector: Inspector { inspector.withLock { $0 } }

    public func setLive(_ live: Bool) { settings.withLock { $0.live = live } }

    /// The newest frame the source delivered (for "capture" on the page).
    public var latestFrame: CapturedFrame? { newestRaw.withLock { $0 } }

    /// The newest frame, for what needs one now: refused as `notConfigured`
    /// (409) without a camera, or `noFrameYet` (503) before its first frame.
    public func requireLatestFrame() throws(CaptureError) -> CapturedFrame {
        try requireCamera()
        guard let frame = latestFrame else { throw .noFrameYet }
        return frame
    }

    /// The newest inspected frame and what was found in it.
    public var latest: Latest? { newest.withLock { $0 } }

    public func run() async throws {
        guard let source else {
            logger.info("no camera configured; live inspection is off")
            try? await gracefulShutdown()
            results.finish()
            return
        }
        for (name, loop) in [("loupe-align", alignLoop), ("loupe-segment", segmentLoop)] as [(String, @Sendable () -> Void)] {
            DedicatedThread.start(name) { [self] in
                loop()
                workerEnded.signal()
            }
        }
        await cancelWhenGracefulShutdownOrCancelled { await self.captureLoop(source) }
        // A source that ran dry leaves the agent serving its page until shutdown.
        if !Task.isShuttingDownGracefully && !Task.isCancelled { try? await gracefulShutdown() }
        // Stop the inspection thread and wait for it: the process must not
        // exit (and unload oneDNN's kernels) under a frame in flight.
        slot.withLock { $0.stopped = true }
        wakeup.signal()
        await Self.wait(for: workerEnded)
        await Self.wait(for: workerEnded)
        results.finish()
        logger.info("live pipeline stopped")
    }

    /// Waits for a semaphore without blocking a concurrency thread.
    static func wait(for semaphore: DispatchSemaphore) async {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                semaphore.wait()
                continuation.resume()
            }
        }
    }

    private func cancelWhenGracefulShutdownOrCancelled(_ body: @escaping @Sendable () async -> Void) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await body() }
            group.addTask { try? await gracefulShutdown() }
            await group.next()
            group.cancelAll()
        }
    }

    private func captureLoop(_ source: any FrameSource) async {
        let clock = ContinuousClock()
        var failures = 0
        while !Task.isCancelled {
            let asked = clock.now
            do {
                guard let frame = try await source.nextFrame() else {
                    logger.info("the camera source has no more frames")
                    return
                }
                failures = 0
                let took = (clock.now - asked).milliseconds
                newestRaw.withLock { $0 = frame }
                var stamp: TriggerStamp?
                if triggers.isTriggered {
                    // One trigger at a time: a frame no accepted trigger asked for is not inspected.
                    guard let accepted = triggers.frameArrived() else {
                        log.withLock {
                            $0.captured += 1; $0.dropped += 1; $0.sourceError = nil
                        }
                        continue
                    }
                    stamp = accepted
                }
                let input = CapturedFrameInput(
                    sequence: frame.sequence, capturedAt: frame.capturedAt, image: frame.image, captureMilliseconds: took,
                    groundTruth: frame.groundTruth, trigger: stamp)
                let replaced = slot.withLock { slot -> Bool in
                    defer { slot.frame = input }
                    return slot.frame != nil
                }
                log.withLock {
                    $0.captured += 1
                    if replaced { $0.dropped += 1 }
                    $0.sourceError = nil
                }
                if !replaced { wakeup.signal() }
                if let pacing {
                    try await Task.sleep(until: asked + pacing, clock: clock)
                }
            } catch is CancellationError {
                return
            } catch CaptureError.incompleteFrame(let camera, let reason, let startedAt) where triggers.isTriggered {
                // The camera is fine; the part it was triggered for gets no verdict, and its trigger says why (the camera
                // counts the frame in its incompleteFrames).
                let answered = triggers.frameFailed(
                    reason: "camera \(camera) sent an incomplete frame (\(reason))", startedAt: startedAt)
                logger.warning(
                    "incomplete frame", metadata: ["reason": "\(reason)", "trigger": "\(answered.map { "\($0.sequence)" } ?? "none")"])
            } catch {
                failures += 1
                log.withLock { $0.sourceError = "\(error)" }
                if failures == 1 || failures.isMultiple(of: 50) {
                    logger.error("camera error", metadata: ["error": "\(error)", "failures": "\(failures)"])
                }
                // A camera that came unplugged is retried, slowly.
                try? await Task.sleep(for: .milliseconds(min(2000, 100 * failures)))
            }
        }
    }

    /// Stage one: align and crop the newest frame, hand it to stage two.
    private func alignLoop() {
        defer {
            handoff.withLock { $0.stopped = true }
            segmentWakeup.signal()
        }
        while true {
            wakeup.wait()
            let (frame, stopped) = slot.withLock { slot -> (CapturedFrameInput?, Bool) in
                defer { slot.frame = nil }
                return (slot.frame, slot.stopped)
            }
            if stopped { return }
            guard let frame else { continue }
            guard settings.withLock({ $0.live }) else {
                if let stamp = frame.trigger { triggers.finish(stamp, result: nil) }
                continue
            }
            let inspector = self.inspector.withLock { $0 }
            do {
                let prepared = try inspector.prepare(frame)
                let replaced = handoff.withLock { handoff -> Bool in
                    defer { handoff.prepared = (prepared, inspector) }
                    return handoff.prepared != nil
                }
                if replaced {
                    log.withLock { $0.dropped += 1 }
                } else {
                    segmentWakeup.signal()
                }
            } catch {
                failed(frame, error)
            }
        }
    }

    /// Stage two: segment and judge, record the result.
    private func segmentLoop() {
        DNNLRuntime.setThreads(threads)
        while true {
            segmentWakeup.wait()
            let (next, stopped) = handoff.withLock { handoff -> ((Inspector.Prepared, Inspector)?, Bool) in
                defer { handoff.prepared = nil }
                return (handoff.prepared, handoff.stopped)
            }
            if stopped { return }
            guard let (prepared, inspector) = next else { continue }
            let threshold = settings.withLock { $0.threshold }
            do {
                record(try inspector.finish(prepared, threshold: threshold), frame: prepared.frame, threshold: threshold)
            } catch {
                failed(prepared.frame, error)
            }
        }
    }

    private func failed(_ frame: CapturedFrameInput, _ error: any Error) {
        if let stamp = frame.trigger { triggers.finish(stamp, result: nil) }
        log.withLock { $0.sourceError = "inspection failed: \(error)" }
        logger.error("inspection failed", metadata: ["frame": "\(frame.sequence)", "error": "\(error)"])
    }

    /// Called on the segment thread after each inspected frame, with the
    /// threshold it was judged at; must return at once (the Library queues).
    public typealias Observer = @Sendable (CapturedFrameInput, InspectionResult, Double) -> Void
    private let observers = Mutex<[Observer]>([])

    public func observe(_ observer: @escaping Observer) {
        observers.withLock { $0.append(observer) }
    }

    /// A line link's part of `statistics.line`, asked for each time the statistics are read.
    public typealias LineReporter = @Sendable (inout LineStatus) -> Void
    private let lineReporters = Mutex<[LineReporter]>([])

    public func reportLine(_ reporter: @escaping LineReporter) {
        lineReporters.withLock { $0.append(reporter) }
    }

    private func record(_ outcome: Inspector.Outcome, frame: CapturedFrameInput, threshold: Double) {
        var result = outcome.result
        result.trigger = frame.trigger
        let now = ContinuousClock.now
        log.withLock { log in
            if log.results.count < Self.logCapacity {
                log.results.append(result)
            } else {
                log.results[log.next] = result
            }
            log.next = (log.next + 1) % Self.logCapacity
            log.inspected += 1
            switch result.verdict {
            case .pass: log.passed += 1; log.count(pass: true, at: Date())
            case .fail: log.failed += 1; log.count(pass: false, at: Date())
            case .notAligned: log.notAligned += 1
            case .noModel: break
            }
            log.recentTimes.append(now)
            log.recentTimes.removeAll { now - $0 > .seconds(5) }
        }
        newest.withLock { $0 = Latest(image: frame.image, outcome: outcome, groundTruth: frame.groundTruth) }
        results.send(result)
        for observer in observers.withLock({ $0 }) { observer(frame, result, threshold) }
        if let stamp = frame.trigger { triggers.finish(stamp, result: result) }
    }

    /// The newest results, newest first.
    public func results(limit: Int) -> [InspectionResult] {
        log.withLock { log in
            let ordered = log.results.count < Self.logCapacity ? log.results : Array(log.results[log.next...] + log.results[..<log.next])
            return Array(ordered.suffix(limit).reversed())
        }
    }

    public var statistics: LiveStatistics {
        let (live, threshold) = settings.withLock { ($0.live, $0.threshold) }
        let inspector = currentInspector
        let reporters = lineReporters.withLock { $0 }
        var line: LineStatus?
        if !reporters.isEmpty {
            var status = LineStatus()
            for reporter in reporters { reporter(&status) }
            line = status
        }
        return log.withLock { log in
            let now = ContinuousClock.now
            let recent = log.recentTimes.filter { now - $0 <= .seconds(5) }
            var fps = 0.0
            if recent.count >= 2, let first = recent.first, let last = recent.last, last > first {
                fps = Double(recent.count - 1) / (last - first).seconds
            }
            var p50: [String: Double] = [:], p99: [String: Double] = [:]
            let judged = log.results.filter { $0.verdict != .notAligned }
            for stage in StageTimings.stages {
                let values = judged.map { $0.timings[stage] }.sorted()
                guard !values.isEmpty else { continue }
                p50[stage] = Self.percentile(values, 0.5)
                p99[stage] = Self.percentile(values, 0.99)
            }
            let hour = log.lastHour(at: Date())
            return LiveStatistics(
                live: live, threshold: threshold, framesPerSecond: fps, framesCaptured: log.captured, framesDropped: log.dropped,
                framesInspected: log.inspected, passCount: log.passed, failCount: log.failed,
                passLastHour: hour.pass, failLastHour: hour.fail, notAlignedCount: log.notAligned,
                p50: p50, p99: p99, modelVersion: inspector.modelVersion,
                calibratedThreshold: inspector.segmenter.flatMap { segmenter in
                    let threshold = segmenter.model.metadata.calibratedThreshold
                    return threshold > 0 ? Double(threshold) : nil
                },
                recipeVersion: inspector.recipe.version,
                sourceError: log.sourceError, camera: (source as? any StreamStatisticsReporting)?.streamStatistics,
                trigger: triggers.isTriggered ? triggers.statistics : nil, line: line)
        }
    }

    static func percentile(_ sorted: [Double], _ fraction: Double) -> Double {
        guard !sorted.isEmpty else { return 0 }
        let rank = min(sorted.count - 1, max(0, Int((Double(sorted.count - 1) * fraction).rounded())))
        return sorted[rank]
    }

    /// Each new result as it is made, keeping the newest `count` unread
    /// (1 for a reader that only wants to know a new frame is there).
    public func subscribe(keepingNewest count: Int = 16) -> AsyncStream<InspectionResult> {
        results.subscribe(keepingNewest: count)
    }
}
