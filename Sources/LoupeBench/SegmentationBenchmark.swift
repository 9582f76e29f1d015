import Foundation
import LoupeImaging
public import LoupeSegmentation

/// Inference latency (batch 1) and training throughput of the U-Net on oneDNN.
public struct SegmentationBenchmark {
    public struct Options: Sendable {
        public var configuration = UNetConfiguration.standard
        public var sizes = [256, 512]
        public var repetitions = 15
        public var trainingSteps = 8
        public var trainingBatch = 8
        public var trainingSize = 256
        public var threads = ProcessInfo.processInfo.activeProcessorCount
        public init() {}
    }

    public struct Row: Sendable {
        public var name: String
        public var unit: String
        public var median: Double
    }

    public let options: Options
    let report: (String) -> Void

    public init(options: Options, report: @escaping (String) -> Void = { _ in }) {
        self.options = options
        self.report = report
    }

    public func run() throws -> [Row] {
        DNNLRuntime.setThreads(options.threads)
        let model = SegmentationModel(weights: Weights(configuration: options.configuration, seed: 1))
        var rows: [Row] = []
        for precision in InferencePrecision.allCases {
            let segmenter = try Segmenter(model: model, precision: precision)
            for size in options.sizes {
                var random = SeededGenerator(seed: UInt64(size))
                let input = (0..<(size * size * options.configuration.inputChannels)).map { _ in random.normal() }
                _ = try segmenter.logits(planar: input, width: size, height: size)
                var times: [Double] = []
                for repetition in 0..<options.repetitions {
                    report("inference \(precision.rawValue) \(size)x\(size): \(repetition + 1)/\(options.repetitions)")
                    let start = DispatchTime.now()
                    _ = try segmenter.logits(planar: input, width: size, height: size)
                    times.append(Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e6)
                }
                rows.append(Row(name: "inference \(precision.rawValue) \(size)x\(size)", unit: "ms", median: median(times)))
            }
        }
        guard options.trainingSteps > 0 else { return rows }
        // fp32 and, where the CPU has it, bf16 training, their steps alternating so that a slow minute of the
        // shared host falls on both.
        let precisions: [InferencePrecision] = DNNLRuntime.canRunBF16 ? [.fp32, .bf16] : [.fp32]
        let engines = try precisions.map { precision in
            try TrainingEngine(
                weights: model.weights, loss: LossConfiguration(classWeights: [Float](repeating: 1, count: options.configuration.classes)),
                precision: precision)
        }
        let size = options.trainingSize, batch = options.trainingBatch
        var random = SeededGenerator(seed: 9)
        let images = (0..<(batch * size * size * options.configuration.inputChannels)).map { _ in random.normal() }
        let labels = (0..<(batch * size * size)).map { _ in UInt8(random.below(options.configuration.classes)) }
        let data = Batch(
            count: batch, channels: options.configuration.inputChannels, height: size, width: size, images: images, labels: labels)
        for engine in engines { _ = try engine.step(data, learningRate: 1e-4) }
        var rates = [[Double]](repeating: [], count: engines.count)
        for step in 0..<options.trainingSteps {
            for (index, engine) in engines.enumerated() {
                report("training \(engine.precision.rawValue) batch \(batch) \(size)x\(size): step \(step + 1)/\(options.trainingSteps)")
                let start = DispatchTime.now()
                _ = try engine.step(data, learningRate: 1e-4)
                let seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
                rates[index].append(Double(batch) / seconds)
            }
        }
        for (index, precision) in precisions.enumerated() {
            // The fp32 row keeps its old name: bench_peers.py and earlier records read it.
            let name = precision == .fp32 ? "training batch \(batch) \(size)x\(size)" : "training bf16 batch \(batch) \(size)x\(size)"
            rows.append(Row(name: name, unit: "images/s", median: median(rates[index])))
        }
        if rates.count == 2 {
            let ratios = zip(rates[1], rates[0]).map { $0 / $1 }
            rows.append(Row(name: "training bf16 / fp32", unit: "ratio", median: median(ratios)))
        }
        return rows
    }
}
