/// One convolution, optionally followed by batch norm + ReLU, for training:
/// its primitives, its tensors (in the layouts oneDNN chose), and where it
/// writes the gradient of its input. In bf16 the convolution's three passes
/// take bf16 inputs (activations, weights, output gradients, each reordered
/// from its fp32 tensor) and write fp32 (output, weight gradients, input
/// gradients); the weights, their gradients, the optimiser and batch norm
/// stay fp32.
final class TrainingUnit {
    let name: String
    let normalised: Bool
    let input: Tensor
    /// Where the gradient of `input` goes (same layout as `input`); nil for the first unit.
    let inputGradient: Tensor?

    private let convInput: Tensor
    private let toConvInput: Primitive?
    private let convForward: Primitive
    private let convBackwardWeights: Primitive
    private let convBackwardData: Primitive?
    private let convInputGradient: Tensor?
    private let fromConvInputGradient: Primitive?
    /// bf16: the output gradient as the backward passes take it, and its reorder from fp32.
    private let lowGradient: Tensor?
    private let toLowGradient: Primitive?

    /// Weights in PyTorch's OIHW layout, and in the convolution's own.
    let weightsPlain: Tensor
    private let weights: Tensor
    private let toWeights: Primitive?
    private let backwardWeights: Tensor
    private let toBackwardWeights: Primitive?
    let weightsGradientPlain: Tensor
    private let weightsGradient: Tensor
    private let fromWeightsGradient: Primitive?
    let bias: Tensor?
    let biasGradient: Tensor?

    private let convOutput: Tensor
    private let normForward: Primitive?
    private let normBackward: Primitive?
    let mean: Tensor?
    let variance: Tensor?
    let scale: Tensor?
    let shift: Tensor?
    let scaleGradient: Tensor?
    let shiftGradient: Tensor?
    private let workspace: Tensor?
    private let convOutputGradient: Tensor?

    /// The unit's output, and its gradient (filled by whoever consumes the output).
    let output: Tensor
    let outputGradient: Tensor

    static let epsilon: Float = 1e-5

