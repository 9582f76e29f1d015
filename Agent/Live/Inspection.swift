public import Foundation
public import LoupeImaging
public import LoupeSegmentation
public import LoupeVision
import LoupeWire

/// One defect class found in an ROI.
public struct DefectSummary: Codable, Sendable, Equatable {
    public var classIndex: Int
    public var className: String
    /// Pixels of this class at or above the confidence threshold.
    public var area: Int
    /// The largest connected region of this class, pixels.
    public var largestRegion: Int
    public var regions: Int
    public var maxConfidence: Float

    public init(classIndex: Int, className: String, area: Int, largestRegion: Int, regions: Int, maxConfidence: Float) {
        self.classIndex = classIndex
        self.className = className
        self.area = area
        self.largestRegion = largestRegion
        self.regions = regions
        self.maxConfidence = maxConfidence
    }
}

/// The verdict on one ROI of one frame.
public struct ROIResult: Codable, Sendable, Equatable {
    public var name: String
    public var defects: [DefectSummary]
    /// Highest confidence of any defect pixel (0 when none).
    public var maxConfidence: Float
    public var passed: Bool

    public init(name: String, defects: [DefectSummary], maxConfidence: Float, passed: Bool) {
        self.name = name
        self.defects = defects
        self.maxConfidence = maxConfidence
        self.passed = passed
    }
}

/// Milliseconds spent in each stage for one frame.
public struct StageTimings: Codable, Sendable, Equatable {
    public init() {}

    /// Waiting for the source to hand over the frame.
    public var capture: Double = 0
    public var align: Double = 0
    public var crop: Double = 0
    public var segment: Double = 0
    /// Thresholding, regions and the pass/fail rule.
    public var judge: Double = 0
    /// Align + crop + segment + judge: the work the pipeline did on the frame.
    public var total: Double = 0
    /// From the frame's capture to its result (includes time spent waiting).
    public var age: Double = 0

    public static let stages = ["capture", "align", "crop", "segment", "judge", "total", "age"]

    public subscript(stage: String) -> Double {
        switch stage {
        case "capture": return capture
        case "align": return align
        case "crop": return crop
        case "segment": return segment
        case "judge": return judge
        case "total": return total
        default: return age
        }
    }
}

/// What the live pipeline concluded about one frame.
public struct InspectionResult: Codable, Sendable, Equatable {
    public enum Verdict: String, Codable, Sendable {
        case pass
        case fail
        /// The part was not found (alignment score below the minimum): not judged.
        case notAligned = "not-aligned"
        /// No model is installed: ROIs are cut but not judged.
        case noModel = "no-model"
    }

    public var sequence: Int
    public var capturedAt: Date
    public var verdict: Verdict
    public var alignScore: Double?
    /// Where the part was found and how far it moved (recipes with an aligner).
    public var placement: PartPlacement?
    public var rois: [ROIResult]
    public var timings: StageTimings
    public var modelVersion: String
    public var recipeVersion: Int
    /// The trigger this result answers (triggered cameras); nil when free-running.
    public var trigger: TriggerStamp?

    public init(
        sequence: Int, capturedAt: Date, verdict: Verdict, alignScore: Double?, placement: PartPlacement? = nil, rois: [ROIResult],
        timings: StageTimings = StageTimings(), modelVersion: String, recipeVersion: Int, trigger: TriggerStamp? = nil
    ) {
        self.sequence = sequence
        self.capturedAt = capturedAt
        self.verdict = verdict
        self.alignScore = alignScore
        self.placement = placement
        self.rois = rois
        self.timings = timings
        self.modelVersion = modelVersion
        self.recipeVersion = recipeVersion
        self.trigger = trigger
    }
}

/// The fixed part of inspecting frames: the recipe, its aligner and the model.
/// Swapped as a whole between frames when any of them changes.
public final class Inspector: Sendable {
    public let recipe: Recipe
    public let aligner: Aligner?
    public let segmenter: Segmenter?
    public let modelVersion: String
    public let classNames: [String]
    /// The recipe's reference capture, what the aligner was built from (kept so a model swap keeps it).
    public let reference: Image8?
    private let regions: [RegionOfInterest]

    public init(recipe: Recipe, reference: Image8?, segmenter: Segmenter?, modelVersion: String) throws {
        self.recipe = recipe
        self.reference = reference
        if let configuration = recipe.alignerConfiguration, let reference {
            aligner = try Aligner(reference: reference, configuration: configuration)
        } else {
            aligner = nil
        }
        self.segmenter = segmenter
        self.modelVersion = segmenter == nil ? "" : modelVersion
        classNames = segmenter?.model.classes.map(\.name) ?? []
        regions = recipe.rois.map { RegionOfInterest(name: $0.name, rect: $0.rect) }
    }

    /// Everything one frame produced: the result, and what the stream draws.
    public struct Outcome: Sendable {
        public var result: InspectionResult
        public var pose: SimilarityTransform
        /// Per ROI: its class mask at the threshold (nil when not segmented).
        public var masks: [Image8?]
        public var regions: [RegionOfInterest]
    }

