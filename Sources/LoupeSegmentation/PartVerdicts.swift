import Foundation
public import LoupeImaging
public import LoupeVision

/// What a plant measures at one confidence threshold: of the parts (ROIs) the truth fails, how many the model passes
/// (escapes), and of those it passes, how many the model fails (false rejects). Lists are indexed by class, with 0
/// meaning any class.
public struct PartPoint: Sendable, Equatable, Codable {
    public var threshold: Float
    /// Defective parts judged good: [0] all of them, [c] those with a class-c defect.
    public var escapes: [Int]
    /// Good parts judged bad: [0] all of them, [c] those rejected for a class-c region.
    public var falseRejects: [Int]

    public init(threshold: Float, escapes: [Int], falseRejects: [Int]) {
        (self.threshold, self.escapes, self.falseRejects) = (threshold, escapes, falseRejects)
    }
}

/// Parts judged by a fail rule over the thresholds of the calibration curve, from the same pass of inference as
/// `ConfidenceTally`. In the truth a part is defective when the rule fails it; in the prediction at threshold t the
/// rule is applied to `Segmentation.mask(threshold: t)`, as the live verdict is.
public struct PartVerdicts: Sendable, Equatable {
    public let classes: Int
    public let rule: FailRule
    /// The tallied thresholds, lowest first.
    public var thresholds: [Float] { curve.map(\.threshold) }
    /// Parts the truth passes.
    public private(set) var goodParts = 0
    /// Parts the truth fails: [0] all, [c] those with a class-c defect.
    public private(set) var defectiveParts: [Int]
    /// One point per threshold, lowest first.
    public private(set) var curve: [PartPoint]

    public init(classes: Int, rule: FailRule, thresholds: [Float] = ConfidenceTally.thresholds) {
        self.classes = classes
        self.rule = rule
        defectiveParts = [Int](repeating: 0, count: max(1, classes))
        curve = thresholds.sorted().map {
            PartPoint(
                threshold: $0, escapes: [Int](repeating: 0, count: max(1, classes)),
                falseRejects: [Int](repeating: 0, count: max(1, classes)))
        }
    }

    /// Restores a tally from its counts (a model file's figures); nil when the counts do not fit `classes`.
    public init?(classes: Int, rule: FailRule, goodParts: Int, defectiveParts: [Int], curve: [PartPoint]) {
        let size = max(1, classes)
        guard goodParts >= 0, defectiveParts.count == size, curve.allSatisfy({ $0.escapes.count == size && $0.falseRejects.count == size })
        else { return nil }
        // Counts a tally could have made: no class or point counts more parts than there are of their kind.
        guard defectiveParts.allSatisfy({ (0...defectiveParts[0]).contains($0) }),
            curve.allSatisfy({ point in
                point.threshold.isFinite && (0...1).contains(point.threshold)
                    && zip(point.escapes, defectiveParts).allSatisfy { (0...$1).contains($0) }
                    && point.falseRejects.allSatisfy { (0...goodParts).contains($0) }
            })
        else { return nil }
        self.classes = classes
        self.rule = rule
        self.goodParts = goodParts
        self.defectiveParts = defectiveParts
        self.curve = curve.sorted { $0.threshold < $1.threshold }
    }

    /// Judges one part: its true label mask and the model's segmentation of it.
    public mutating func add(truth: Image8, _ segmentation: Segmentation) {
        precondition(truth.width == segmentation.width && truth.height == segmentation.height, "a truth and a segmentation of one size")
        let defects = rule.failingClasses(truth).filter { $0 < max(1, classes) }
        if defects.isEmpty {
            goodParts += 1
        } else {
            defectiveParts[0] += 1
            for c in defects { defectiveParts[c] += 1 }
        }
        // A higher threshold keeps a subset of each region, so once a part passes it passes at every higher threshold.
        var passesFromHere = false
        for index in curve.indices {
            let rejectedFor = passesFromHere ? [] : rejections(segmentation, at: curve[index].threshold)
            if rejectedFor.isEmpty {
                passesFromHere = true
                if !defects.isEmpty {
                    curve[index].escapes[0] += 1
                    for c in defects { curve[index].escapes[c] += 1 }
                }
            } else if defects.isEmpty {
                curve[index].falseRejects[0] += 1
                for c in rejectedFor where c < max(1, classes) { curve[index].falseRejects[c] += 1 }
            }
        }
    }

    /// The classes the rule rejects the part for at `threshold`; counted before any region is traced, since most
    /// parts at most thresholds have too few defect pixels of any class to fail.
    private func rejections(_ segmentation: Segmentation, at threshold: Float) -> [Int] {
        var counts = [Int](repeating: 0, count: 256)
        for i in segmentation.classes.indices where segmentation.classes[i] != 0 && !(segmentation.confidence[i] < threshold) {
            counts[Int(segmentation.classes[i])] += 1
        }
        guard counts.dropFirst().contains(where: rule.counts(area:)) else { return [] }
        return rule.failingClasses(segmentation.mask(threshold: threshold))
    }

