import Foundation
import LoupeImaging

/// The shape of a U-Net-style pixel classifier: blocks of two (3x3 conv +
/// batch norm + ReLU), 2x2 max-pool down, bilinear 2x up with the skip
/// concatenated after the upsampled features, and a 1x1 head.
public struct UNetConfiguration: Codable, Sendable, Equatable, CustomStringConvertible {
    /// 1 (grey) or 3 (RGB).
    public var inputChannels: Int
    /// Background plus the defect classes.
    public var classes: Int
    /// Channels of the first block; each level down doubles it.
    public var baseWidth: Int
    /// How many times the network halves the image.
    public var depth: Int

    public init(inputChannels: Int = 1, classes: Int = 4, baseWidth: Int = 16, depth: Int = 3) {
        self.inputChannels = inputChannels
        self.classes = classes
        self.baseWidth = baseWidth
        self.depth = depth
    }

    /// Sized for 200–512 px ROIs on a 2-core CPU: about 0.47 M parameters,
    /// 2.6 GMAC per 256x256 image.
    public static let standard = UNetConfiguration()

    public func validate() throws(SegmentationError) {
        guard inputChannels == 1 || inputChannels == 3 else {
            throw .invalidConfiguration("input channels must be 1 or 3, not \(inputChannels)")
        }
        guard (2...64).contains(classes) else {
            throw .invalidConfiguration("classes must be 2…64 (background plus defects), not \(classes)")
        }
        guard (2...128).contains(baseWidth) else { throw .invalidConfiguration("base width must be 2…128, not \(baseWidth)") }
        guard (1...6).contains(depth) else { throw .invalidConfiguration("depth must be 1…6, not \(depth)") }
    }

    /// Channels at each level, top (0) to bottom (`depth`).
    public var widths: [Int] { (0...depth).map { baseWidth << $0 } }

    /// Inputs must have sides that are a multiple of this.
    public var sizeMultiple: Int { 1 << depth }

    public var description: String { "U-Net \(inputChannels)→\(classes) classes, width \(baseWidth), depth \(depth)" }

    /// Every conv+BN+ReLU unit in forward order, with its name and channels.
    var units: [(name: String, input: Int, output: Int)] {
        let w = widths
        var units: [(String, Int, Int)] = []
        for level in 0..<depth {
            units.append(("down\(level).conv1", level == 0 ? inputChannels : w[level - 1], w[level]))
            units.append(("down\(level).conv2", w[level], w[level]))
        }
        units.append(("bottom.conv1", w[depth - 1], w[depth]))
        units.append(("bottom.conv2", w[depth], w[depth]))
        for level in (0..<depth).reversed() {
            units.append(("up\(level).conv1", w[level + 1] + w[level], w[level]))
            units.append(("up\(level).conv2", w[level], w[level]))
        }
        return units
    }

    /// The trainable tensors, named as the PyTorch reference names them.
    public var parameterShapes: [(name: String, shape: [Int])] {
        var shapes: [(String, [Int])] = []
        for unit in units {
            let bn = unit.name.replacingOccurrences(of: ".conv", with: ".bn")
            shapes.append(("\(unit.name).weight", [unit.output, unit.input, 3, 3]))
            shapes.append(("\(bn).weight", [unit.output]))
            shapes.append(("\(bn).bias", [unit.output]))
        }
        shapes.append(("head.weight", [classes, baseWidth, 1, 1]))
        shapes.append(("head.bias", [classes]))
        return shapes
    }

    /// Batch-norm running statistics (not trained by gradient).
    public var bufferShapes: [(name: String, shape: [Int])] {
        units.flatMap { unit -> [(String, [Int])] in
            let bn = unit.name.replacingOccurrences(of: ".conv", with: ".bn")
            return [("\(bn).running_mean", [unit.output]), ("\(bn).running_var", [unit.output])]
        }
    }
}

/// A named float tensor in PyTorch's layout (OIHW for convolution weights).
public struct NamedTensor: Sendable, Equatable {
    public var name: String
    public var shape: [Int]
    public var values: [Float]

    public init(name: String, shape: [Int], values: [Float]) {
        precondition(shape.reduce(1, *) == values.count, "\(name): \(values.count) values for shape \(shape)")
        self.name = name
        self.shape = shape
        self.values = values
    }
}

/// All weights of a network: the trainable parameters and the batch-norm
/// running statistics.
public struct Weights: Sendable, Equatable {
    public var configuration: UNetConfiguration
    public var parameters: [NamedTensor]
    public var buffers: [NamedTensor]

    /// He-initialised convolutions, unit batch norm, PyTorch's default head.
    public init(configuration: UNetConfiguration, seed: UInt64) {
        self.configuration = configuration
        var random = SeededGenerator(seed: seed)
        parameters = configuration.parameterShapes.map { name, shape in
            let count = shape.reduce(1, *)
            var values = [Float](repeating: 0, count: count)
            if name.hasSuffix(".weight") && shape.count == 4 {
                let fanIn = Float(shape[1] * shape[2] * shape[3])
                if name.hasPrefix("head") {
                    let bound = 1 / fanIn.squareRoot()
                    for i in 0..<count { values[i] = random.uniform(-bound, bound) }
                } else {
                    let std = (2 / fanIn).squareRoot()
                    for i in 0..<count { values[i] = random.normal() * std }
                }
            } else if name.hasSuffix(".weight") {
                values = [Float](repeating: 1, count: count)
            } else if name == "head.bias" {
                let bound = 1 / Float(configuration.baseWidth).squareRoot()
                for i in 0..<count { values[i] = random.uniform(-bound, bound) }
            }
            return NamedTensor(name: name, shape: shape, values: values)
        }
        buffers = configuration.bufferShapes.map { name, shape in
            NamedTensor(
                name: name, shape: shape, values: [Float](repeating: name.hasSuffix("running_var") ? 1 : 0, count: shape.reduce(1, *)))
        }
    }

    public init(configuration: UNetConfiguration, parameters: [NamedTensor], buffers: [NamedTensor]) throws(SegmentationError) {
        let expected = configuration.parameterShapes + configuration.bufferShapes
        let given = parameters + buffers
        guard expected.count == given.count else {
            throw .invalidModel("expected \(expected.count) tensors for \(configuration), found \(given.count)")
        }
        for (want, have) in zip(expected, given) where want.name != have.name || want.shape != have.shape {
            throw .invalidModel("tensor \(have.name) \(have.shape) where \(want.name) \(want.shape) was expected")
        }
        self.configuration = configuration
        self.parameters = parameters
        self.buffers = buffers
    }

    /// Number of trainable values.
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.values.count } }

    /// Every value is finite.
    public var isFinite: Bool { (parameters + buffers).allSatisfy { $0.values.allSatisfy(\.isFinite) } }
}
