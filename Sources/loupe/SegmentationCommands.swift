public import ArgumentParser
import Crypto
import Foundation
import LoupeBench
import LoupeProto
import LoupeSegmentation
import LoupeStorage
import LoupeVision

/// Network and training options shared by `loupe train` and friends.
struct NetworkOptions: ParsableArguments {
    @Option(help: "Input channels: 1 (grey) or 3 (RGB).") var channels = 1
    @Option(help: "Classes, background included.") var classes = 4
    @Option(help: "Channels of the first U-Net block.") var baseWidth = UNetConfiguration.standard.baseWidth
    @Option(help: "Number of 2x downsamplings.") var depth = UNetConfiguration.standard.depth

    var configuration: UNetConfiguration {
        UNetConfiguration(inputChannels: channels, classes: classes, baseWidth: baseWidth, depth: depth)
    }
}

struct TrainLocalCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "local",
        abstract: "Train a segmentation model on a labelled image folder, here (the default: `loupe train --dataset DIR …`).",
        discussion: """
            Reads DIR/images/SPLIT/NAME.{jpg,png} with masks at DIR/annotations/SPLIT/NAME.png (class index per pixel), \
            as NEU-Seg is laid out. Holds out --validation of the images (by name hash), validates after each pass and \
            keeps the best model. Give --iterations (passes over the images) or --minutes.
            """
    )
    @Option(help: "Dataset directory.") var dataset: String
    @Option(help: "Split folder under images/ and annotations/.") var split = "training"
    @Option(help: "Where to write the model.") var output: String
    @Option(help: "Passes over the labelled images (the page's \"Number of Iterations\").") var iterations: Int?
    @Option(help: "Train for this many minutes instead.") var minutes: Double?
    @OptionGroup var network: NetworkOptions
    @Option(help: "Images per step.") var batch = 8
    @Option(help: "Side of the random training crops (a multiple of 2^depth).") var crop = 192
    @Option(help: "Peak learning rate (AdamW, cosine schedule).") var learningRate: Float = 3e-3
    @Option(help: "Share of images held out for validation.") var validation = 0.1
    @Option(help: "Rotation range, ± degrees.") var rotation = 10.0
    @Option(help: "Brightness range, ± fraction of full scale.") var brightness = 0.1
    @Option(help: "Contrast range, ± fraction.") var contrast = 0.1
    @Flag(help: "Do not flip images.") var noFlip = false
    @Option(
        help: "Draw images of defect classes seen in fewer than this share of images more often (repeat factor sampling; 0 turns it off).")
    var repeatThreshold = 1.0
    @Option(help: "Largest cross-entropy class weight (sqrt of background to class over the drawn pixels); 1 turns weighting off.")
    var maxClassWeight: Float = TrainingConfiguration().maxClassWeight
    @Option(
        help: ArgumentHelp(
            "Hard example mining: the cross-entropy counts only pixels whose true class's probability is below this (and at least "
                + "1/16 of them); 0 counts every pixel."))
    var hardPixelProbability: Float = TrainingConfiguration().hardPixelProbability
    @Option(help: "Random seed; the same seed and threads give the same model.") var seed: UInt64 = 1
    @Option(help: "Threads for oneDNN.") var threads = ProcessInfo.processInfo.activeProcessorCount
    @Option(help: "Convolution precision while training: fp32, or bf16 (AVX-512; fp32 weights and optimiser).")
    var precision: InferencePrecision = .fp32
    @Option(help: "Read only the first N images (for a quick look).") var limit: Int?
    @Option(help: "Class names, comma-separated, background first.") var classNames: String?

    func run() async throws {
        guard (iterations == nil) != (minutes == nil) else {
            throw ValidationError("give exactly one of --iterations N or --minutes M")
        }
        var config = TrainingConfiguration(network: network.configuration)
        config.passes = iterations ?? 1
        config.timeBudgetSeconds = minutes.map { $0 * 60 }
        config.batchSize = batch
        config.cropSize = crop
        config.optimizer.learningRate = learningRate
        config.validationFraction = validation
        config.repeatThreshold = repeatThreshold
        config.maxClassWeight = maxClassWeight
        config.hardPixelProbability = hardPixelProbability
        config.augmentation = Augmentation(
            flipHorizontal: !noFlip, flipVertical: !noFlip, rotationDegrees: rotation, brightness: brightness, contrast: contrast)
        config.seed = seed
        config.threads = threads
        config.precision = precision
        try config.validate()
        let bar = ProgressBar()
        let data = try SegmentationDataset.load(
            directory: dataset, split: split, channels: network.channels, classes: network.classes, limit: limit
        ) { done, total in
            bar.update(fraction: Double(done) / Double(total), "loading \(done)/\(total)")
        }
        bar.finish()
        let counts = data.pixelCounts
        let total = Double(counts.reduce(0, +))
        print(
            "dataset: \(data.items.count) images from \(dataset)/images/\(split); class pixel shares "
                + counts.map { String(format: "%.1f%%", 100 * Double($0) / total) }.joined(separator: " "))
        let names = classNames?.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } ?? []
        let trainer = Trainer(configuration: config, classes: ClassInfo.defaults(count: network.classes, names: names))
        let control = TrainingControl()
        let interrupt = SignalCancellation(control)
        defer { interrupt.stop() }
        let result = try trainer.train(data, control: control) { progress in
            bar.update(fraction: progress.fraction, Self.describe(progress))
            if progress.phase == .validating, let miou = progress.validationMIoU {
                bar.log(
                    "pass \(progress.pass): loss \(String(format: "%.4f", progress.loss)), validation mIoU "
                        + "\(String(format: "%.4f", miou)) ["
                        + (progress.validationIoU ?? []).map { String(format: "%.3f", $0) }.joined(separator: " ") + "]")
            }
        }
        bar.finish()
        var model = result.model
        model.metadata.description =
            "loupe train --dataset \(dataset) " + (minutes.map { "--minutes \($0)" } ?? "--iterations \(iterations!)")
        try ModelFile.write(model, to: output)
        print(
            String(
                format: "trained %d passes (%d steps) in %.0f s at %.1f images/s; best validation mIoU %.4f; wrote %@",
                result.passes, result.steps, result.seconds, result.imagesPerSecond, model.metadata.validationMIoU, output))
    }

    static func describe(_ p: TrainingProgress) -> String {
        let pass = p.passes.map { "pass \(p.pass)/\($0)" } ?? "pass \(p.pass)"
        switch p.phase {
        case .validating: return "\(pass) validating"
        default:
            return String(
                format: "%@ step %d  loss %.4f  %.1f img/s  ETA %@", pass, p.step, p.loss, p.imagesPerSecond, formatDuration(p.etaSeconds))
        }
    }
}