    public mutating func add(_ other: PartVerdicts) {
        precondition(other.classes == classes && other.thresholds == thresholds && other.rule == rule, "part tallies of one shape")
        goodParts += other.goodParts
        for c in defectiveParts.indices { defectiveParts[c] += other.defectiveParts[c] }
        for index in curve.indices {
            for c in defectiveParts.indices {
                curve[index].escapes[c] += other.curve[index].escapes[c]
                curve[index].falseRejects[c] += other.curve[index].falseRejects[c]
            }
        }
    }

    /// The point at `threshold` (the nearest tallied one).
    public func point(at threshold: Float) -> PartPoint? {
        curve.min { abs($0.threshold - threshold) < abs($1.threshold - threshold) }
    }

    /// Share of defective parts (of class `c`, 0: any) judged good at `point`; nil when there were none.
    public func escapeRate(_ point: PartPoint, class c: Int = 0) -> Double? {
        defectiveParts[c] == 0 ? nil : Double(point.escapes[c]) / Double(defectiveParts[c])
    }

    /// Share of good parts judged bad (for class `c`, 0: any) at `point`; nil when there were none.
    public func falseRejectRate(_ point: PartPoint, class c: Int = 0) -> Double? {
        goodParts == 0 ? nil : Double(point.falseRejects[c]) / Double(goodParts)
    }
}

extension PartVerdicts {
    /// "escapes 3 of 120 defective parts (2.5 %), false rejects 1 of 40 good parts (2.5 %)", for class `c` (0: any).
    public func summary(_ point: PartPoint, class c: Int = 0) -> String {
        func share(_ count: Int, of total: Int, _ what: String) -> String {
            total == 0 ? "no \(what)" : "\(count) of \(total) \(what) (\(Self.percent(Double(count) / Double(total))))"
        }
        return "escapes \(share(point.escapes[c], of: defectiveParts[c], "defective parts")), "
            + "false rejects \(share(point.falseRejects[c], of: goodParts, "good parts"))"
    }

    /// A rate as "2.5 %"; "-" when there is nothing to divide by.
    public static func percent(_ rate: Double?) -> String {
        guard let rate else { return "-" }
        return String(format: "%.1f %%", rate * 100)
    }
}

/// The part figures at one threshold, as the training result, the registry and a canary's bounds carry them.
public struct PartFigures: Sendable, Equatable, Codable {
    public var threshold: Float
    public var minimumDefectPixels: Int
    public var defectiveParts: Int
    public var goodParts: Int
    public var escapes: Int
    public var falseRejects: Int

    public init(threshold: Float, minimumDefectPixels: Int, defectiveParts: Int, goodParts: Int, escapes: Int, falseRejects: Int) {
        self.threshold = threshold
        self.minimumDefectPixels = minimumDefectPixels
        self.defectiveParts = defectiveParts
        self.goodParts = goodParts
        self.escapes = escapes
        self.falseRejects = falseRejects
    }

    /// Defective parts judged good, as a share of the defective parts; nil when there were none.
    public var escapeRate: Double? { defectiveParts == 0 ? nil : Double(escapes) / Double(defectiveParts) }
    /// Good parts judged bad, as a share of the good parts; nil when there were none.
    public var falseRejectRate: Double? { goodParts == 0 ? nil : Double(falseRejects) / Double(goodParts) }

    /// "escape rate 2.5 % (3 of 120), false-reject rate 2.5 % (1 of 40) at threshold 0.65".
    public var summary: String {
        "escape rate \(PartVerdicts.percent(escapeRate)) (\(escapes) of \(defectiveParts)), false-reject rate "
            + "\(PartVerdicts.percent(falseRejectRate)) (\(falseRejects) of \(goodParts)) at threshold "
            + String(format: "%.2f", threshold)
    }
}

extension PartVerdicts {
    /// The overall figures at the tallied threshold nearest `threshold`.
    public func figures(at threshold: Float) -> PartFigures? {
        point(at: threshold).map {
            PartFigures(
                threshold: $0.threshold, minimumDefectPixels: rule.minimumDefectPixels, defectiveParts: defectiveParts[0],
                goodParts: goodParts,
                escapes: $0.escapes[0], falseRejects: $0.falseRejects[0])
        }
    }
}

extension ModelMetadata {
    /// The validation split's part figures at the model's calibrated threshold; nil without a validation split.
    public var partFigures: PartFigures? {
        guard calibratedThreshold > 0 else { return nil }
        return parts?.figures(at: calibratedThreshold)
    }
}
