/// A batch of images and labels, NCHW floats and N×H×W class indices.
public struct Batch: Sendable {
    public var count: Int
    public var channels: Int
    public var height: Int
    public var width: Int
    /// Normalised pixels, N×C×H×W.
    public var images: [Float]
    /// Class index per pixel, N×H×W.
    public var labels: [UInt8]

    public init(count: Int, channels: Int, height: Int, width: Int, images: [Float], labels: [UInt8]) {
        precondition(images.count == count * channels * height * width && labels.count == count * height * width)
        self.count = count
        self.channels = channels
        self.height = height
        self.width = width
        self.images = images
        self.labels = labels
    }
}

/// Forward, backward and AdamW updates of one network on oneDNN. Not
/// thread-safe: one training run owns it.
public final class TrainingEngine {
    public private(set) var weights: Weights
    public let loss: LossConfiguration
    private let stream: DNNLStream
    private var graphs: [[Int]: TrainingGraph] = [:]
    private var optimizer: AdamW
    /// Batch-norm momentum for the running statistics (PyTorch's default).
    public var momentum: Float = 0.1
    /// The convolutions' precision: bf16 runs their forward and both backward passes on bf16 inputs (AVX512-BF16 or
    /// AMX), with fp32 outputs, master weights, gradients, optimiser state and batch norm.
    public let precision: InferencePrecision

    public init(
        weights: Weights, loss: LossConfiguration = LossConfiguration(), optimizer: AdamWConfiguration = AdamWConfiguration(),
        precision: InferencePrecision = .fp32
    ) throws(SegmentationError) {
        try weights.configuration.validate()
        guard loss.classWeights.isEmpty || loss.classWeights.count == weights.configuration.classes else {
            throw .invalidConfiguration("\(loss.classWeights.count) class weights for \(weights.configuration.classes) classes")
        }
        if precision == .bf16, !DNNLRuntime.canRunBF16 {
            throw .invalidConfiguration("this CPU has no bf16 convolutions (oneDNN needs AVX-512); train in fp32")
        }
        self.weights = weights
        self.loss = loss
        self.precision = precision
        self.optimizer = AdamW(configuration: optimizer, shapes: weights.parameters.map(\.shape))
        do { stream = try DNNLStream() } catch { throw SegmentationError(error) }
    }

    /// The graph for this batch shape, made once (primitives are cached by shape).
    private func graph(for batch: Batch) throws(SegmentationError) -> TrainingGraph {
        let configuration = weights.configuration
        guard batch.channels == configuration.inputChannels else {
            throw .invalidInput("batch has \(batch.channels) channels, the network takes \(configuration.inputChannels)")
        }
        guard batch.height % configuration.sizeMultiple == 0, batch.width % configuration.sizeMultiple == 0, batch.height > 0,
            batch.width > 0
        else {
            throw .invalidInput("training crops must be a multiple of \(configuration.sizeMultiple) px, not \(batch.width)x\(batch.height)")
        }
        if let maximum = batch.labels.max(), Int(maximum) >= configuration.classes {
            throw .invalidInput("label \(maximum) is beyond the model's \(configuration.classes) classes")
        }
        let key = [batch.count, batch.height, batch.width]
        if let graph = graphs[key] { return graph }
        do {
            let graph = try TrainingGraph(
                configuration: configuration, batch: batch.count, height: batch.height, width: batch.width,
                precision: precision == .bf16 ? .bf16 : .f32)
            graphs[key] = graph
            return graph
        } catch {
            throw SegmentationError(error)
        }
    }

    /// Forward and backward without updating: the loss, the logits and every parameter's gradient.
    public func gradients(_ batch: Batch) throws(SegmentationError) -> (loss: LossValue, logits: [Float], gradients: [[Float]]) {
        let (graph, value) = try forwardBackward(batch)
        return (value, Array(graph.logits), graph.gradients())
    }

    private func forwardBackward(_ batch: Batch) throws(SegmentationError) -> (TrainingGraph, LossValue) {
        let graph = try graph(for: batch)
        do {
            try graph.load(weights, stream: stream)
            _ = batch.images.withUnsafeBufferPointer { graph.input.floats.update(fromContentsOf: $0) }
            try graph.forward(stream)
            let value = batch.labels.withUnsafeBufferPointer { labels in
                SegmentationLoss.evaluate(
                    logits: UnsafeBufferPointer(graph.logits), labels: labels,
                    batch: batch.count, classes: weights.configuration.classes, pixels: batch.height * batch.width,
                    configuration: loss, gradient: graph.logitsGradient)
            }
            guard value.total.isFinite else { return (graph, value) }
            try graph.backward(stream)
            return (graph, value)
        } catch {
            throw SegmentationError(error)
        }
    }

    /// One training step: forward, loss, backward, AdamW at `learningRate`,
    /// and the batch-norm running statistics. A non-finite loss changes nothing.
    @discardableResult
    public func step(_ batch: Batch, learningRate: Float) throws(SegmentationError) -> LossValue {
        let (graph, value) = try forwardBackward(batch)
        guard value.total.isFinite else { return value }
        optimizer.update(&weights.parameters, gradients: graph.gradients(), learningRate: learningRate)
        let count = Float(batch.count * batch.height * batch.width)
        let unbiased = count > 1 ? count / (count - 1) : 1
        for (index, statistics) in graph.batchStatistics().enumerated() {
            let m = momentum
            for i in statistics.mean.indices {
                weights.buffers[2 * index].values[i] = (1 - m) * weights.buffers[2 * index].values[i] + m * statistics.mean[i]
                weights.buffers[2 * index + 1].values[i] =
                    (1 - m) * weights.buffers[2 * index + 1].values[i] + m * statistics.variance[i] * unbiased
            }
        }
        return value
    }

    /// Replaces the weights (for example, to go back to the best model so far).
    public func reset(to weights: Weights) {
        precondition(weights.configuration == self.weights.configuration)
        self.weights = weights
    }
}