    init(
        name: String, input: Tensor, inputGradient: Tensor?, outputChannels: Int, kernel: Int, normalised: Bool, plainOutput: Bool,
        precision: Precision = .f32
    ) throws(DNNLError) {
        self.name = name
        self.normalised = normalised
        self.input = input
        self.inputGradient = inputGradient
        let dims = input.desc.dims
        let (batch, channels, height, width) = (dims[0], dims[1], dims[2], dims[3])
        let weightDims = [outputChannels, channels, kernel, kernel]
        let padding = kernel / 2
        let biasDesc = normalised ? nil : try TensorDesc([outputChannels], .x)
        let dstDesc = try TensorDesc([batch, outputChannels, height, width], plainOutput ? .nchw : .any)

        convForward = try Kernels.convolutionForward(
            src: TensorDesc(dims, .any, precision), weights: TensorDesc(weightDims, .any, precision), bias: biasDesc, dst: dstDesc,
            padding: padding, training: true)
        let srcDesc = convForward.desc(.src)
        (convInput, toConvInput) = try adapted(input, to: srcDesc)
        weightsPlain = try Tensor(weightDims, .oihw)
        let weightsDesc = convForward.desc(.weights)
        (weights, toWeights) = try adapted(weightsPlain, to: weightsDesc)
        bias = try biasDesc.map { desc throws(DNNLError) in try Tensor(desc) }
        biasGradient = try biasDesc.map { desc throws(DNNLError) in try Tensor(desc) }
        convOutput = try Tensor(convForward.desc(.dst))
        // The gradient of the convolution's output, as both backward passes read it.
        let diffDstDesc = convOutput.desc.retyped(precision)
        if precision == .f32 {
            (lowGradient, toLowGradient) = (nil, nil)
        } else {
            lowGradient = try Tensor(diffDstDesc)
            toLowGradient = try Kernels.reorder(from: convOutput.desc, to: diffDstDesc)
        }

        convBackwardWeights = try Kernels.convolutionBackwardWeights(
            src: srcDesc, diffWeights: TensorDesc(weightDims, .any), diffBias: biasDesc, diffDst: diffDstDesc, padding: padding,
            hint: convForward)
        weightsGradientPlain = try Tensor(weightDims, .oihw)
        (weightsGradient, fromWeightsGradient) = try staged(convBackwardWeights.desc(.diffWeights), into: weightsGradientPlain)

        if let inputGradient {
            // Backward data wants its own weights layout (transposed blocks); let it choose.
            let backward = try Kernels.convolutionBackwardData(
                diffSrc: TensorDesc(dims, .any), weights: TensorDesc(weightDims, .any, precision), diffDst: diffDstDesc, padding: padding,
                hint: convForward)
            convBackwardData = backward
            (backwardWeights, toBackwardWeights) = try adapted(weightsPlain, to: backward.desc(.weights))
            let (target, reorder) = try staged(backward.desc(.diffSrc), into: inputGradient)
            convInputGradient = reorder == nil ? nil : target
            fromConvInputGradient = reorder
        } else {
            convBackwardData = nil
            convInputGradient = nil
            fromConvInputGradient = nil
            backwardWeights = weights
            toBackwardWeights = nil
        }

        if normalised {
            let forward = try Kernels.batchNormReLUForward(data: convOutput.desc, epsilon: Self.epsilon, training: true)
            normForward = forward
            normBackward = try Kernels.batchNormReLUBackward(
                diffData: convOutput.desc, data: convOutput.desc, epsilon: Self.epsilon, hint: forward)
            let channelDesc = try TensorDesc([outputChannels], .x)
            mean = try Tensor(channelDesc)
            variance = try Tensor(channelDesc)
            scale = try Tensor(channelDesc)
            shift = try Tensor(channelDesc)
            scaleGradient = try Tensor(channelDesc)
            shiftGradient = try Tensor(channelDesc)
            workspace = try Tensor(forward.desc(.workspace))
            output = try Tensor(convOutput.desc)
            convOutputGradient = try Tensor(convOutput.desc)
        } else {
            normForward = nil
            normBackward = nil
            mean = nil; variance = nil; scale = nil; shift = nil
            scaleGradient = nil; shiftGradient = nil; workspace = nil
            output = convOutput
            convOutputGradient = nil
        }
        outputGradient = try Tensor(output.desc)
    }

    /// Brings the plain weights into the convolution's layout (after each update).
    func loadWeights(_ stream: DNNLStream) throws(DNNLError) {
        try toWeights?.run(stream, [(.from, weightsPlain), (.to, weights)])
        try toBackwardWeights?.run(stream, [(.from, weightsPlain), (.to, backwardWeights)])
    }

    func forward(_ stream: DNNLStream) throws(DNNLError) {
        try toConvInput?.run(stream, [(.from, input), (.to, convInput)])
        var args: [(Arg, Tensor)] = [(.src, convInput), (.weights, weights), (.dst, convOutput)]
        if let bias { args.append((.bias, bias)) }
        try convForward.run(stream, args)
        if let normForward, let mean, let variance, let scale, let shift, let workspace {
            try normForward.run(
                stream,
                [
                    (.src, convOutput), (.dst, output), (.mean, mean), (.variance, variance), (.scale, scale), (.shift, shift),
                    (.workspace, workspace),
                ])
        }
    }

