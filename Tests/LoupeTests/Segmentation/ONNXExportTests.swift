import Foundation
import LoupeImaging
import LoupeSegmentation
import Testing

extension SegmentationTests {
    /// The ONNX export, run by ONNX Runtime (from the virtualenv Deploy/install-deps makes).
    @Suite struct ONNXExportTests {
        init() { DNNLRuntime.setThreads(1) }

        @Test func onnxRuntimeGivesLoupesLogits() throws {
            guard let python = venvPython() else {
                print(
                    "SKIPPED onnxRuntimeGivesLoupesLogits: no Python with onnxruntime; run Deploy/install-deps (it makes "
                        + "~/.cache/loupe/venv) or set LOUPE_PYTHON"
                )
                return
            }
            let fixture = try ReferenceFixture()
            let model = SegmentationModel(weights: try fixture.weights(prefix: "final/", bufferPrefix: "final/"))
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("loupe-onnx-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let onnx = directory.appendingPathComponent("model.onnx")
            try ONNXExport.data(model).write(to: onnx)

            // A size that is not square, to catch transposed axes.
            let (width, height) = (48, 32)
            var random = SeededGenerator(seed: 3)
            let input = (0..<(width * height)).map { _ in random.normal() }
            let inputFile = directory.appendingPathComponent("input.bin")
            let outputFile = directory.appendingPathComponent("output.bin")
            try input.withUnsafeBufferPointer { Data(buffer: $0) }.write(to: inputFile)

            let process = Process()
            process.executableURL = URL(fileURLWithPath: python)
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Reference/run_onnx.py")
                .standardizedFileURL.path
            process.arguments = [script, onnx.path, inputFile.path, "1", "1", "\(height)", "\(width)", outputFile.path]
            try process.run()
            process.waitUntilExit()
            #expect(process.terminationStatus == 0, "onnxruntime failed on the export")
            let data = try Data(contentsOf: outputFile)
            let theirs = data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            let ours = try Segmenter(model: model).logits(planar: input, width: width, height: height)
            #expect(theirs.count == ours.count)
            let (difference, scale) = largestDifference(ours, theirs)
            print("ONNX Runtime vs Loupe logits: largest difference \(difference) (logits up to \(scale))")
            #expect(difference <= 1e-3)
        }
    }
}
