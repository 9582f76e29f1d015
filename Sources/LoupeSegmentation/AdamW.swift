import Foundation

/// AdamW (decoupled weight decay, as PyTorch's `torch.optim.AdamW`). Decay
/// applies to convolution weights only, not to batch norm or biases.
public struct AdamWConfiguration: Codable, Sendable, Equatable {
    public var learningRate: Float
    public var beta1: Float
    public var beta2: Float
    public var epsilon: Float
    public var weightDecay: Float

    public init(learningRate: Float = 3e-3, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8, weightDecay: Float = 1e-4) {
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
    }
}

struct AdamW {
    let configuration: AdamWConfiguration
    private var first: [[Float]]
    private var second: [[Float]]
    private(set) var step = 0

    init(configuration: AdamWConfiguration, shapes: [[Int]]) {
        self.configuration = configuration
        first = shapes.map { [Float](repeating: 0, count: $0.reduce(1, *)) }
        second = first
    }

    /// One update of every parameter at `learningRate`.
    mutating func update(_ parameters: inout [NamedTensor], gradients: [[Float]], learningRate: Float) {
        step += 1
        let c = configuration
        let correction1 = 1 - pow(Double(c.beta1), Double(step))
        let correction2 = 1 - pow(Double(c.beta2), Double(step))
        let stepSize = Float(Double(learningRate) / correction1)
        let root2 = Float(correction2.squareRoot())
        for index in parameters.indices {
            let decay = parameters[index].shape.count == 4 ? 1 - learningRate * c.weightDecay : 1
            gradients[index].withUnsafeBufferPointer { g in
                first[index].withUnsafeMutableBufferPointer { m in
                    second[index].withUnsafeMutableBufferPointer { v in
                        parameters[index].values.withUnsafeMutableBufferPointer { p in
                            for i in 0..<p.count {
                                m[i] = c.beta1 * m[i] + (1 - c.beta1) * g[i]
                                v[i] = c.beta2 * v[i] + (1 - c.beta2) * g[i] * g[i]
                                p[i] = p[i] * decay - stepSize * m[i] / (v[i].squareRoot() / root2 + c.epsilon)
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Cosine decay from the base rate to `floor` × base as training goes from
/// 0 to 1 (of its steps, or of its time budget), after a linear warm-up.
public struct CosineSchedule: Sendable, Equatable {
    public var base: Float
    public var warmupSteps: Int
    public var floor: Float

    public init(base: Float, warmupSteps: Int = 0, floor: Float = 0.02) {
        self.base = base
        self.warmupSteps = warmupSteps
        self.floor = floor
    }

    public func rate(progress: Double, step: Int) -> Float {
        let cosine = Float(0.5 * (1 + cos(Double.pi * min(1, max(0, progress)))))
        let rate = base * (floor + (1 - floor) * cosine)
        return step < warmupSteps ? rate * Float(step + 1) / Float(warmupSteps) : rate
    }
}
