/// A convolution with batch norm folded into its weights and bias, and ReLU
/// fused as a post-op; weights reordered once, when the graph is made.
final class InferenceUnit {
    private let input: Tensor
    private let convInput: Tensor
    private let toConvInput: Primitive?
    private let convolution: Primitive
    private let weights: Tensor
    private let bias: Tensor
    let output: Tensor

    init(
        input: Tensor, weights values: [Float], bias biasValues: [Float], outputChannels: Int, kernel: Int, relu: Bool,
        precision: Precision, plainOutput: Bool
    ) throws(DNNLError) {
        self.input = input
        let dims = input.desc.dims
        let weightDims = [outputChannels, dims[1], kernel, kernel]
        let dst =
            plainOutput
            ? try TensorDesc([dims[0], outputChannels, dims[2], dims[3]], .nchw)
            : try TensorDesc([dims[0], outputChannels, dims[2], dims[3]], .any, precision)
        convolution = try Kernels.convolutionForward(
            src: TensorDesc(dims, .any, precision), weights: TensorDesc(weightDims, .any, precision),
            bias: TensorDesc([outputChannels], .x),
            dst: dst, padding: kernel / 2, training: false, attributes: Attributes(relu: relu))
        (convInput, toConvInput) = try adapted(input, to: convolution.desc(.src))
        let stream = try DNNLStream()
        let plainWeights = try Tensor(weightDims, .oihw)
        _ = values.withUnsafeBufferPointer { plainWeights.floats.update(fromContentsOf: $0) }
        weights = try Tensor(convolution.desc(.weights))
        try Kernels.reorder(from: plainWeights.desc, to: weights.desc).run(stream, [(.from, plainWeights), (.to, weights)])
        try stream.wait()
        let bias = try Tensor([outputChannels], .x)
        _ = biasValues.withUnsafeBufferPointer { bias.floats.update(fromContentsOf: $0) }
        self.bias = bias
        output = try Tensor(convolution.desc(.dst))
    }

    func forward(_ stream: DNNLStream) throws(DNNLError) {
        try toConvInput?.run(stream, [(.from, input), (.to, convInput)])
        try convolution.run(stream, [(.src, convInput), (.weights, weights), (.bias, bias), (.dst, output)])
    }
}

/// The U-Net for inference at one input shape, in f32 or bf16.
final class InferenceGraph {
    let input: Tensor
    let logits: Tensor
    private let steps: [Step]

    private enum Step {
        case unit(InferenceUnit)
        case pool(Primitive, source: Tensor, target: Tensor)
        case merge(upsample: Primitive, concat: Primitive, below: Tensor, upsampled: Tensor, skip: Tensor, merged: Tensor)
    }

    /// `folded` holds, per unit in order, the weights and bias with batch norm folded in; then the head's.
    init(
        configuration: UNetConfiguration, folded: [(weights: [Float], bias: [Float])], batch: Int, height: Int, width: Int,
        precision: Precision
    ) throws(DNNLError) {
        input = try Tensor([batch, configuration.inputChannels, height, width], .nchw)
        var steps: [Step] = []
        let units = configuration.units
        var index = 0
        func unit(_ source: Tensor) throws(DNNLError) -> Tensor {
            let made = try InferenceUnit(
                input: source, weights: folded[index].weights, bias: folded[index].bias, outputChannels: units[index].output, kernel: 3,
                relu: true, precision: precision, plainOutput: false)
            index += 1
            steps.append(.unit(made))
            return made.output
        }
        var current = input
        var skips: [Tensor] = []
        for _ in 0..<configuration.depth {
            let skip = try unit(try unit(current))
            skips.append(skip)
            let dims = skip.desc.dims
            let pool = try Kernels.maxPoolForward(
                src: skip.desc, dst: TensorDesc([dims[0], dims[1], dims[2] / 2, dims[3] / 2], .any, precision), training: false)
            let pooled = try Tensor(pool.desc(.dst))
            steps.append(.pool(pool, source: skip, target: pooled))
            current = pooled
        }
        current = try unit(try unit(current))
        for level in (0..<configuration.depth).reversed() {
            let below = current, skip = skips[level]
            let dims = below.desc.dims
            let upsample = try Kernels.upsampleForward(
                src: below.desc, dst: TensorDesc([dims[0], dims[1], dims[2] * 2, dims[3] * 2], .any, precision), training: false)
            let upsampled = try Tensor(upsample.desc(.dst))
            let concat = try Kernels.concat([upsampled.desc, skip.desc])
            let merged = try Tensor(concat.desc(.dst))
            steps.append(.merge(upsample: upsample, concat: concat, below: below, upsampled: upsampled, skip: skip, merged: merged))
            current = try unit(try unit(merged))
        }
        let head = try InferenceUnit(
            input: current, weights: folded[index].weights, bias: folded[index].bias, outputChannels: configuration.classes, kernel: 1,
            relu: false, precision: precision, plainOutput: true)
        steps.append(.unit(head))
        logits = head.output
        self.steps = steps
    }

    func forward(_ stream: DNNLStream) throws(DNNLError) {
        DNNLRuntime.applyThreads()
        for step in steps {
            switch step {
            case .unit(let unit):
                try unit.forward(stream)
            case .pool(let pool, let source, let target):
                try pool.run(stream, [(.src, source), (.dst, target)])
            case .merge(let upsample, let concat, let below, let upsampled, let skip, let merged):
                try upsample.run(stream, [(.src, below), (.dst, upsampled)])
                try concat.run(stream, [(.multipleSrc(0), upsampled), (.multipleSrc(1), skip), (.dst, merged)])
            }
        }
        try stream.wait()
    }
}
