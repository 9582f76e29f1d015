import Foundation

/// Weighted softmax cross-entropy plus soft Dice over the defect classes.
public struct LossConfiguration: Codable, Sendable, Equatable {
    /// One weight per class; empty means all 1. Cross-entropy is the mean
    /// over the weights of each pixel's true class (as PyTorch's `weight=`).
    public var classWeights: [Float]
    /// How much soft Dice (over classes 1…K-1, over the whole batch) adds.
    public var diceWeight: Float
    /// Dice's smoothing term, added to numerator and denominator.
    public var diceSmoothing: Float
    /// Online hard example mining for the cross-entropy (bootstrapped cross-entropy, as in Wu et al. 2016 and
    /// HRNet's OHEM loss): only pixels whose true class's probability is below this count, and at least
    /// `hardPixelMinimumShare` of the batch's pixels (the hardest); 0 counts every pixel. Easy background, most of a
    /// mostly-good part, then stops outvoting the pixels that decide a verdict, without weighting defects up.
    public var hardPixelProbability: Float
    public var hardPixelMinimumShare: Float

    public init(
        classWeights: [Float] = [], diceWeight: Float = 1, diceSmoothing: Float = 1, hardPixelProbability: Float = 0,
        hardPixelMinimumShare: Float = 1.0 / 16
    ) {
        self.classWeights = classWeights
        self.diceWeight = diceWeight
        self.diceSmoothing = diceSmoothing
        self.hardPixelProbability = hardPixelProbability
        self.hardPixelMinimumShare = hardPixelMinimumShare
    }
}

public struct LossValue: Sendable, Equatable {
    public var total: Float
    public var crossEntropy: Float
    public var dice: Float
}

public enum SegmentationLoss {
    /// The loss of `logits` (N×K×H×W) against `labels` (N×H×W) and its gradient, on plain arrays (the tests' and a
    /// reference's way in; training calls the buffer form).
    public static func evaluate(
        logits: [Float], labels: [UInt8], batch: Int, classes: Int, pixels: Int, configuration: LossConfiguration
    ) -> (value: LossValue, gradient: [Float]) {
        var gradient = [Float](repeating: 0, count: logits.count)
        let value = logits.withUnsafeBufferPointer { l in
            labels.withUnsafeBufferPointer { t in
                gradient.withUnsafeMutableBufferPointer { g in
                    evaluate(
                        logits: l, labels: t, batch: batch, classes: classes, pixels: pixels, configuration: configuration, gradient: g)
                }
            }
        }
        return (value, gradient)
    }

    /// Computes the loss of `logits` (N×K×H×W, NCHW) against `labels` (N×H×W)
    /// and writes d(loss)/d(logits) into `gradient`. Sums run in Double.
    static func evaluate(
        logits: UnsafeBufferPointer<Float>, labels: UnsafeBufferPointer<UInt8>,
        batch: Int, classes: Int, pixels: Int,
        configuration: LossConfiguration,
        gradient: UnsafeMutableBufferPointer<Float>
    ) -> LossValue {
        let weights = configuration.classWeights.isEmpty ? [Float](repeating: 1, count: classes) : configuration.classWeights
        precondition(weights.count == classes && logits.count == batch * classes * pixels && labels.count == batch * pixels)
        // Softmax into `gradient` (used as the probability buffer first); each pixel's cross-entropy into `pixelLoss`.
        var pixelLoss = [Float](repeating: 0, count: batch * pixels)
        var intersection = [Double](repeating: 0, count: classes)
        var probabilityMass = [Double](repeating: 0, count: classes)
        var labelMass = [Double](repeating: 0, count: classes)
        for n in 0..<batch {
            let base = n * classes * pixels
            for p in 0..<pixels {
                var peak = -Float.infinity
                for k in 0..<classes { peak = max(peak, logits[base + k * pixels + p]) }
                var sum: Float = 0
                for k in 0..<classes {
                    let e = expf(logits[base + k * pixels + p] - peak)
                    gradient[base + k * pixels + p] = e
                    sum += e
                }
                let label = Int(labels[n * pixels + p])
                let inverse = 1 / sum
                for k in 0..<classes {
                    let probability = gradient[base + k * pixels + p] * inverse
                    gradient[base + k * pixels + p] = probability
                    probabilityMass[k] += Double(probability)
                }
                pixelLoss[n * pixels + p] = -(logits[base + label * pixels + p] - peak - logf(sum))
                intersection[label] += Double(gradient[base + label * pixels + p])
                labelMass[label] += 1
            }
        }
        // The pixels the cross-entropy counts: all, or the hard ones (loss above -log p), at least the minimum share.
        let mining = configuration.hardPixelProbability > 0
        var lossFloor = -Float.infinity
        if mining {
            lossFloor = -logf(min(1, configuration.hardPixelProbability))
            let minimum = min(pixelLoss.count, max(1, Int((Float(pixelLoss.count) * configuration.hardPixelMinimumShare).rounded(.up))))
            if pixelLoss.count(where: { $0 > lossFloor }) < minimum {
                // The minimum-th largest loss: pixels at or above it are kept (ties may keep a few more).
                lossFloor = pixelLoss.sorted(by: >)[minimum - 1].nextDown
            }
        }
        var crossEntropy = 0.0, weightTotal = 0.0
        for n in 0..<batch {
            for p in 0..<pixels where !mining || pixelLoss[n * pixels + p] > lossFloor {
                let w = Double(weights[Int(labels[n * pixels + p])])
                crossEntropy += w * Double(pixelLoss[n * pixels + p])
                weightTotal += w
            }
        }
        let defectClasses = classes - 1
        let smooth = Double(configuration.diceSmoothing)
        var diceMean = 0.0
        // d(loss)/d(probability of class c) for a pixel = diceA[c] * g + diceB[c], g = 1 if labelled c.
        var diceA = [Float](repeating: 0, count: classes)
        var diceB = [Float](repeating: 0, count: classes)
        for c in 1..<classes {
            let s = probabilityMass[c] + labelMass[c] + smooth
            let numerator = 2 * intersection[c] + smooth
            diceMean += numerator / s
            let scale = -Double(configuration.diceWeight) / Double(defectClasses) / (s * s)
            diceA[c] = Float(scale * 2 * s)
            diceB[c] = Float(-scale * numerator)
        }
        diceMean /= Double(defectClasses)
        let ceScale = weightTotal > 0 ? Float(1 / weightTotal) : 0
        var dp = [Float](repeating: 0, count: classes)
        for n in 0..<batch {
            let base = n * classes * pixels
            for p in 0..<pixels {
                let label = Int(labels[n * pixels + p])
                var dot: Float = 0
                for k in 0..<classes {
                    dp[k] = diceB[k] + (k == label ? diceA[k] : 0)
                    dot += gradient[base + k * pixels + p] * dp[k]
                }
                let w = !mining || pixelLoss[n * pixels + p] > lossFloor ? weights[label] * ceScale : 0
                for k in 0..<classes {
                    let probability = gradient[base + k * pixels + p]
                    gradient[base + k * pixels + p] = w * (probability - (k == label ? 1 : 0)) + probability * (dp[k] - dot)
                }
            }
        }
        let ce = weightTotal > 0 ? Float(crossEntropy / weightTotal) : 0
        let dice = Float(1 - diceMean)
        return LossValue(total: ce + configuration.diceWeight * dice, crossEntropy: ce, dice: dice)
    }
}
