import Foundation

/// Weighted, L2-regularised binary logistic regression, fitted by Newton's
/// method (iteratively reweighted least squares): for the wand's few
/// thousand samples of a few dozen features it converges in a handful of
/// steps, a few milliseconds.
struct LogisticRegression: Sendable {
    /// Weights per feature, then the bias, in the units of the samples.
    var weights: [Float]
    var bias: Float

    /// - Parameters:
    ///   - samples: row-major, `dimension` values a row.
    ///   - labels: true for the positive class.
    ///   - sampleWeights: each row's weight (normalised to a mean of 1 here).
    ///   - penalty: the L2 penalty on the weights (not the bias), against the
    ///     sum of weighted losses; 10 matches scikit-learn's C = 0.1.
    init(
        samples: [Float], labels: [Bool], sampleWeights: [Float], dimension: Int, penalty: Double = 10, steps: Int = 15,
        from start: LogisticRegression? = nil
    ) {
        let rows = labels.count, d = dimension + 1
        let meanWeight = Double(sampleWeights.reduce(0, +)) / Double(max(1, rows))
        var beta = start.map { $0.weights.map(Double.init) + [Double($0.bias)] } ?? [Double](repeating: 0, count: d)
        var hessian = [Double](repeating: 0, count: d * d), gradient = [Double](repeating: 0, count: d)
        var row = [Double](repeating: 0, count: d)
        for _ in 0..<steps {
            for i in hessian.indices { hessian[i] = 0 }
            for i in gradient.indices { gradient[i] = 0 }
            // The upper triangle of the Hessian and the gradient, over raw
            // buffers so the inner loop vectorises.
            hessian.withUnsafeMutableBufferPointer { h in
                gradient.withUnsafeMutableBufferPointer { g in
                    row.withUnsafeMutableBufferPointer { x in
                        samples.withUnsafeBufferPointer { data in
                            for r in 0..<rows {
                                var score = beta[dimension]
                                for f in 0..<dimension {
                                    x[f] = Double(data[r * dimension + f])
                                    score += beta[f] * x[f]
                                }
                                x[dimension] = 1
                                let p = 1 / (1 + exp(-score)), weight = Double(sampleWeights[r]) / meanWeight
                                let residual = weight * (p - (labels[r] ? 1 : 0)), curvature = max(1e-9, weight * p * (1 - p))
                                for a in 0..<d {
                                    g[a] += residual * x[a]
                                    let scaled = curvature * x[a]
                                    let line = h.baseAddress! + a * d
                                    for b in a..<d { line[b] += scaled * x[b] }
                                }
                            }
                        }
                    }
                }
            }
            for a in 0..<dimension {
                gradient[a] += penalty * beta[a]
                hessian[a * d + a] += penalty
            }
            hessian[dimension * d + dimension] += 1e-6
            for a in 0..<d { for b in 0..<a { hessian[a * d + b] = hessian[b * d + a] } }
            guard let step = Self.solve(hessian, gradient, size: d) else { break }
            var largest = 0.0
            for a in 0..<d {
                beta[a] -= step[a]
                largest = max(largest, abs(step[a]))
            }
            if largest < 1e-3 { break }
        }
        weights = beta[0..<dimension].map { Float($0) }
        bias = Float(beta[dimension])
    }

    /// Solves the symmetric positive-definite system by Cholesky; nil when
    /// it is not positive definite.
    static func solve(_ matrix: [Double], _ vector: [Double], size n: Int) -> [Double]? {
        var l = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
            for j in 0...i {
                var sum = matrix[i * n + j]
                for k in 0..<j { sum -= l[i * n + k] * l[j * n + k] }
                if i == j {
                    guard sum > 0 else { return nil }
                    l[i * n + i] = sum.squareRoot()
                } else {
                    l[i * n + j] = sum / l[j * n + j]
                }
            }
        }
        var y = vector
        for i in 0..<n {
            for k in 0..<i { y[i] -= l[i * n + k] * y[k] }
            y[i] /= l[i * n + i]
        }
        for i in stride(from: n - 1, through: 0, by: -1) {
            for k in (i + 1)..<n { y[i] -= l[k * n + i] * y[k] }
            y[i] /= l[i * n + i]
        }
        return y
    }
}
