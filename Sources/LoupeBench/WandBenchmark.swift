import Foundation
import LoupeCapture
import LoupeImaging
import LoupeVision

/// `loupe bench wand`: a scripted operator labels real and synthetic defects
/// with each wand, the way interactive-segmentation benchmarks do (mean IoU
/// after k clicks, NoC@85).
///
/// For each image and each defect class it holds, the target is that class's
/// whole mask. Click 1 goes to the most interior pixel of the class's largest
/// region; each later click to the most interior pixel of the largest error
/// region: a "label" click on a miss, an "unlabel" click on a false area; ten
/// clicks in all.
/// - The learned wand: each click retrains on every click so far on the
///   image; the selection replaces the one before.
/// - "learning across images": the same, with the wand's memory holding the
///   finished masks of the images labelled before this one (the operator
///   working down the split); its proposal before any click is scored too.
/// - Today's rule-based wand: each "label" click adds its selection to the
///   mask, each "unlabel" click removes its selection, as the page applies it.
public struct WandBenchmark: Sendable {
    public struct Options: Sendable {
        /// NEU-Seg's folder (images/test, annotations/test); nil skips it.
        public var neuSeg: String?
        /// Every n-th test image (1: the whole split).
        public var every = 1
        public var clicks = 10
        /// Synthetic frames (640x512, 2–3 defects each) for the synthetic row.
        public var syntheticFrames = 20
        /// 1280x1024 frames timed for the latency target.
        public var latencyFrames = 4
        public var tolerance = 0.5
        /// Where to write every target (image, truth, ignored pixels and a
        /// manifest) for a peer to run the same operator on.
        public var saveTargets: String?
        public init() {}
    }

    public struct Row: Sendable, Codable {
        public var method: String
        public var data: String
        public var targets: Int
        /// Mean IoU after 1, 2, … clicks.
        public var iouAfter: [Double]
        /// Mean clicks to reach 0.85 IoU (a target never reaching it counts as the click limit).
        public var nocAt85: Double
        /// Share of targets that never reach 0.85.
        public var neverAt85: Double
        /// The proposal before any click (learning across images only).
        public var zeroClickIoU: Double?
        public var clickP50Milliseconds: Double
        public var clickP99Milliseconds: Double
    }

    public struct Latency: Sendable, Codable {
        public var width: Int
        public var height: Int
        public var featuresP50Milliseconds: Double
        public var featuresMaxMilliseconds: Double
        public var clickP50Milliseconds: Double
        public var clickP99Milliseconds: Double
        public var clicks: Int
    }

    public struct Result: Sendable, Codable {
        public var rows: [Row]
        public var latency: Latency?
        public var neuSegSkipped: String?
    }

    /// One target: an image's features and grey pixels, the class's truth,
    /// and pixels left out of the score (the synthetic part's machined
    /// features, as in WandTests).
    struct Target {
        var image: Image8
        var features: WandFeatures
        var truth: [Bool]
        var ignored: [Bool]?
        var classIndex: UInt8
        /// The whole label mask, for the wand's memory.
        var mask: Image8
        var key: String
    }

    public var options: Options
    private let progress: @Sendable (String) -> Void

    public init(options: Options, progress: @escaping @Sendable (String) -> Void) {
        self.options = options
        self.progress = progress
    }

    public func run() throws -> Result {
        var rows: [Row] = []
        var skipped: String?
        var saved: [(String, Target)] = []
        if let root = options.neuSeg, FileManager.default.fileExists(atPath: root + "/images/test") {
            let targets = try neuSegTargets(root)
            let data = "NEU-Seg test (\(Set(targets.map(\.key)).count) images)"
            saved += targets.map { (data, $0) }
            rows += evaluate(targets, data: data, learning: true)
        } else {
            skipped = "NEU-Seg not found at \(options.neuSeg ?? "(none given)")"
        }
        let synthetic = try syntheticTargets()
        saved += synthetic.map { ("synthetic camera", $0) }
        rows += evaluate(synthetic, data: "synthetic camera", learning: false)
        if let directory = options.saveTargets { try save(saved, to: directory) }
        return Result(rows: rows, latency: try latency(), neuSegSkipped: skipped)
    }