struct EvalCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Score a model on a labelled split: per-class IoU, mIoU, the confusion matrix, and precision and recall over the "
            + "confidence threshold.",
        discussion: """
            The IoU table and the confusion matrix count every pixel as its most likely class. The threshold table then \
            counts a pixel as a defect only where that class's probability reaches the threshold, as live inspection does \
            (the page's slider): per class precision, recall and IoU at thresholds 0.05 to 0.95, the threshold where the \
            defect classes' mean IoU peaks on this split, and the model's own calibrated threshold (chosen the same way on \
            its validation split when it was trained). Last, each image is judged as a part by the fail rule (a part fails \
            when one connected region of a defect class covers --min-defect-pixels or more, as a recipe's rule does live): \
            over the threshold, the escapes (defective parts judged good) and false rejects (good parts judged bad), per \
            class at the model's threshold. With --report DIR it also writes DIR/index.html, a page of pictures: the \
            training curve the file carries, precision against recall and IoU over the threshold (the model's validation \
            split and this split), escapes and false rejects over the threshold, the confusion matrix, and the --worst \
            images of lowest defect IoU with truth and prediction overlaid.
            """
    )
    @Option(help: "Model file.") var model: String
    @Option(help: "Dataset directory (images/SPLIT and annotations/SPLIT).") var dataset: String
    @Option(help: "Split to score.") var split = "test"
    @Option(help: "fp32 or bf16.") var precision: InferencePrecision = .fp32
    @Option(help: "Threads for oneDNN.") var threads = ProcessInfo.processInfo.activeProcessorCount
    @Option(help: "The fail rule's smallest defect region, pixels, for the part figures.")
    var minDefectPixels = FailRule().minimumDefectPixels
    @Option(help: "Write a report of pictures into this directory (index.html, report.css, worst-NN.png).") var report: String?
    @Option(help: "Images of lowest defect IoU the report shows.") var worst = 8
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard minDefectPixels >= 1 else { throw ValidationError("--min-defect-pixels must be at least 1, not \(minDefectPixels)") }
        guard (0...1000).contains(worst) else { throw ValidationError("--worst must be 0 to 1000, not \(worst)") }
    }

    func run() async throws {
        DNNLRuntime.setThreads(threads)
        let (loaded, _) = try ModelFile.read(path: model)
        let bar = ProgressBar()
        let data = try SegmentationDataset.load(
            directory: dataset, split: split, channels: loaded.configuration.inputChannels, classes: loaded.configuration.classes
        ) { done, total in
            bar.update(fraction: Double(done) / Double(total), "loading \(done)/\(total)")
        }
        let start = Date()
        let rule = FailRule(minimumDefectPixels: minDefectPixels)
        // The report's worst images are scored at the threshold it draws them at.
        let drawnAt = TrainingReport(title: "", model: loaded).reportThreshold
        let assessment = try Trainer.assess(loaded, on: data, precision: precision, rule: rule, scoredAt: report == nil ? nil : drawnAt) {
            done, total in
            bar.update(fraction: Double(done) / Double(total), "evaluating \(done)/\(total)")
        }
        let (matrix, tally, parts) = (assessment.matrix, assessment.tally, assessment.parts)
        // The part figures are read at the model's threshold, or at this split's best for a model without one.
        let partThreshold = loaded.metadata.calibratedThreshold > 0 ? loaded.metadata.calibratedThreshold : tally.best.threshold
        let calls = tally.defectCalls(at: partThreshold)
        bar.finish()
        let seconds = Date().timeIntervalSince(start)
        if let report {
            let images = try TrainingReport.worstImages(
                loaded, on: data, assessment: assessment, count: worst, threshold: drawnAt, precision: precision)
            let page = TrainingReport(
                title: "\(URL(fileURLWithPath: model).lastPathComponent) on \(split)", model: loaded,
                evaluation: TrainingReport.Evaluation(split: split, images: data.items.count, assessment: assessment, worst: images))
            try page.write(to: report)
            FileHandle.standardError.write(Data("wrote the report to \(report)/index.html\n".utf8))
        }
        if json {
            let object: [String: Any] = [
                "model": model, "split": split, "images": data.items.count, "precision": precision.rawValue,
                "iou": matrix.iou, "miou": matrix.meanIoU, "pixel_accuracy": matrix.pixelAccuracy, "confusion": matrix.counts,
                "classes": loaded.classes.map(\.name),
                "thresholds": tally.curve.map {
                    [
                        "threshold": $0.threshold, "precision": $0.precision, "recall": $0.recall, "iou": $0.iou,
                        "defect_miou": $0.defectMeanIoU,
                    ]
                },
                "best_threshold": tally.best.threshold, "calibrated_threshold": loaded.metadata.calibratedThreshold,
                "defect_calls": [
                    "threshold": partThreshold, "right": calls.right, "wrong": calls.wrong,
                ],
                "parts": [
                    "min_defect_pixels": rule.minimumDefectPixels, "good_parts": parts.goodParts, "defective_parts": parts.defectiveParts,
                    "threshold": partThreshold,
                    "curve": parts.curve.map {
                        [
                            "threshold": $0.threshold, "escapes": $0.escapes, "false_rejects": $0.falseRejects,
                            "escape_rate": parts.escapeRate($0) as Any? ?? NSNull(),
                            "false_reject_rate": parts.falseRejectRate($0) as Any? ?? NSNull(),
                        ]
                    },
                ],
            ]
            print(
                String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]), as: UTF8.self))
            return
        }
        print(
            "\(model) on \(dataset) split \(split): \(data.items.count) images, \(precision.rawValue), "
                + "\(String(format: "%.1f", Double(data.items.count) / seconds)) images/s"
        )
        print(
            TextTable.render(
                header: ["class", "IoU"], rows: zip(loaded.classes, matrix.iou).map { [$0.name, String(format: "%.4f", $1)] }))
        print(
            String(
                format: "mIoU %.4f over %d classes (background included); pixel accuracy %.4f", matrix.meanIoU, matrix.classes,
                matrix.pixelAccuracy))
        print("confusion matrix (rows: truth, columns: predicted, pixels):")
        let names = loaded.classes.map(\.name)
        print(
            TextTable.render(
                header: ["truth \\ predicted"] + names,
                rows: (0..<matrix.classes).map { t in
                    [names[t]] + (0..<matrix.classes).map { String(matrix.count(truth: t, predicted: $0)) }
                }))
        let best = tally.best
        let calibrated = loaded.metadata.calibratedThreshold
        print("over the confidence threshold (a defect pixel counts where its class's probability reaches it; P precision, R recall):")
        let defects = Array(names.dropFirst())
        print(
            TextTable.render(
                header: ["threshold"] + defects.flatMap { ["\($0) P", "R", "IoU"] } + ["defect mIoU", ""],
                rows: tally.curve.map { point in
                    let marks = [
                        point.threshold == best.threshold ? "best here" : "", abs(point.threshold - calibrated) < 0.001 ? "model's" : "",
                    ]
                    return [String(format: "%.2f", point.threshold)]
                        + (1..<matrix.classes).flatMap { c in
                            [point.precision[c], point.recall[c], point.iou[c]].map { String(format: "%.3f", $0) }
                        }
                        + [String(format: "%.4f", point.defectMeanIoU), marks.filter { !$0.isEmpty }.joined(separator: ", ")]
                }))
        let atCalibrated = tally.point(at: calibrated)
        print(
            String(
                format: "best threshold on this split %.2f (defect mIoU %.4f); the model's calibrated threshold %@", best.threshold,
                best.defectMeanIoU,
                calibrated > 0
                    ? String(format: "%.2f (defect mIoU here %.4f)", calibrated, atCalibrated.defectMeanIoU)
                    : "none (trained without a validation split)"))
        print(
            String(
                format: "defect pixels called at %.2f: %d right, %d wrong (%.2f wrong for each right one)", partThreshold, calls.right,
                calls.wrong, Double(calls.wrong) / Double(max(1, calls.right))))
        print(
            "\(data.items.count) images judged as parts (a part fails when one region of a defect class covers \(rule.minimumDefectPixels) "
                + "pixels or more): \(parts.defectiveParts[0]) defective, \(parts.goodParts) good in truth")
        print(
            TextTable.render(
                header: ["threshold", "escapes", "escape rate", "false rejects", "false-reject rate", ""],
                rows: parts.curve.map { point in
                    [
                        String(format: "%.2f", point.threshold), "\(point.escapes[0])", PartVerdicts.percent(parts.escapeRate(point)),
                        "\(point.falseRejects[0])", PartVerdicts.percent(parts.falseRejectRate(point)),
                        abs(point.threshold - partThreshold) < 0.001 ? "read here" : "",
                    ]
                }))
        if let point = parts.point(at: partThreshold) {
            print(String(format: "at threshold %.2f: %@", point.threshold, parts.summary(point)))
            for c in 1..<matrix.classes where parts.defectiveParts[c] > 0 || point.falseRejects[c] > 0 {
                print("  \(names[c]): \(parts.summary(point, class: c))")
            }
        }
    }
}

