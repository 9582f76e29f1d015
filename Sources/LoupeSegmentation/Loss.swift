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

    public init(classWeights: [Float] = [], diceWeight: Float = 1, diceSmoothing: Float = 1) {
        self.classWeights = classWeights
        self.diceWeight = diceWeight
        self.diceSmoothing = diceSmoothing
    }
}

public struct LossValue: Sendable, Equatable {
    public var total: Float
    public var crossEntropy: Float
    public var dice: Float
}

enum SegmentationLoss {
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
        // Softmax into `gradient` (used as the probability buffer first).
        var crossEntropy = 0.0, weightTotal = 0.0
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
                let w = Double(weights[label])
                crossEntropy -= w * Double(logits[base + label * pixels + p] - peak - logf(sum))
                weightTotal += w
                intersection[label] += Double(gradient[base + label * pixels + p])
                labelMass[label] += 1
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
        let ceScale = Float(1 / weightTotal)
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
                let w = weights[label] * ceScale
                for k in 0..<classes {
                    let probability = gradient[base + k * pixels + p]
                    gradient[base + k * pixels + p] = w * (probability - (k == label ? 1 : 0)) + probability * (dp[k] - dot)
                }
            }
        }
        let ce = Float(crossEntropy / weightTotal)
        let dice = Float(1 - diceMean)
        return LossValue(total: ce + configuration.diceWeight * dice, crossEntropy: ce, dice: dice)
    }
}