    func neuSegTargets(_ root: String) throws -> [Target] {
        let names = try FileManager.default.contentsOfDirectory(atPath: root + "/images/test").filter { $0.hasSuffix(".jpg") }.sorted()
        let chosen = names.enumerated().filter { $0.offset % max(1, options.every) == 0 }.map(\.element)
        var targets: [Target] = []
        for (number, name) in chosen.enumerated() {
            progress("NEU-Seg features \(number + 1)/\(chosen.count)")
            let image = try ImageFile.read(root + "/images/test/" + name).gray8
            let truth = try ImageFile.read(root + "/annotations/test/" + (name as NSString).deletingPathExtension + ".png").gray8
            let features = WandFeatures(image)
            for label in Set(truth.samples).subtracting([0]).sorted() {
                targets.append(
                    Target(
                        image: image, features: features, truth: truth.samples.map { $0 == label }, ignored: nil,
                        classIndex: label, mask: truth, key: name))
            }
        }
        return targets
    }

    /// 160x160 windows around each planted defect of the synthetic camera's
    /// frames, clicked as WandTests does.
    func syntheticTargets() throws -> [Target] {
        var targets: [Target] = []
        for seed: UInt64 in [21, 5, 77] {
            let camera = try SyntheticCamera(configuration: .init(width: 640, height: 512, defectsPerFrame: 2...3, seed: seed))
            for frameNumber in 0..<max(1, options.syntheticFrames / 3) {
                progress("synthetic frames, seed \(seed): \(frameNumber + 1)")
                let (frame, _) = camera.render()
                let width = frame.mask.width
                let features = MaskTools.dilate(
                    try camera.featureMask.warpedNearest(by: frame.pose, width: width, height: frame.mask.height), radius: 3)
                for blob in MaskTools.blobs(frame.mask) where blob.area >= 30 {
                    let click = MaskTools.centralPixel(of: blob, width: width, height: frame.mask.height)
                    let window = 160
                    let x0 = max(0, min(frame.image.width - window, click % width - window / 2))
                    let y0 = max(0, min(frame.image.height - window, click / width - window / 2))
                    let rect = PixelRect(x: x0, y: y0, width: window, height: window)
                    let crop = try frame.image.cropped(to: rect), truth = try frame.mask.cropped(to: rect),
                        fixed = try features.cropped(to: rect)
                    let wanted = truth.samples.map { $0 == blob.label }
                    targets.append(
                        Target(
                            image: crop, features: WandFeatures(crop), truth: wanted,
                            ignored: fixed.samples.indices.map { fixed.samples[$0] != 0 && !wanted[$0] },
                            classIndex: blob.label, mask: truth, key: "\(seed)-\(frameNumber)-\(blob.label)-\(click)"))
                }
            }
        }
        return targets
    }

    struct Manifest: Codable {
        struct Entry: Codable {
            var data: String
            var image: String
            var truth: String
            var ignored: String?
        }
        var targets: [Entry]
    }

    func save(_ targets: [(data: String, target: Target)], to directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var entries: [Manifest.Entry] = []
        for (number, (data, target)) in targets.enumerated() {
            let width = target.image.width, height = target.image.height
            func write(_ name: String, _ set: [Bool]) throws -> String {
                let file = "target-\(number)-\(name).png"
                let image = try Image8(width: width, height: height, samples: set.map { $0 ? 255 : 0 })
                try PNGCodec.encode(image).write(to: URL(fileURLWithPath: directory + "/" + file))
                return file
            }
            let image = "target-\(number)-image.png"
            try PNGCodec.encode(target.image).write(to: URL(fileURLWithPath: directory + "/" + image))
            entries.append(
                Manifest.Entry(
                    data: data, image: image, truth: try write("truth", target.truth),
                    ignored: try target.ignored.map { try write("ignored", $0) }))
        }
        try JSONEncoder().encode(Manifest(targets: entries)).write(to: URL(fileURLWithPath: directory + "/manifest.json"))
    }

