/// Precision, recall and IoU per class (background first) at one confidence threshold.
public struct ThresholdPoint: Sendable, Equatable, Codable {
    public var threshold: Float
    public var precision: [Float]
    public var recall: [Float]
    public var iou: [Float]

    public init(threshold: Float, precision: [Float], recall: [Float], iou: [Float]) {
        (self.threshold, self.precision, self.recall, self.iou) = (threshold, precision, recall, iou)
    }

    /// The mean IoU of the defect classes (background left out): what the threshold is chosen by.
    public var defectMeanIoU: Float {
        let defects = iou.dropFirst()
        return defects.isEmpty ? 0 : defects.reduce(0, +) / Float(defects.count)
    }
}

/// Pixels tallied by their most likely class, that class's probability and the truth, so that the figures at any
/// confidence threshold come from one pass of inference. At threshold t a pixel counts as defect class c when c is
/// its most likely class and its probability is at least t, and as background otherwise, as
/// `Segmentation.mask(threshold:)` decides live.
public struct ConfidenceTally: Sendable, Equatable {
    /// Probability bins: thresholds are exact at multiples of 1/bins.
    public static let bins = 100
    /// The thresholds of the calibration curve.
    public static let thresholds: [Float] = (1...19).map { Float($0) * 0.05 }

    public let classes: Int
    /// [class * bins + bin]: pixels whose most likely class is `class` with a probability in `bin` and whose truth is
    /// that class (`hits`), background (`missesOnBackground`), or another defect class (`missesOnDefect`).
    private var hits: [Int]
    private var missesOnBackground: [Int]
    private var missesOnDefect: [Int]
    /// Pixels of each class in the truth.
    private var truth: [Int]

    public init(classes: Int) {
        self.classes = classes
        hits = [Int](repeating: 0, count: classes * Self.bins)
        missesOnBackground = hits
        missesOnDefect = hits
        truth = [Int](repeating: 0, count: classes)
    }

    public mutating func add(truth labels: [UInt8], _ segmentation: Segmentation) {
        let bins = Self.bins
        for index in labels.indices {
            let t = Int(labels[index]), p = Int(segmentation.classes[index])
            guard t < classes, p < classes else { continue }
            truth[t] += 1
            // A probability that is not a number (a diverged model) counts as certain: the live mask keeps such a pixel
            // at any threshold, since NaN is never below one.
            let probability = segmentation.confidence[index]
            let bin = probability.isNaN ? bins - 1 : min(bins - 1, max(0, Int(min(1, max(0, probability)) * Float(bins))))
            if t == p {
                hits[p * bins + bin] += 1
            } else if t == 0 {
                missesOnBackground[p * bins + bin] += 1
            } else {
                missesOnDefect[p * bins + bin] += 1
            }
        }
    }

    public mutating func add(_ other: ConfidenceTally) {
        precondition(other.classes == classes, "tallies of \(other.classes) and \(classes) classes")
        for i in hits.indices {
            hits[i] += other.hits[i]
            missesOnBackground[i] += other.missesOnBackground[i]
            missesOnDefect[i] += other.missesOnDefect[i]
        }
        for c in truth.indices { truth[c] += other.truth[c] }
    }

    /// The first bin at or above `threshold` (0 for a threshold that is not a number).
    private static func bin(_ threshold: Float) -> Int {
        threshold.isFinite ? min(bins, max(0, Int((min(1, max(0, threshold)) * Float(bins)).rounded()))) : 0
    }

    /// Pixels of `counts` for class `c` from bin `from` up (at or above the threshold) or below it.
    private func sum(_ counts: [Int], _ c: Int, from: Int, below: Bool = false) -> Int {
        let range = below ? (c * Self.bins)..<(c * Self.bins + from) : (c * Self.bins + from)..<((c + 1) * Self.bins)
        return counts[range].reduce(0, +)
    }

    /// The figures at `threshold` (0: every pixel takes its most likely class, as the confusion matrix counts).
    public func point(at threshold: Float) -> ThresholdPoint {
        let k = Self.bin(threshold)
        var tp = [Int](repeating: 0, count: classes), predicted = tp
        // Defect classes: kept where their probability reaches the threshold.
        for c in 1..<max(1, classes) {
            tp[c] = sum(hits, c, from: k)
            predicted[c] = tp[c] + sum(missesOnBackground, c, from: k) + sum(missesOnDefect, c, from: k)
        }
        // Background: its own pixels, and every defect call under the threshold.
        let allPixels = truth.reduce(0, +)
        predicted[0] = allPixels - predicted.dropFirst().reduce(0, +)
        tp[0] = sum(hits, 0, from: 0) + (1..<max(1, classes)).reduce(0) { $0 + sum(missesOnBackground, $1, from: k, below: true) }
        func ratio(_ a: Int, _ b: Int) -> Float { b == 0 ? 1 : Float(a) / Float(b) }
        return ThresholdPoint(
            threshold: threshold,
            precision: (0..<classes).map { ratio(tp[$0], predicted[$0]) },
            recall: (0..<classes).map { ratio(tp[$0], truth[$0]) },
            iou: (0..<classes).map { ratio(tp[$0], truth[$0] + predicted[$0] - tp[$0]) })
    }

    /// Defect pixels called at `threshold` (any defect class) that are right, and that are not (background, or another
    /// defect class, in truth): the flood a rare-defect set shows as many false pixels for each true one.
    public func defectCalls(at threshold: Float) -> (right: Int, wrong: Int) {
        let k = Self.bin(threshold)
        var right = 0, wrong = 0
        for c in 1..<max(1, classes) {
            right += sum(hits, c, from: k)
            wrong += sum(missesOnBackground, c, from: k) + sum(missesOnDefect, c, from: k)
        }
        return (right, wrong)
    }

    /// The figures at each of `thresholds`, lowest first.
    public var curve: [ThresholdPoint] { Self.thresholds.map(point(at:)) }

    /// The point of the curve where the defect classes' mean IoU is highest (the lowest threshold among equals).
    public var best: ThresholdPoint {
        curve.max { $0.defectMeanIoU < $1.defectMeanIoU } ?? point(at: 0.5)
    }
}