    func backward(_ stream: DNNLStream) throws(DNNLError) {
        let gradient: Tensor
        if let normBackward, let mean, let variance, let scale, let shift, let workspace, let scaleGradient, let shiftGradient,
            let convOutputGradient
        {
            try normBackward.run(
                stream,
                [
                    (.src, convOutput), (.mean, mean), (.variance, variance), (.diffDst, outputGradient),
                    (.scale, scale), (.shift, shift), (.workspace, workspace),
                    (.diffSrc, convOutputGradient), (.diffScale, scaleGradient), (.diffShift, shiftGradient),
                ])
            gradient = convOutputGradient
        } else {
            gradient = outputGradient
        }
        if let toLowGradient, let lowGradient { try toLowGradient.run(stream, [(.from, gradient), (.to, lowGradient)]) }
        let diffDst = lowGradient ?? gradient
        var args: [(Arg, Tensor)] = [(.src, convInput), (.diffDst, diffDst), (.diffWeights, weightsGradient)]
        if let biasGradient { args.append((.diffBias, biasGradient)) }
        try convBackwardWeights.run(stream, args)
        try fromWeightsGradient?.run(stream, [(.from, weightsGradient), (.to, weightsGradientPlain)])
        if let convBackwardData, let inputGradient {
            let target = convInputGradient ?? inputGradient
            try convBackwardData.run(stream, [(.diffDst, diffDst), (.weights, backwardWeights), (.diffSrc, target)])
            try fromConvInputGradient?.run(stream, [(.from, target), (.to, inputGradient)])
        }
    }
}

/// 2x2 max pooling for training.
final class TrainingPool {
    let input: Tensor
    /// Where the pooling's input gradient is added (the skip's gradient).
    let inputGradient: Tensor
    let output: Tensor
    let outputGradient: Tensor
    private let forwardPrimitive: Primitive
    private let backwardPrimitive: Primitive
    private let workspace: Tensor
    private let gradientScratch: Tensor
    private let accumulate: Primitive

    init(input: Tensor, inputGradient: Tensor) throws(DNNLError) {
        self.input = input
        self.inputGradient = inputGradient
        let dims = input.desc.dims
        forwardPrimitive = try Kernels.maxPoolForward(
            src: input.desc, dst: TensorDesc([dims[0], dims[1], dims[2] / 2, dims[3] / 2], .any), training: true)
        output = try Tensor(forwardPrimitive.desc(.dst))
        outputGradient = try Tensor(output.desc)
        workspace = try Tensor(forwardPrimitive.desc(.workspace))
        backwardPrimitive = try Kernels.maxPoolBackward(diffSrc: input.desc, diffDst: output.desc, hint: forwardPrimitive)
        gradientScratch = try Tensor(input.desc)
        accumulate = try Kernels.reorder(from: input.desc, to: inputGradient.desc, accumulate: true)
    }

    func forward(_ stream: DNNLStream) throws(DNNLError) {
        try forwardPrimitive.run(stream, [(.src, input), (.dst, output), (.workspace, workspace)])
    }

    /// Adds this path's gradient to `inputGradient`, which the skip path filled first.
    func backward(_ stream: DNNLStream) throws(DNNLError) {
        try backwardPrimitive.run(stream, [(.diffDst, outputGradient), (.workspace, workspace), (.diffSrc, gradientScratch)])
        try accumulate.run(stream, [(.from, gradientScratch), (.to, inputGradient)])
    }
}

/// Bilinear 2x upsampling of the path below, then concatenation with the skip.
final class TrainingMerge {
    private let below: Tensor
    private let belowGradient: Tensor
    private let skip: Tensor
    private let skipGradient: Tensor
    private let upsampleForward: Primitive
    private let upsampleBackward: Primitive
    private let upsampled: Tensor
    private let upsampledGradient: Tensor
    private let concat: Primitive
    let output: Tensor
    let outputGradient: Tensor
    private let splitSource: Tensor
    private let toSplitSource: Primitive?
    private let upsampledPart: Tensor
    private let skipPart: Tensor
    private let splitUpsampled: Primitive
    private let splitSkip: Primitive