extension InferencePrecision: ExpressibleByArgument {}

struct ModelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model",
        abstract: "Model files and the manager's model registry: list, show, push, roll back, export, sign, verify.",
        subcommands: [List.self, Show.self, Push.self, Rollback.self, Rollout.self, ExportONNX.self, Publish.self, Sign.self, Verify.self]
    )

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a model's architecture, classes, metrics and signature, from a file or a version on the manager.",
            discussion:
                "A version name (not an existing file) is looked up on the manager: its registry record, the cameras that run it, and the "
                + "model itself."
        )
        @Argument(help: "Model file or version name.") var file: String
        @OptionGroup var connection: ManagerConnectionOptions

        func run() async throws {
            let model: SegmentationModel, status: ModelSignatureStatus
            if FileManager.default.fileExists(atPath: file) {
                (model, status) = try ModelFile.read(path: file)
            } else {
                let list = try await ModelCommand.list(version: file, connection: connection)
                guard let info = list.versions.first else {
                    throw FleetCommandError(message: "no model version \(file)", hint: "`loupe model list` shows them")
                }
                print(
                    "\(info.version): inspection type \(info.inspectionType), \(info.sizeBytes) bytes, sha256 \(info.sha256.shortHex)…, "
                        + "parent \(info.parentVersion.isEmpty ? "-" : info.parentVersion), created \(info.createdUnixMs.unixDateText)"
                )
                print("made: \(info.description_p)")
                print(
                    "installed on: \(info.installedOn.isEmpty ? "-" : info.installedOn.joined(separator: ", ")); meant for: "
                        + "\(list.cameras.filter { $0.desiredVersion == info.version }.map(\.cameraID).joined(separator: ", "))"
                )
                (model, status) = try ModelFile.decode(try await ModelCommand.download(file, connection: connection), name: file)
            }
            let m = model.metadata
            print("\(file): \(model.configuration), \(model.weights.parameterCount) parameters")
            print("classes: " + model.classes.map { String(format: "%@ #%06X", $0.name, $0.color) }.joined(separator: ", "))
            print("normalisation: mean \(model.normalization.mean), std \(model.normalization.std)")
            print("version \(m.version) (parent \(m.parentVersion)), created \(ISO8601DateFormatter().string(from: m.createdAt))")
            print(
                String(
                    format: "validation mIoU %.4f [%@]; %d passes, %d steps, %.0f s; %d training, %d validation images",
                    m.validationMIoU, m.validationIoU.map { String(format: "%.3f", $0) }.joined(separator: " "), m.passes, m.iterations,
                    m.trainingSeconds, m.trainingImages, m.validationImages))
            print("dataset SHA-256: \(m.datasetSHA256.isEmpty ? "-" : m.datasetSHA256)")
            if let chosen = m.calibration.first(where: { $0.threshold == m.calibratedThreshold }) {
                let perClass = zip(model.classes, zip(chosen.precision, chosen.recall)).dropFirst().map {
                    String(format: "%@ P %.3f R %.3f", $0.name, $1.0, $1.1)
                }
                print(
                    String(
                        format: "calibrated threshold %.2f (validation defect mIoU %.4f there; ", m.calibratedThreshold,
                        chosen.defectMeanIoU)
                        + perClass.joined(separator: ", ") + ")")
            } else {
                print("calibrated threshold: none (trained without a validation split)")
            }
            if let parts = m.parts, let point = parts.point(at: m.calibratedThreshold) {
                print(
                    "validation parts (a part fails on one defect region of \(parts.rule.minimumDefectPixels) pixels or more), at "
                        + String(format: "%.2f: ", point.threshold) + parts.summary(point))
                for c in 1..<model.configuration.classes where parts.defectiveParts[c] > 0 || point.falseRejects[c] > 0 {
                    print("  \(model.classes[c].name): \(parts.summary(point, class: c))")
                }
            }
            switch status {
            case .unsigned: print("signature: none")
            case .signed(let key): print("signature: Ed25519, valid, key \(key.hexString)")
            }
        }
    }

    struct ExportONNX: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "export-onnx", abstract: "Write the model as ONNX (opset 13), batch norm folded in.")
        @Argument(help: "Model file, or a version name fetched from the manager.") var file: String
        @Option(help: "Where to write the .onnx file.") var output: String
        @OptionGroup var connection: ManagerConnectionOptions

        func run() async throws {
            let model: SegmentationModel
            if FileManager.default.fileExists(atPath: file) {
                model = try ModelFile.read(path: file).0
            } else {
                model = try ModelFile.decode(try await ModelCommand.download(file, connection: connection), name: file).0
            }
            try ONNXExport.data(model).write(to: URL(fileURLWithPath: output), options: .atomic)
            print(
                "wrote \(output): input \"input\" N×\(model.configuration.inputChannels)×H×W (H, W multiples of "
                    + "\(model.configuration.sizeMultiple)), output \"logits\" N×\(model.configuration.classes)×H×W"
            )
        }
    }

    struct Sign: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Sign a model file with an Ed25519 key (64 hex digits or raw 32 bytes).")
        @Argument(help: "Model file (signed in place).") var file: String
        @Option(help: "Ed25519 private key file.") var key: String

        func run() async throws {
            let signingKey = try SigningKeyFile.load(key)
            let data = try Data(contentsOf: URL(fileURLWithPath: file))
            try ModelFile.sign(data, with: signingKey, name: file).write(to: URL(fileURLWithPath: file), options: .atomic)
            print("signed \(file) with key \(signingKey.publicKey.rawRepresentation.hexString)")
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check a model file's hash and signature against a trusted public key.")
        @Argument(help: "Model file.") var file: String
        @Option(help: "Trusted Ed25519 public key (64 hex digits or raw 32 bytes).") var publicKey: String

        func run() async throws {
            let key = try SigningKeyFile.loadPublic(publicKey)
            _ = try ModelFile.read(path: file, trustedKeys: [key])
            print("\(file): signature valid")
        }
    }
}

