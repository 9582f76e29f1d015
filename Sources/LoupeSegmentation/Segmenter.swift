import Foundation
public import LoupeImaging
import Synchronization

/// Arithmetic for inference.
public enum InferencePrecision: String, Codable, Sendable, CaseIterable {
    /// 32-bit floats throughout.
    case fp32
    /// bfloat16 activations and weights (oneDNN, native on AVX512-BF16), fp32 logits.
    case bf16
}

extension InferencePrecision {
    /// The two precisions timed on this CPU, and the faster.
    public struct Measured: Sendable {
        public var fastest: InferencePrecision
        /// Median milliseconds of one inference of the measured shape; nil where bf16 cannot run.
        public var fp32Milliseconds: Double
        public var bf16Milliseconds: Double?
    }

    /// The precision live inspection should run, measured once per process, not assumed from the CPU's flags:
    /// where oneDNN 2.6 has AMX kernels bf16 ran 2.7x faster than fp32 (2026-11-28), but on a CPU that reports
    /// AVX512-BF16 without AMX its bf16 kernels ran 2.4x slower at 256x256 (2026-12-08, docs/benchmarks.md).
    public static let measured: Measured = measure()

    /// Times `repetitions` inferences of a `size`-square input through `configuration` (random weights: the cost
    /// is the shape's) in each precision, fp32 and bf16 alternating, on the calling thread's oneDNN threads.
    public static func measure(configuration: UNetConfiguration = .standard, size: Int = 256, repetitions: Int = 5) -> Measured {
        let model = SegmentationModel(weights: Weights(configuration: configuration, seed: 1))
        let input = [Float](repeating: 0.5, count: size * size * configuration.inputChannels)
        var segmenters: [(InferencePrecision, Segmenter)] = []
        for precision in InferencePrecision.allCases {
            guard let segmenter = try? Segmenter(model: model, precision: precision),
                (try? segmenter.logits(planar: input, width: size, height: size)) != nil
            else { continue }
            segmenters.append((precision, segmenter))
        }
        var times: [InferencePrecision: [Double]] = [:]
        for _ in 0..<max(1, repetitions) {
            for (precision, segmenter) in segmenters {
                let start = ContinuousClock.now
                _ = try? segmenter.logits(planar: input, width: size, height: size)
                times[precision, default: []].append((ContinuousClock.now - start) / .milliseconds(1))
            }
        }
        func median(_ values: [Double]?) -> Double? {
            guard let sorted = values?.sorted(), !sorted.isEmpty else { return nil }
            return sorted[sorted.count / 2]
        }
        let fp32 = median(times[.fp32]) ?? .infinity
        let bf16 = median(times[.bf16])
        return Measured(fastest: (bf16 ?? .infinity) < fp32 ? .bf16 : .fp32, fp32Milliseconds: fp32, bf16Milliseconds: bf16)
    }
}

/// Per-pixel result: the most likely class and its softmax probability.
public struct Segmentation: Sendable, Equatable {
    public let width: Int
    public let height: Int
    public let classes: [UInt8]
    public let confidence: [Float]

    public init(width: Int, height: Int, classes: [UInt8], confidence: [Float]) {
        precondition(classes.count == width * height && confidence.count == classes.count, "a class and a confidence per pixel")
        (self.width, self.height, self.classes, self.confidence) = (width, height, classes, confidence)
    }

    /// The class mask at a confidence threshold: a defect pixel counts only
    /// when its confidence is at or above `threshold`; otherwise it is background (0).
    public func mask(threshold: Float) -> Image8 {
        var samples = classes
        for i in samples.indices where samples[i] != 0 && confidence[i] < threshold { samples[i] = 0 }
        return Image8(validWidth: width, height: height, samples: samples)
    }
}

/// Runs a trained model: batch norm folded into the convolutions, ReLU fused,
/// any input size (padded to a multiple of 2^depth), primitives cached by size.
/// Thread-safe; calls run one at a time.
public final class Segmenter: Sendable {
    public let model: SegmentationModel
    public let precision: InferencePrecision
    private let folded: [(weights: [Float], bias: [Float])]
    private struct State: ~Copyable {
        var stream: DNNLStream
        var graphs: [[Int]: InferenceGraph] = [:]
    }
    private let state: Mutex<State>

    public init(model: SegmentationModel, precision: InferencePrecision = .fp32) throws(SegmentationError) {
        try model.weights.configuration.validate()
        guard precision != .bf16 || DNNLRuntime.canRunBF16 else {
            throw .invalidConfiguration(
                "bf16 inference needs AVX-512 (oneDNN 2.6 has no bf16 kernel for this CPU's \(DNNLRuntime.cpuISA)); use fp32")
        }
        self.model = model
        self.precision = precision
        folded = Self.fold(model.weights)
        do {
            state = Mutex(State(stream: try DNNLStream()))
        } catch {
            throw SegmentationError(error)
        }
    }