    init(below: Tensor, belowGradient: Tensor, skip: Tensor, skipGradient: Tensor) throws(DNNLError) {
        self.below = below
        self.belowGradient = belowGradient
        self.skip = skip
        self.skipGradient = skipGradient
        let dims = below.desc.dims
        let upDims = [dims[0], dims[1], dims[2] * 2, dims[3] * 2]
        upsampleForward = try Kernels.upsampleForward(src: below.desc, dst: TensorDesc(upDims, .any), training: true)
        upsampled = try Tensor(upsampleForward.desc(.dst))
        upsampledGradient = try Tensor(upsampled.desc)
        upsampleBackward = try Kernels.upsampleBackward(diffSrc: belowGradient.desc, diffDst: upsampled.desc, hint: upsampleForward)
        concat = try Kernels.concat([upsampled.desc, skip.desc])
        output = try Tensor(concat.desc(.dst))
        outputGradient = try Tensor(output.desc)

        // The gradient splits back along channels: through channel windows of the
        // concatenated gradient when its layout allows, else of a plain copy.
        let upChannels = dims[1], skipChannels = skip.desc.dims[1]
        let windows: (TensorDesc, TensorDesc)
        if let up = try? output.desc.channels(0, upChannels), let rest = try? output.desc.channels(upChannels, skipChannels) {
            splitSource = outputGradient
            toSplitSource = nil
            windows = (up, rest)
        } else {
            splitSource = try Tensor(output.desc.dims, .nchw)
            toSplitSource = try Kernels.reorder(from: output.desc, to: splitSource.desc)
            windows = (try splitSource.desc.channels(0, upChannels), try splitSource.desc.channels(upChannels, skipChannels))
        }
        upsampledPart = try Tensor(view: windows.0, of: splitSource)
        skipPart = try Tensor(view: windows.1, of: splitSource)
        splitUpsampled = try Kernels.reorder(from: windows.0, to: upsampled.desc)
        splitSkip = try Kernels.reorder(from: windows.1, to: skipGradient.desc)
    }

    func forward(_ stream: DNNLStream) throws(DNNLError) {
        try upsampleForward.run(stream, [(.src, below), (.dst, upsampled)])
        try concat.run(stream, [(.multipleSrc(0), upsampled), (.multipleSrc(1), skip), (.dst, output)])
    }

    /// Writes (not adds) the skip's gradient; the pooling path adds to it later.
    func backward(_ stream: DNNLStream) throws(DNNLError) {
        try toSplitSource?.run(stream, [(.from, outputGradient), (.to, splitSource)])
        try splitUpsampled.run(stream, [(.from, upsampledPart), (.to, upsampledGradient)])
        try splitSkip.run(stream, [(.from, skipPart), (.to, skipGradient)])
        try upsampleBackward.run(stream, [(.diffDst, upsampledGradient), (.diffSrc, belowGradient)])
    }
}

/// The whole U-Net for one batch shape: forward, backward, with every
/// primitive and tensor made once and reused for each step.
final class TrainingGraph {
    let batch: Int
    let height: Int
    let width: Int
    let input: Tensor
    private let units: [TrainingUnit]
    private let head: TrainingUnit
    private let steps: [Step]

    private enum Step {
        case unit(TrainingUnit)
        case pool(TrainingPool)
        case merge(TrainingMerge)
    }

    var logits: UnsafeMutableBufferPointer<Float> { head.output.floats }
    var logitsGradient: UnsafeMutableBufferPointer<Float> { head.outputGradient.floats }