extension BenchCommand {
    struct Segmentation: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "U-Net inference latency (batch 1, fp32 and bf16) and training throughput (batch 8, 256x256) on oneDNN.",
            discussion:
                "Prints medians. Tests/Reference/bench_peers.py runs this together with ONNX Runtime and PyTorch and prints the ratios."
        )
        @OptionGroup var network: NetworkOptions
        @Option(help: "Runs per inference figure; the median is reported.") var repetitions = 15
        @Option(help: "Timed training steps; the median is reported (0 skips training).") var steps = 8
        @Option(help: "Threads for oneDNN.") var threads = ProcessInfo.processInfo.activeProcessorCount
        @Option(help: "Also write the benchmarked (randomly initialised) model as ONNX here.") var exportONNX: String?
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            var options = SegmentationBenchmark.Options()
            options.configuration = network.configuration
            options.repetitions = repetitions
            options.trainingSteps = steps
            options.threads = threads
            if let exportONNX {
                let model = SegmentationModel(weights: Weights(configuration: network.configuration, seed: 1))
                try ONNXExport.data(model).write(to: URL(fileURLWithPath: exportONNX))
            }
            let progress = ProgressBar()
            let rows = try SegmentationBenchmark(options: options) { progress.update($0) }.run()
            progress.finish()
            if json {
                let object = Dictionary(uniqueKeysWithValues: rows.map { ($0.name, $0.median) })
                print(
                    String(
                        decoding: try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]), as: UTF8.self)
                )
                return
            }
            print("loupe bench segmentation: \(network.configuration), \(threads) threads, bf16 native: \(DNNLRuntime.hasNativeBF16)")
            print(
                TextTable.render(
                    header: ["figure", "median"], rows: rows.map { [$0.name, String(format: "%.2f %@", $0.median, $0.unit)] }))
        }
    }
}

/// Ctrl-C (SIGINT) cancels training cleanly instead of killing the process.
final class SignalCancellation: @unchecked Sendable {
    private let source: any DispatchSourceSignal

    init(_ control: TrainingControl) {
        signal(SIGINT, SIG_IGN)
        source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        source.setEventHandler {
            FileHandle.standardError.write(Data("\ncancelling…\n".utf8))
            control.cancel()
        }
        source.resume()
    }

    func stop() {
        source.cancel()
        signal(SIGINT, SIG_DFL)
    }
}
