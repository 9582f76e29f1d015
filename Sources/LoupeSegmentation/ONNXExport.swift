public import Foundation
public import LoupeProto
import SwiftProtobuf

/// Writes a model as ONNX (opset 13): batch norm folded into each Conv, then
/// Relu, MaxPool, Resize (linear, half_pixel) and Concat, as Loupe runs it.
/// Input `input` is N×C×H×W float (already normalised; see the doc string),
/// output `logits` is N×K×H×W. H and W must be multiples of 2^depth.
public enum ONNXExport {
    public static func model(_ model: SegmentationModel) -> Onnx_ModelProto {
        let configuration = model.configuration
        let folded = Segmenter.fold(model.weights)
        var graph = Onnx_GraphProto()
        graph.name = "loupe_unet"
        var foldedIndex = 0
        var counter = 0

        func name(_ stem: String) -> String {
            counter += 1
            return "\(stem)_\(counter)"
        }
        func initializer(_ name: String, _ dims: [Int], _ values: [Float]) {
            var tensor = Onnx_TensorProto()
            tensor.name = name
            tensor.dims = dims.map(Int64.init)
            tensor.dataType = Int32(Onnx_TensorProto.DataType.float.rawValue)
            tensor.rawData = values.withUnsafeBufferPointer { Data(buffer: $0) }
            graph.initializer.append(tensor)
        }
        func node(_ op: String, _ inputs: [String], attributes: [Onnx_AttributeProto] = [], output named: String? = nil) -> String {
            let output = named ?? name(op.lowercased())
            var node = Onnx_NodeProto()
            node.opType = op
            node.name = output
            node.input = inputs
            node.output = [output]
            node.attribute = attributes
            graph.node.append(node)
            return output
        }
        func ints(_ name: String, _ values: [Int]) -> Onnx_AttributeProto {
            var attribute = Onnx_AttributeProto()
            attribute.name = name
            attribute.type = .ints
            attribute.ints = values.map(Int64.init)
            return attribute
        }
        func string(_ name: String, _ value: String) -> Onnx_AttributeProto {
            var attribute = Onnx_AttributeProto()
            attribute.name = name
            attribute.type = .string
            attribute.s = Data(value.utf8)
            return attribute
        }
        let units = configuration.units
        func conv(_ input: String, kernel: Int, relu: Bool, output: String? = nil) -> String {
            let (weights, bias) = folded[foldedIndex]
            let label = foldedIndex < units.count ? units[foldedIndex].name : "head"
            let outputs = bias.count
            let inputs = weights.count / (outputs * kernel * kernel)
            foldedIndex += 1
            initializer("\(label).weight", [outputs, inputs, kernel, kernel], weights)
            initializer("\(label).bias", [outputs], bias)
            let pad = kernel / 2
            let out = node(
                "Conv", [input, "\(label).weight", "\(label).bias"],
                attributes: [
                    ints("kernel_shape", [kernel, kernel]), ints("pads", [pad, pad, pad, pad]), ints("strides", [1, 1]),
                ], output: relu ? nil : output)
            return relu ? node("Relu", [out], output: output) : out
        }

        initializer("upsample_scales", [4], [1, 1, 2, 2])
        var current = "input"
        var skips: [String] = []
        for _ in 0..<configuration.depth {
            current = conv(conv(current, kernel: 3, relu: true), kernel: 3, relu: true)
            skips.append(current)
            current = node("MaxPool", [current], attributes: [ints("kernel_shape", [2, 2]), ints("strides", [2, 2])])
        }
        current = conv(conv(current, kernel: 3, relu: true), kernel: 3, relu: true)
        for level in (0..<configuration.depth).reversed() {
            let up = node(
                "Resize", [current, "", "upsample_scales"],
                attributes: [
                    string("mode", "linear"), string("coordinate_transformation_mode", "half_pixel"),
                ])
            var attribute = Onnx_AttributeProto()
            attribute.name = "axis"
            attribute.type = .int
            attribute.i = 1
            let merged = node("Concat", [up, skips[level]], attributes: [attribute])
            current = conv(conv(merged, kernel: 3, relu: true), kernel: 3, relu: true)
        }
        _ = conv(current, kernel: 1, relu: false, output: "logits")

        func valueInfo(_ name: String, channels: Int) -> Onnx_ValueInfoProto {
            var info = Onnx_ValueInfoProto()
            info.name = name
            var tensorType = Onnx_TypeProto.Tensor()
            tensorType.elemType = Int32(Onnx_TensorProto.DataType.float.rawValue)
            var shape = Onnx_TensorShapeProto()
            for dim in ["batch", "\(channels)", "height", "width"] {
                var d = Onnx_TensorShapeProto.Dimension()
                if let value = Int64(dim) { d.dimValue = value } else { d.dimParam = dim }
                shape.dim.append(d)
            }
            tensorType.shape = shape
            info.type.tensorType = tensorType
            return info
        }
        graph.input = [valueInfo("input", channels: configuration.inputChannels)]
        graph.output = [valueInfo("logits", channels: configuration.classes)]
        let n = model.normalization
        graph.docString =
            "Loupe U-Net (\(configuration)). Input: pixels v/255 normalised per channel as (v/255 - mean)/std with mean \(n.mean), std "
            + "\(n.std); H and W multiples of \(configuration.sizeMultiple). Output: logits per class: "
            + "\(model.classes.map(\.name).joined(separator: ", "))."

        var proto = Onnx_ModelProto()
        proto.irVersion = 8
        proto.producerName = "loupe"
        proto.producerVersion = "1"
        proto.modelVersion = Int64(model.metadata.version)
        var opset = Onnx_OperatorSetIdProto()
        opset.domain = ""
        opset.version = 13
        proto.opsetImport = [opset]
        proto.graph = graph
        return proto
    }

    public static func data(_ model: SegmentationModel) throws -> Data {
        try Self.model(model).serializedData()
    }
}