    init(configuration: UNetConfiguration, batch: Int, height: Int, width: Int, precision: Precision = .f32) throws(DNNLError) {
        self.batch = batch
        self.height = height
        self.width = width
        input = try Tensor([batch, configuration.inputChannels, height, width], .nchw)
        let unitShapes = configuration.units
        var unitIndex = 0
        var units: [TrainingUnit] = []
        var steps: [Step] = []
        func unit(_ source: Tensor, _ gradient: Tensor?) throws(DNNLError) -> TrainingUnit {
            let shape = unitShapes[unitIndex]
            unitIndex += 1
            let made = try TrainingUnit(
                name: shape.name, input: source, inputGradient: gradient, outputChannels: shape.output, kernel: 3, normalised: true,
                plainOutput: false, precision: precision)
            units.append(made)
            steps.append(.unit(made))
            return made
        }
        var current: (Tensor, Tensor?) = (input, nil)
        var skips: [TrainingUnit] = []
        for _ in 0..<configuration.depth {
            let first = try unit(current.0, current.1)
            let second = try unit(first.output, first.outputGradient)
            skips.append(second)
            let pool = try TrainingPool(input: second.output, inputGradient: second.outputGradient)
            steps.append(.pool(pool))
            current = (pool.output, pool.outputGradient)
        }
        let bottomFirst = try unit(current.0, current.1)
        var below = try unit(bottomFirst.output, bottomFirst.outputGradient)
        for level in (0..<configuration.depth).reversed() {
            let skip = skips[level]
            let merge = try TrainingMerge(
                below: below.output, belowGradient: below.outputGradient, skip: skip.output, skipGradient: skip.outputGradient)
            steps.append(.merge(merge))
            let first = try unit(merge.output, merge.outputGradient)
            below = try unit(first.output, first.outputGradient)
        }
        head = try TrainingUnit(
            name: "head", input: below.output, inputGradient: below.outputGradient, outputChannels: configuration.classes, kernel: 1,
            normalised: false, plainOutput: true, precision: precision)
        steps.append(.unit(head))
        self.units = units
        self.steps = steps
    }

    /// Copies weights in (PyTorch layout) and reorders them for the kernels.
    func load(_ weights: Weights, stream: DNNLStream) throws(DNNLError) {
        var index = 0
        for unit in units {
            Self.copy(weights.parameters[index].values, into: unit.weightsPlain)
            Self.copy(weights.parameters[index + 1].values, into: unit.scale!)
            Self.copy(weights.parameters[index + 2].values, into: unit.shift!)
            try unit.loadWeights(stream)
            index += 3
        }
        Self.copy(weights.parameters[index].values, into: head.weightsPlain)
        Self.copy(weights.parameters[index + 1].values, into: head.bias!)
        try head.loadWeights(stream)
    }

    private static func copy(_ values: [Float], into tensor: Tensor) {
        let target = tensor.floats
        precondition(target.count == values.count)
        _ = values.withUnsafeBufferPointer { target.update(fromContentsOf: $0) }
    }

    func forward(_ stream: DNNLStream) throws(DNNLError) {
        DNNLRuntime.applyThreads()
        for step in steps {
            switch step {
            case .unit(let unit): try unit.forward(stream)
            case .pool(let pool): try pool.forward(stream)
            case .merge(let merge): try merge.forward(stream)
            }
        }
        try stream.wait()
    }

    /// Backpropagates `logitsGradient` into every parameter's gradient.
    func backward(_ stream: DNNLStream) throws(DNNLError) {
        DNNLRuntime.applyThreads()
        for step in steps.reversed() {
            switch step {
            case .unit(let unit): try unit.backward(stream)
            case .pool(let pool): try pool.backward(stream)
            case .merge(let merge): try merge.backward(stream)
            }
        }
        try stream.wait()
    }

    /// Gradients in parameter order (PyTorch layout).
    func gradients() -> [[Float]] {
        var result: [[Float]] = []
        for unit in units {
            result.append(Array(unit.weightsGradientPlain.floats))
            result.append(Array(unit.scaleGradient!.floats))
            result.append(Array(unit.shiftGradient!.floats))
        }
        result.append(Array(head.weightsGradientPlain.floats))
        result.append(Array(head.biasGradient!.floats))
        return result
    }

    /// This batch's per-channel mean and (biased) variance of each normalised unit, in buffer order.
    func batchStatistics() -> [(mean: [Float], variance: [Float])] {
        units.map { (Array($0.mean!.floats), Array($0.variance!.floats)) }
    }
}