    /// Batch norm (running statistics) folded into each convolution's weights and bias.
    static func fold(_ weights: Weights) -> [(weights: [Float], bias: [Float])] {
        var result: [(weights: [Float], bias: [Float])] = []
        var buffer = 0
        var index = 0
        let parameters = weights.parameters
        while index + 2 < parameters.count {
            let w = parameters[index], gamma = parameters[index + 1].values, beta = parameters[index + 2].values
            let mean = weights.buffers[buffer].values, variance = weights.buffers[buffer + 1].values
            let outputs = w.shape[0], perOutput = w.values.count / outputs
            var folded = w.values
            var bias = [Float](repeating: 0, count: outputs)
            for o in 0..<outputs {
                let factor = gamma[o] / (variance[o] + TrainingUnit.epsilon).squareRoot()
                for i in 0..<perOutput { folded[o * perOutput + i] *= factor }
                bias[o] = beta[o] - mean[o] * factor
            }
            result.append((folded, bias))
            index += 3
            buffer += 2
        }
        result.append((parameters[index].values, parameters[index + 1].values))
        return result
    }

    /// Raw logits (K×H×W, NCHW) for already-normalised planar input of this size.
    public func logits(planar input: [Float], width: Int, height: Int) throws(SegmentationError) -> [Float] {
        let configuration = model.weights.configuration
        let channels = configuration.inputChannels
        guard input.count == channels * width * height, width > 0, height > 0 else {
            throw .invalidInput("\(input.count) values for a \(channels)-channel \(width)x\(height) input")
        }
        let multiple = configuration.sizeMultiple
        let paddedWidth = (width + multiple - 1) / multiple * multiple
        let paddedHeight = (height + multiple - 1) / multiple * multiple
        let classes = configuration.classes
        let precision: Precision = self.precision == .bf16 ? .bf16 : .f32
        do {
            return try state.withLock { state throws(DNNLError) -> [Float] in
                let key = [paddedWidth, paddedHeight]
                let graph: InferenceGraph
                if let cached = state.graphs[key] {
                    graph = cached
                } else {
                    graph = try InferenceGraph(
                        configuration: configuration, folded: folded, batch: 1, height: paddedHeight, width: paddedWidth,
                        precision: precision)
                    state.graphs[key] = graph
                }
                // Pad by repeating the edge pixels.
                let target = graph.input.floats
                for c in 0..<channels {
                    for y in 0..<paddedHeight {
                        let sourceRow = (c * height + min(y, height - 1)) * width
                        let targetRow = (c * paddedHeight + y) * paddedWidth
                        for x in 0..<paddedWidth { target[targetRow + x] = input[sourceRow + min(x, width - 1)] }
                    }
                }
                try graph.forward(state.stream)
                let logits = graph.logits.floats
                if paddedWidth == width && paddedHeight == height { return Array(logits) }
                var cropped = [Float](repeating: 0, count: classes * width * height)
                for k in 0..<classes {
                    for y in 0..<height {
                        for x in 0..<width { cropped[(k * height + y) * width + x] = logits[(k * paddedHeight + y) * paddedWidth + x] }
                    }
                }
                return cropped
            }
        } catch {
            throw SegmentationError(error)
        }
    }

    /// Segments an 8-bit image (grey, or RGB for 3-channel models).
    public func segment(_ image: Image8) throws(SegmentationError) -> Segmentation {
        let input = try model.normalization.planar(image, channels: model.weights.configuration.inputChannels)
        let logits = try logits(planar: input, width: image.width, height: image.height)
        return Self.decide(logits: logits, classes: model.weights.configuration.classes, width: image.width, height: image.height)
    }

    /// Arg-max class and softmax confidence per pixel.
    static func decide(logits: [Float], classes: Int, width: Int, height: Int) -> Segmentation {
        let pixels = width * height
        var labels = [UInt8](repeating: 0, count: pixels)
        var confidence = [Float](repeating: 0, count: pixels)
        logits.withUnsafeBufferPointer { l in
            for p in 0..<pixels {
                var best = 0
                var peak = l[p]
                for k in 1..<classes where l[k * pixels + p] > peak {
                    peak = l[k * pixels + p]
                    best = k
                }
                var sum: Float = 0
                for k in 0..<classes { sum += expf(l[k * pixels + p] - peak) }
                labels[p] = UInt8(best)
                confidence[p] = 1 / sum
            }
        }
        return Segmentation(width: width, height: height, classes: labels, confidence: confidence)
    }
}