    /// A frame after the first stage: aligned and cut into ROIs.
    public struct Prepared: Sendable {
        public var frame: CapturedFrameInput
        public var pose: SimilarityTransform
        public var score: Double?
        public var aligned: Bool
        public var crops: [Image8]
        public var timings: StageTimings
    }

    /// Aligns, crops, segments and judges one frame.
    public func inspect(_ frame: CapturedFrameInput, threshold: Double) throws -> Outcome {
        try finish(try prepare(frame), threshold: threshold)
    }

    /// First stage: find the part and cut the ROIs out through its pose.
    public func prepare(_ frame: CapturedFrameInput) throws -> Prepared {
        let clock = ContinuousClock()
        var timings = StageTimings()
        timings.capture = frame.captureMilliseconds
        var mark = clock.now
        var pose = SimilarityTransform.identity
        var score: Double?
        if let aligner {
            let alignment = try aligner.align(frame.image)
            timings.align = (clock.now - mark).milliseconds
            mark = clock.now
            score = alignment.score
            pose = alignment.pose
            guard alignment.aligned else {
                return Prepared(frame: frame, pose: pose, score: score, aligned: false, crops: [], timings: timings)
            }
        }
        let crops = try regions.map { try $0.crop(frame.image, pose: pose) }
        timings.crop = (clock.now - mark).milliseconds
        return Prepared(frame: frame, pose: pose, score: score, aligned: true, crops: crops, timings: timings)
    }

    /// Second stage: segment the ROIs, threshold, and apply the fail rule.
    public func finish(_ prepared: Prepared, threshold: Double) throws -> Outcome {
        let clock = ContinuousClock()
        let frame = prepared.frame
        var timings = prepared.timings
        var mark = clock.now
        var results: [ROIResult] = []
        var masks: [Image8?] = []
        var verdict = InspectionResult.Verdict.pass
        if !prepared.aligned {
            verdict = .notAligned
        } else if let segmenter {
            let segmentations = try prepared.crops.map { try segmenter.segment($0) }
            timings.segment = (clock.now - mark).milliseconds
            mark = clock.now
            for (region, segmentation) in zip(regions, segmentations) {
                let mask = segmentation.mask(threshold: Float(threshold))
                let result = judge(region.name, mask: mask, segmentation: segmentation)
                if !result.passed { verdict = .fail }
                results.append(result)
                masks.append(mask)
            }
            timings.judge = (clock.now - mark).milliseconds
        } else {
            verdict = .noModel
            results = regions.map { ROIResult(name: $0.name, defects: [], maxConfidence: 0, passed: true) }
            masks = regions.map { _ in nil }
        }
        timings.total = timings.align + timings.crop + timings.segment + timings.judge
        timings.age = Date().timeIntervalSince(frame.capturedAt) * 1000
        let result = InspectionResult(
            sequence: frame.sequence, capturedAt: frame.capturedAt, verdict: verdict, alignScore: prepared.score,
            placement: aligner?.configuration.placement(of: prepared.pose), rois: results,
            timings: timings, modelVersion: modelVersion, recipeVersion: recipe.version)
        return Outcome(result: result, pose: prepared.pose, masks: masks, regions: regions)
    }

    /// Per-class areas, regions and confidence, and the fail rule.
    private func judge(_ name: String, mask: Image8, segmentation: Segmentation) -> ROIResult {
        var byClass: [Int: DefectSummary] = [:]
        var peak: Float = 0
        for index in mask.samples.indices where mask.samples[index] != 0 {
            let label = Int(mask.samples[index])
            let confidence = segmentation.confidence[index]
            peak = max(peak, confidence)
            let className = label < classNames.count ? classNames[label] : "class \(label)"
            byClass[
                label,
                default: DefectSummary(classIndex: label, className: className, area: 0, largestRegion: 0, regions: 0, maxConfidence: 0)
            ].area += 1
            byClass[label]!.maxConfidence = max(byClass[label]!.maxConfidence, confidence)
        }
        let regions = byClass.isEmpty ? [] : MaskTools.blobs(mask)
        for blob in regions {
            let label = Int(blob.label)
            byClass[label]!.regions += 1
            byClass[label]!.largestRegion = max(byClass[label]!.largestRegion, blob.area)
        }
        let passed = !recipe.failRule.fails(regions)
        return ROIResult(name: name, defects: byClass.values.sorted { $0.classIndex < $1.classIndex }, maxConfidence: peak, passed: passed)
    }
}

/// A frame as the inspector sees it, with how long the source took to give it.
public struct CapturedFrameInput: Sendable {
    public var sequence: Int
    public var capturedAt: Date
    public var image: Image8
    public var captureMilliseconds: Double
    /// The true label mask in frame coordinates, when the source knows it (the synthetic camera).
    public var groundTruth: Image8?
    /// The trigger the frame answers (triggered cameras).
    public var trigger: TriggerStamp?

    public init(
        sequence: Int, capturedAt: Date, image: Image8, captureMilliseconds: Double, groundTruth: Image8? = nil,
        trigger: TriggerStamp? = nil
    ) {
        self.sequence = sequence
        self.capturedAt = capturedAt
        self.image = image
        self.captureMilliseconds = captureMilliseconds
        self.groundTruth = groundTruth
        self.trigger = trigger
    }
}
