import Foundation
import LoupeSegmentation

/// Reads the fixture that Tests/Reference/make_fixture.py writes with PyTorch.
struct ReferenceFixture {
    struct Entry {
        var shape: [Int]
        var values: [Float]
    }

    var entries: [String: Entry] = [:]
    var order: [String] = []

    static let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../Reference/unet-fixture.bin").standardizedFileURL.path

    init(path: String = Self.path) throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        var offset = 0
        func u32() -> Int {
            defer { offset += 4 }
            return Int(data[offset..<offset + 4].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) })
        }
        guard data.prefix(8) == Data("LOUPEFX1".utf8) else { throw CocoaError(.fileReadCorruptFile) }
        offset = 8
        let count = u32()
        for _ in 0..<count {
            let length = u32()
            let name = String(decoding: data[offset..<offset + length], as: UTF8.self)
            offset += length
            let rank = u32()
            let shape = (0..<rank).map { _ in u32() }
            let elements = shape.reduce(1, *)
            let values = data[offset..<offset + 4 * elements].withUnsafeBytes { raw in
                (0..<elements).map { raw.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self) }
            }
            offset += 4 * elements
            entries[name] = Entry(shape: shape, values: values)
            order.append(name)
        }
    }

    subscript(name: String) -> Entry { entries[name]! }

    var configuration: UNetConfiguration {
        let c = self["config"].values.map { Int($0) }
        return UNetConfiguration(inputChannels: c[0], classes: c[1], baseWidth: c[2], depth: c[3])
    }

    func weights(prefix: String = "param/", bufferPrefix: String = "buffer/") throws -> Weights {
        let configuration = configuration
        let parameters = configuration.parameterShapes.map { name, shape in
            NamedTensor(name: name, shape: shape, values: self[prefix + name].values)
        }
        let buffers = configuration.bufferShapes.map { name, shape in
            NamedTensor(name: name, shape: shape, values: self[bufferPrefix + name].values)
        }
        return try Weights(configuration: configuration, parameters: parameters, buffers: buffers)
    }

    var batch: Batch {
        let input = self["input"]
        return Batch(
            count: input.shape[0], channels: input.shape[1], height: input.shape[2], width: input.shape[3],
            images: input.values, labels: self["labels"].values.map { UInt8($0) })
    }
}

/// The largest absolute difference, and the largest reference magnitude.
func largestDifference(_ a: [Float], _ b: [Float]) -> (difference: Float, scale: Float) {
    precondition(a.count == b.count)
    var difference: Float = 0, scale: Float = 0
    for i in a.indices {
        difference = max(difference, abs(a[i] - b[i]))
        scale = max(scale, abs(b[i]))
    }
    return (difference, scale)
}