    /// Runs Tests/Reference/wand_peers.py (OpenCV's floodFill) with `python`
    /// on targets saved in `directory`, and returns its rows.
    public static func peerRows(python: String, script: String, directory: String, options: Options) throws -> [Row] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [script, "--targets", directory, "--clicks", "\(options.clicks)", "--tolerance", "\(options.tolerance)"]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw WandBenchmarkError.peerFailed("\(python) \(script) exited with \(process.terminationStatus)")
        }
        do {
            return try JSONDecoder().decode([Row].self, from: data)
        } catch {
            throw WandBenchmarkError.peerFailed("\(script) printed no rows: \(error)")
        }
    }

    enum Method {
        case learned(remembering: Bool)
        case rules
    }

    func evaluate(_ targets: [Target], data: String, learning: Bool) -> [Row] {
        var methods: [(String, Method)] = [("learned wand", .learned(remembering: false)), ("rule-based wand (before)", .rules)]
        if learning { methods.insert(("learned wand, learning across images", .learned(remembering: true)), at: 1) }
        return methods.map { name, method in
            var curves: [[Double]] = [], times: [Double] = [], zeroClick: [Double] = []
            var memory = WandMemory()
            var lastKey: String?
            for (number, target) in targets.enumerated() {
                if number % 10 == 0 { progress("\(name) on \(data): \(number + 1)/\(targets.count)") }
                if case .learned(true) = method, lastKey != target.key,
                    let previous = lastKey.flatMap({ key in targets.last { $0.key == key } })
                {
                    memory.record(key: previous.key, features: previous.features, mask: previous.mask)
                }
                lastKey = target.key
                if case .learned(true) = method, memory.imageCount >= 10,
                    let proposal = LearnedWand().propose(target.features, memory: memory, tolerance: options.tolerance)
                {
                    zeroClick.append(Self.iou(proposal.samples.map { $0 == target.classIndex }, target))
                }
                var curve: [Double] = []
                operate(target, method: method, memory: memory) { selection, milliseconds in
                    times.append(milliseconds)
                    curve.append(Self.iou(selection, target))
                    return curve.last!
                }
                curves.append(curve)
            }
            return Self.row(name, data: data, curves: curves, times: times, clicks: options.clicks, zeroClick: zeroClick)
        }
    }

    /// Runs the scripted operator on one target; `score` is handed each
    /// click's selection and time and returns its IoU.
    func operate(_ target: Target, method: Method, memory: WandMemory, score: (_ selection: [Bool], _ milliseconds: Double) -> Double) {
        let width = target.image.width, height = target.image.height
        guard let first = Self.interior(target.truth, width: width, height: height) else { return }
        var clicks = [LearnedWand.Click(x: first % width, y: first / width, positive: true)]
        var selection = [Bool](repeating: false, count: target.truth.count)
        for _ in 0..<options.clicks {
            let start = DispatchTime.now().uptimeNanoseconds
            switch method {
            case .learned(let remembering):
                let result = try? LearnedWand().select(
                    target.features, clicks: clicks, classIndex: target.classIndex,
                    memory: remembering ? memory : nil, tolerance: options.tolerance)
                selection = result.map { $0.samples.map { $0 != 0 } } ?? selection
            case .rules:
                let click = clicks.last!
                let chosen = Wand().select(target.image, x: click.x, y: click.y, tolerance: options.tolerance)
                for index in selection.indices where chosen.samples[index] != 0 { selection[index] = click.positive }
            }
            let milliseconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
            let got = score(selection, milliseconds)
            if got >= 0.999 { break }
            // The next click: the middle of the largest error.
            let misses = target.truth.indices.map { target.truth[$0] && !selection[$0] }
            let falses = target.truth.indices.map { !target.truth[$0] && selection[$0] && !(target.ignored?[$0] ?? false) }
            let miss = Self.largestRegion(misses, width: width, height: height),
                false_ = Self.largestRegion(falses, width: width, height: height)
            guard miss.area > 0 || false_.area > 0 else { break }
            let positive = miss.area >= false_.area
            guard let next = Self.interior(positive ? miss.set : false_.set, width: width, height: height) else { break }
            clicks.append(LearnedWand.Click(x: next % width, y: next / width, positive: positive))
        }
    }

    /// Click latency at the target's size: 1280x1024 synthetic frames, the
    /// feature stack timed apart ("preparing"), then each defect clicked and
    /// corrected twice.
    func latency() throws -> Latency {
        let camera = try SyntheticCamera(configuration: .init(width: 1280, height: 1024, defectsPerFrame: 2...3, seed: 9))
        var featureTimes: [Double] = [], clickTimes: [Double] = []
        for number in 0..<max(1, options.latencyFrames) {
            progress("1280x1024 latency: frame \(number + 1)/\(options.latencyFrames)")
            let (frame, _) = camera.render()
            let start = DispatchTime.now().uptimeNanoseconds
            let features = WandFeatures(frame.image)
            featureTimes.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
            for label in Set(frame.mask.samples).subtracting([0]).sorted() {
                let target = Target(
                    image: frame.image, features: features, truth: frame.mask.samples.map { $0 == label }, ignored: nil,
                    classIndex: label, mask: frame.mask, key: "latency-\(number)")
                var limited = self
                limited.options.clicks = 3
                limited.operate(target, method: .learned(remembering: false), memory: WandMemory()) { selection, milliseconds in
                    clickTimes.append(milliseconds)
                    return Self.iou(selection, target)
                }
            }
        }
        return Latency(
            width: 1280, height: 1024, featuresP50Milliseconds: median(featureTimes), featuresMaxMilliseconds: featureTimes.max() ?? 0,
            clickP50Milliseconds: median(clickTimes), clickP99Milliseconds: percentile(clickTimes, 0.99), clicks: clickTimes.count)
    }

    static func row(_ method: String, data: String, curves: [[Double]], times: [Double], clicks: Int, zeroClick: [Double]) -> Row {
        // A curve that stopped early (a perfect selection) keeps its last IoU.
        let filled = curves.map { curve in (0..<clicks).map { curve.isEmpty ? 0 : curve[min($0, curve.count - 1)] } }
        let means = (0..<clicks).map { k in filled.map { $0[k] }.reduce(0, +) / Double(max(1, filled.count)) }
        let reached = filled.map { curve in curve.firstIndex { $0 >= 0.85 }.map { $0 + 1 } }
        return Row(
            method: method, data: data, targets: curves.count, iouAfter: means,
            nocAt85: reached.map { Double($0 ?? clicks) }.reduce(0, +) / Double(max(1, reached.count)),
            neverAt85: Double(reached.filter { $0 == nil }.count) / Double(max(1, reached.count)),
            zeroClickIoU: zeroClick.isEmpty ? nil : zeroClick.reduce(0, +) / Double(zeroClick.count),
            clickP50Milliseconds: median(times), clickP99Milliseconds: percentile(times, 0.99))
    }

    static func iou(_ selection: [Bool], _ target: Target) -> Double {
        var intersection = 0, union = 0
        for index in selection.indices where !(target.ignored?[index] ?? false) {
            if selection[index] && target.truth[index] { intersection += 1 }
            if selection[index] || target.truth[index] { union += 1 }
        }
        return union == 0 ? 1 : Double(intersection) / Double(union)
    }

    static func interior(_ set: [Bool], width: Int, height: Int) -> Int? {
        guard let image = try? Image8(width: width, height: height, samples: set.map { $0 ? 1 : 0 }) else { return nil }
        return MaskTools.mostInteriorPixel(of: image)
    }

    /// The largest 8-connected region of a set.
    static func largestRegion(_ set: [Bool], width: Int, height: Int) -> (set: [Bool], area: Int) {
        guard let image = try? Image8(width: width, height: height, samples: set.map { $0 ? 1 : 0 }),
            let blob = MaskTools.blobs(image).max(by: { $0.area < $1.area })
        else { return ([], 0) }
        var out = [Bool](repeating: false, count: set.count)
        for index in blob.pixels { out[index] = true }
        return (out, blob.area)
    }
}

public enum WandBenchmarkError: Error, CustomStringConvertible {
    case peerFailed(String)

    public var description: String {
        switch self {
        case .peerFailed(let why): "the OpenCV peer failed: \(why)"
        }
    }
}
