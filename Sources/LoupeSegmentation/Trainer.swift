public import Foundation
import LoupeImaging
public import LoupeVision
import Synchronization

/// The seed's advanced settings: random flips, rotation, brightness and contrast.
public struct Augmentation: Codable, Sendable, Equatable {
    public var flipHorizontal: Bool
    public var flipVertical: Bool
    /// Uniform rotation in ±degrees.
    public var rotationDegrees: Double
    /// Uniform brightness shift in ±(this × 255) grey levels.
    public var brightness: Double
    /// Uniform contrast factor in 1 ± this.
    public var contrast: Double

    public init(
        flipHorizontal: Bool = true, flipVertical: Bool = true, rotationDegrees: Double = 10, brightness: Double = 0.1,
        contrast: Double = 0.1
    ) {
        self.flipHorizontal = flipHorizontal
        self.flipVertical = flipVertical
        self.rotationDegrees = rotationDegrees
        self.brightness = brightness
        self.contrast = contrast
    }

    public static let none = Augmentation(flipHorizontal: false, flipVertical: false, rotationDegrees: 0, brightness: 0, contrast: 0)
}

/// How to train. "Number of Iterations" on the page is `passes`.
public struct TrainingConfiguration: Codable, Sendable, Equatable {
    public var network: UNetConfiguration
    /// Passes over the labelled images ("Number of Iterations").
    public var passes: Int
    /// Stop after this many seconds instead (the schedule follows elapsed time).
    public var timeBudgetSeconds: Double?
    public var batchSize: Int
    /// Side of the square random crops; a multiple of 2^depth.
    public var cropSize: Int
    public var optimizer: AdamWConfiguration
    public var warmupSteps: Int
    public var augmentation: Augmentation
    public var diceWeight: Float
    /// The largest class weight of the cross-entropy (weights are sqrt(background / class) over the pixels the
    /// sampling draws, at least 1); 1 turns weighting off.
    public var maxClassWeight: Float
    /// Hard example mining for the cross-entropy (`LossConfiguration.hardPixelProbability`); 0: every pixel counts.
    public var hardPixelProbability: Float
    /// Repeat factor sampling for rare defects (after Gupta et al., LVIS, 2019):
    /// an image showing a class that appears in a share f of the training images,
    /// below this threshold t, weighs sqrt(t / f) instead of 1 when a pass draws
    /// its images, so a defect seen on a few ROIs is not drowned by the rest. A
    /// pass still draws as many images as there are. 0 turns it off.
    public var repeatThreshold: Double
    /// Share of the images held out for validation (by name hash).
    public var validationFraction: Double
    public var seed: UInt64
    public var threads: Int
    /// The rule the validation split's parts are judged by (escapes and false rejects); the camera's recipe's when it
    /// trains, the default elsewhere.
    public var failRule: FailRule
    /// The convolutions' precision (`TrainingEngine.precision`); bf16 needs AVX-512.
    public var precision: InferencePrecision

    public init(
        network: UNetConfiguration = .standard, passes: Int = 10, timeBudgetSeconds: Double? = nil, batchSize: Int = 8, cropSize: Int = 192,
        optimizer: AdamWConfiguration = AdamWConfiguration(), warmupSteps: Int = 20, augmentation: Augmentation = Augmentation(),
        diceWeight: Float = 1, repeatThreshold: Double = 1, validationFraction: Double = 0.1, seed: UInt64 = 1,
        threads: Int = ProcessInfo.processInfo.activeProcessorCount, failRule: FailRule = FailRule(), maxClassWeight: Float = 10,
        hardPixelProbability: Float = 0, precision: InferencePrecision = .fp32
    ) {
        self.failRule = failRule
        self.precision = precision
        self.network = network
        self.passes = passes
        self.timeBudgetSeconds = timeBudgetSeconds
        self.batchSize = batchSize
        self.cropSize = cropSize
        self.optimizer = optimizer
        self.warmupSteps = warmupSteps
        self.augmentation = augmentation
        self.diceWeight = diceWeight
        self.maxClassWeight = maxClassWeight
        self.hardPixelProbability = hardPixelProbability
        self.repeatThreshold = repeatThreshold
        self.validationFraction = validationFraction
        self.seed = seed
        self.threads = threads
    }

    /// Settings for training on labelled ROIs, as the camera page and the
    /// manager do: the standard network for these classes, crops no larger
    /// than the smallest ROI, a validation split (fixed by name hash) once
    /// there are ten or more ROIs, and either a number of passes or a time budget.
    public static func fitted(
        to dataset: any TrainingImages, passes: Int?, timeBudgetSeconds: Double?, augmentation: Augmentation?,
        seed: UInt64?, threads: Int
    ) throws(SegmentationError) -> TrainingConfiguration {
        let summaries = dataset.summaries
        guard let first = summaries.first else { throw .emptyDataset("no labelled ROIs to train on") }
        guard summaries.contains(where: { !$0.defectClasses.isEmpty }) else { throw .noLabelledPixels("the labelled ROIs") }
        let network = UNetConfiguration(inputChannels: first.channels, classes: dataset.classes)
        let side = summaries.map { min($0.width, $0.height) }.min() ?? 0
        // 128 px crops: defects are local, and small crops buy four times the steps of whole ROIs.
        let crop = min(128, side - side % network.sizeMultiple)
        guard crop >= network.sizeMultiple else {
            throw .invalidConfiguration("ROIs must be at least \(network.sizeMultiple) px on each side to train on")
        }
        let configuration = TrainingConfiguration(
            network: network, passes: passes ?? (timeBudgetSeconds == nil ? 30 : 0), timeBudgetSeconds: timeBudgetSeconds,
            batchSize: min(8, summaries.count), cropSize: crop, augmentation: augmentation ?? Augmentation(),
            validationFraction: summaries.count >= 10 ? 0.1 : 0, seed: seed ?? 1, threads: threads)
        try configuration.validate()
        return configuration
    }

    public func validate() throws(SegmentationError) {
        try network.validate()
        guard passes >= 1 || timeBudgetSeconds != nil else { throw .invalidConfiguration("passes must be at least 1") }
        if let budget = timeBudgetSeconds, !(budget > 0) { throw .invalidConfiguration("the time budget must be positive") }
        guard (1...256).contains(batchSize) else { throw .invalidConfiguration("batch size must be 1…256, not \(batchSize)") }
        guard cropSize >= network.sizeMultiple, cropSize % network.sizeMultiple == 0 else {
            throw .invalidConfiguration("crop size \(cropSize) must be a positive multiple of \(network.sizeMultiple) (2^depth)")
        }
        guard repeatThreshold.isFinite, (0...1).contains(repeatThreshold) else {
            throw .invalidConfiguration("repeat threshold must be in [0, 1], not \(repeatThreshold)")
        }
        guard (0..<1).contains(validationFraction) else { throw .invalidConfiguration("validation fraction must be in [0, 1)") }
        guard maxClassWeight.isFinite, (1...100).contains(maxClassWeight) else {
            throw .invalidConfiguration("the largest class weight must be 1…100, not \(maxClassWeight)")
        }
        guard hardPixelProbability.isFinite, (0...1).contains(hardPixelProbability) else {
            throw .invalidConfiguration("the hard-pixel probability must be in [0, 1] (0: off), not \(hardPixelProbability)")
        }
        guard optimizer.learningRate > 0, optimizer.learningRate.isFinite else {
            throw .invalidConfiguration("learning rate must be positive")
        }
    }
}

/// What the trainer reports as it goes.
public struct TrainingProgress: Sendable {
    public enum Phase: String, Sendable { case loading, training, validating, finished }
    public var phase: Phase
    /// 1-based pass ("iteration" on the page).
    public var pass: Int
    /// Passes planned; nil under a time budget.
    public var passes: Int?
    public var step: Int
    /// Steps planned (estimated under a time budget).
    public var totalSteps: Int
    public var loss: Float
    public var imagesPerSecond: Double
    public var elapsedSeconds: Double
    public var etaSeconds: Double
    /// After a validation: per-class IoU and mean.
    public var validationIoU: [Float]?
    public var validationMIoU: Float?
    /// Fraction done, 0…1.
    public var fraction: Double
}

/// Cancels a training run from another thread.
public final class TrainingControl: Sendable {
    private let flag = Atomic<Bool>(false)
    public init() {}
    public func cancel() { flag.store(true, ordering: .relaxed) }
    public var isCancelled: Bool { flag.load(ordering: .relaxed) }
}

public struct TrainingResult: Sendable {
    /// The model that scored best on validation (or the last one without a validation split).
    public var model: SegmentationModel
    public var passes: Int
    public var steps: Int
    public var seconds: Double
    public var imagesPerSecond: Double
    public var history: [(pass: Int, loss: Float, validationMIoU: Float?)]
}

/// Trains a U-Net on labelled images: batches of augmented random crops,
/// weighted cross-entropy plus Dice, AdamW on a cosine schedule, validation
/// after each pass, best model kept. Deterministic for a given seed and thread count.
/// It holds one batch of images at a time, so a set spooled to disk
/// (`SpooledImages`) may be larger than memory.
public struct Trainer {
    public let configuration: TrainingConfiguration
    public var classes: [ClassInfo]?

    public init(configuration: TrainingConfiguration, classes: [ClassInfo]? = nil) {
        self.configuration = configuration
        self.classes = classes
    }

    public func train(
        _ dataset: any TrainingImages, validation explicitValidation: (any TrainingImages)? = nil, starting: Weights? = nil,
        control: TrainingControl = TrainingControl(), progress: (TrainingProgress) -> Void = { _ in }
    ) throws(SegmentationError) -> TrainingResult {
        let config = configuration
        try config.validate()
        guard dataset.classes == config.network.classes else {
            throw .invalidConfiguration("the dataset has \(dataset.classes) classes, the network \(config.network.classes)")
        }
        guard !dataset.isEmpty else { throw .emptyDataset("no labelled images") }
        let (training, validation): (ImageSelection, ImageSelection)
        if let explicitValidation {
            (training, validation) = (ImageSelection(all: dataset), ImageSelection(all: explicitValidation))
        } else {
            (training, validation) = dataset.split(validationFraction: config.validationFraction)
        }
        guard !training.isEmpty else { throw .emptyDataset("every image fell in the validation split") }
        for item in training.summaries + validation.summaries where item.channels != config.network.inputChannels {
            throw .invalidInput("\(item.name) has \(item.channels) channels; the network takes \(config.network.inputChannels)")
        }
        let counts = training.pixelCounts
        guard counts.dropFirst().reduce(0, +) > 0 else { throw .noLabelledPixels("the training images") }

        DNNLRuntime.setThreads(config.threads)
        let repeats = Self.repeatFactors(training, threshold: config.repeatThreshold)
        let classWeights = Self.classWeights(training, repeats: repeats, cap: config.maxClassWeight)
        let normalization = Self.normalization(of: training, channels: config.network.inputChannels)
        let weights = starting ?? Weights(configuration: config.network, seed: config.seed)
        guard weights.configuration == config.network else {
            throw .invalidConfiguration("the starting model is a \(weights.configuration), not a \(config.network)")
        }
        let engine = try TrainingEngine(
            weights: weights,
            loss: LossConfiguration(
                classWeights: classWeights, diceWeight: config.diceWeight, hardPixelProbability: config.hardPixelProbability),
            optimizer: config.optimizer, precision: config.precision)

        var random = SeededGenerator(seed: config.seed ^ 0x5EED)
        let schedule = CosineSchedule(base: config.optimizer.learningRate, warmupSteps: config.warmupSteps)
        let stepsPerPass = max(1, (training.count + config.batchSize - 1) / config.batchSize)
        let plannedPasses = config.timeBudgetSeconds == nil ? config.passes : Int.max
        var totalSteps = config.timeBudgetSeconds == nil ? stepsPerPass * config.passes : stepsPerPass
        let start = Date()
        var step = 0
        var pass = 0
        var best: (weights: Weights, iou: [Float], miou: Float, loss: Float, assessment: Assessment?)?
        var history: [(Int, Float, Float?)] = []
        var lastLoss: Float = .nan
        var trainingSeconds = 0.0
        var imagesSeen = 0
        var timeUp = false

        func elapsed() -> Double { Date().timeIntervalSince(start) }
        func fraction() -> Double {
            if let budget = config.timeBudgetSeconds { return min(1, elapsed() / budget) }
            return min(1, Double(step) / Double(totalSteps))
        }
        func throughput() -> Double { Double(imagesSeen) / max(trainingSeconds, 1e-9) }
        func report(_ phase: TrainingProgress.Phase, loss: Float, eta: Double, iou: [Float]? = nil, miou: Float? = nil, done: Double? = nil)
        {
            progress(
                TrainingProgress(
                    phase: phase, pass: pass, passes: config.timeBudgetSeconds == nil ? config.passes : nil, step: step,
                    totalSteps: phase == .finished ? step : totalSteps, loss: loss, imagesPerSecond: throughput(),
                    elapsedSeconds: elapsed(),
                    etaSeconds: eta, validationIoU: iou, validationMIoU: miou, fraction: done ?? fraction()))
        }

        while pass < plannedPasses && !timeUp {
            pass += 1
            // Each image's expected draws rounded at random, so a pass keeps its length.
            // Whole factors (all 1 when sampling is off) draw no random number, so the
            // order is then the plain shuffle it always was.
            var order: [Int] = []
            for (index, share) in repeats.enumerated() {
                let whole = Int(share.rounded(.down))
                let draws = whole + (share > Double(whole) && Double(random.uniform(0, 1)) < share - Double(whole) ? 1 : 0)
                order += repeatElement(index, count: draws)
            }
            if order.isEmpty { order = Array(0..<training.count) }  // every fraction rounded down: a tiny set, by chance
            order.shuffle(using: &random)
            var passLoss = 0.0
            var passSteps = 0
            for first in stride(from: 0, to: order.count, by: config.batchSize) {
                if control.isCancelled { throw .cancelled }
                let indices = (0..<config.batchSize).map { order[(first + $0) % order.count] }
                var items: [LabelledImage] = []
                for index in indices { items.append(try training.image(at: index)) }
                let batch = makeBatch(items, normalization: normalization, random: &random)
                let stepStart = Date()
                let rate = schedule.rate(progress: fraction(), step: step)
                let value = try engine.step(batch, learningRate: rate)
                guard value.total.isFinite else { throw .nonFiniteLoss(iteration: step + 1) }
                trainingSeconds += Date().timeIntervalSince(stepStart)
                imagesSeen += batch.count
                step += 1
                passSteps += 1
                passLoss += Double(value.total)
                lastLoss = value.total
                if let budget = config.timeBudgetSeconds {
                    totalSteps = max(step, Int(Double(step) * budget / max(elapsed(), 1e-9)))
                }
                let eta =
                    config.timeBudgetSeconds.map { max(0, $0 - elapsed()) } ?? Double(max(0, totalSteps - step)) * Double(config.batchSize)
                    / throughput()
                report(.training, loss: value.total, eta: eta)
                if let budget = config.timeBudgetSeconds, elapsed() >= budget {
                    timeUp = true
                    break
                }
            }
            let meanLoss = Float(passLoss / Double(max(1, passSteps)))
            if validation.isEmpty {
                best = (engine.weights, [], 0, meanLoss, nil)
                history.append((pass, meanLoss, nil))
                continue
            }
            report(.validating, loss: meanLoss, eta: 0)
            let candidate = SegmentationModel(weights: engine.weights, classes: classes, normalization: normalization)
            let assessment = try Self.assess(candidate, on: validation, rule: config.failRule, control: control)
            let matrix = assessment.matrix
            history.append((pass, meanLoss, matrix.meanIoU))
            if best == nil || matrix.meanIoU > best?.miou ?? 0 {
                best = (engine.weights, matrix.iou, matrix.meanIoU, meanLoss, assessment)
            }
            report(
                .validating, loss: meanLoss, eta: config.timeBudgetSeconds.map { max(0, $0 - elapsed()) } ?? 0, iou: matrix.iou,
                miou: matrix.meanIoU)
        }
        guard let best else { throw .emptyDataset("no training step ran") }
        var metadata = ModelMetadata()
        metadata.validationIoU = best.iou
        metadata.validationMIoU = best.miou
        metadata.finalLoss = lastLoss
        metadata.passes = pass
        metadata.iterations = step
        metadata.trainingSeconds = elapsed()
        metadata.trainingImages = training.count
        metadata.validationImages = validation.count
        metadata.datasetSHA256 = dataset.sha256
        if let assessment = best.assessment {
            // The threshold the slider should start from: where the best model's defect IoU on validation peaks.
            metadata.calibration = assessment.tally.curve
            metadata.calibratedThreshold = assessment.tally.best.threshold
            metadata.parts = assessment.parts
            metadata.validationConfusion = assessment.matrix
        }
        metadata.history = history.map { PassRecord(pass: $0.0, loss: $0.1, validationMIoU: $0.2) }
        metadata.createdAt = Date()
        if let json = try? JSONEncoder().encode(config) { metadata.trainingConfigJSON = String(decoding: json, as: UTF8.self) }
        let model = SegmentationModel(weights: best.weights, classes: classes, normalization: normalization, metadata: metadata)
        report(.finished, loss: lastLoss, eta: 0, iou: best.iou.isEmpty ? nil : best.iou, miou: best.iou.isEmpty ? nil : best.miou, done: 1)
        return TrainingResult(model: model, passes: pass, steps: step, seconds: elapsed(), imagesPerSecond: throughput(), history: history)
    }

    /// Runs `model` over every image at full size and tallies the confusion matrix.
    public static func evaluate(
        _ model: SegmentationModel, on dataset: any TrainingImages, precision: InferencePrecision = .fp32, control: TrainingControl? = nil,
        progress: ((Int, Int) -> Void)? = nil
    ) throws(SegmentationError) -> ConfusionMatrix {
        try assess(model, on: dataset, precision: precision, control: control, progress: progress).matrix
    }

    /// What one pass of a model over a labelled split gives.
    public struct Assessment: Sendable {
        /// Every pixel its most likely class.
        public var matrix: ConfusionMatrix
        /// Pixel figures at any confidence threshold.
        public var tally: ConfidenceTally
        /// Each image judged as a part by the fail rule over the curve's thresholds.
        public var parts: PartVerdicts
        /// Each image's defect mIoU at `scoredAt` (images with no defect in truth or prediction left out), worst first,
        /// when asked for.
        public var worst: [(index: Int, defectIoU: Float)] = []
    }

    /// Runs `model` over every image at full size: the confusion matrix, the confidence tally and the part verdicts,
    /// from one pass; with `scoredAt`, each image's defect IoU at that threshold too (the report's worst images).
    public static func assess(
        _ model: SegmentationModel, on dataset: any TrainingImages, precision: InferencePrecision = .fp32, rule: FailRule = FailRule(),
        scoredAt: Float? = nil, control: TrainingControl? = nil, progress: ((Int, Int) -> Void)? = nil
    ) throws(SegmentationError) -> Assessment {
        let segmenter = try Segmenter(model: model, precision: precision)
        let classes = model.configuration.classes
        var matrix = ConfusionMatrix(classes: classes)
        var tally = ConfidenceTally(classes: classes)
        var parts = PartVerdicts(classes: classes, rule: rule)
        var scored: [(index: Int, defectIoU: Float)] = []
        let total = dataset.count
        for index in 0..<total {
            if control?.isCancelled == true { throw .cancelled }
            let item = try dataset.image(at: index)
            let result = try segmenter.segment(item.image)
            matrix.add(truth: item.mask.samples, predicted: result.classes)
            tally.add(truth: item.mask.samples, result)
            parts.add(truth: item.mask, result)
            if let threshold = scoredAt {
                var one = ConfidenceTally(classes: classes)
                one.add(truth: item.mask.samples, result)
                let point = one.point(at: threshold)
                // A class absent from both truth and prediction scores 1; the image's score is over the classes it has.
                let present = (1..<max(1, classes)).filter { point.iou[$0] < 1 || item.mask.samples.contains(UInt8($0)) }
                if !present.isEmpty { scored.append((index, present.map { point.iou[$0] }.reduce(0, +) / Float(present.count))) }
            }
            progress?(index + 1, total)
        }
        return Assessment(matrix: matrix, tally: tally, parts: parts, worst: scored.sorted { $0.defectIoU < $1.defectIoU })
    }

    /// Mean and deviation of the training pixels, per channel, from the images' summaries.
    static func normalization(of dataset: any TrainingImages, channels: Int) -> InputNormalization {
        var sum = [Double](repeating: 0, count: channels), squares = sum
        var count = 0.0
        for item in dataset.summaries {
            for c in 0..<min(channels, item.channels) {
                sum[c] += item.channelSums[c]
                squares[c] += item.channelSquares[c]
            }
            count += Double(item.width * item.height)
        }
        let mean = sum.map { $0 / count }
        let std = zip(squares, mean).map { max(1e-3, ($0 / count - $1 * $1).squareRoot()) }
        return InputNormalization(mean: mean.map(Float.init), std: std.map(Float.init))
    }

    /// The cross-entropy's class weights: rarer classes weigh more, sqrt of the background-to-class ratio, between 1
    /// and `cap`, over the pixels the sampling draws. Repeat factors already draw rare-class images more often;
    /// weighting by the raw counts as well corrected for the rarity twice, and on a set of mostly good parts flooded
    /// the defect classes (docs/benchmarks.md, the rare set).
    public static func classWeights(_ dataset: any TrainingImages, repeats: [Double], cap: Float) -> [Float] {
        var drawn = [Double](repeating: 0, count: dataset.classes)
        for (summary, share) in zip(dataset.summaries, repeats) {
            for (c, pixels) in summary.classPixels.enumerated() where c < drawn.count { drawn[c] += Double(pixels) * share }
        }
        return drawn.map { count in
            count == 0 ? 1 : Float(min(Double(max(1, cap)), max(1, (drawn[0] / count).squareRoot())))
        }
    }

    /// Each training image's expected draws per pass. Its repeat factor is the
    /// largest max(1, sqrt(threshold / share)) over the defect classes it shows,
    /// share being the fraction of training images that show the class; the
    /// factors are scaled to sum to the number of images.
    public static func repeatFactors(_ dataset: any TrainingImages, threshold: Double) -> [Double] {
        let present = dataset.summaries.map(\.defectClasses)
        guard threshold > 0, !present.isEmpty else { return [Double](repeating: 1, count: present.count) }
        var images = [Int](repeating: 0, count: dataset.classes)
        for classes in present { for c in classes { images[c] += 1 } }
        let total = Double(present.count)
        let factors = present.map { classes in
            classes.map { max(1, (threshold / (Double(images[$0]) / total)).squareRoot()) }.max() ?? 1
        }
        let scale = total / factors.reduce(0, +)
        return factors.map { $0 * scale }
    }

    /// Random crops, flips, rotation, brightness and contrast, then normalisation.
    func makeBatch(_ items: [LabelledImage], normalization: InputNormalization, random: inout SeededGenerator) -> Batch {
        let size = configuration.cropSize
        let channels = configuration.network.inputChannels
        let a = configuration.augmentation
        var images = [Float](repeating: 0, count: items.count * channels * size * size)
        var labels = [UInt8](repeating: 0, count: items.count * size * size)
        for (n, item) in items.enumerated() {
            var image = item.image, mask = item.mask
            // Rotate about the centre first (bilinear image, nearest mask), then crop.
            if a.rotationDegrees > 0 {
                let angle = Double(random.uniform(Float(-a.rotationDegrees), Float(a.rotationDegrees))) * .pi / 180
                let transform = SimilarityTransform.rotation(angle, about: (Double(image.width) / 2, Double(image.height) / 2))
                image = image.warped(by: transform, fill: Self.edgeFill(image))
                mask = mask.warpedNearest(by: transform)
            }
            let x0 = image.width > size ? random.below(image.width - size + 1) : 0
            let y0 = image.height > size ? random.below(image.height - size + 1) : 0
            let flipX = a.flipHorizontal && random.below(2) == 1
            let flipY = a.flipVertical && random.below(2) == 1
            let contrast = a.contrast > 0 ? 1 + random.uniform(Float(-a.contrast), Float(a.contrast)) : 1
            let brightness = a.brightness > 0 ? random.uniform(Float(-a.brightness), Float(a.brightness)) : 0
            for y in 0..<size {
                let sy = min(y0 + (flipY ? size - 1 - y : y), image.height - 1)
                for x in 0..<size {
                    let sx = min(x0 + (flipX ? size - 1 - x : x), image.width - 1)
                    labels[(n * size + y) * size + x] = mask.samples[sy * mask.width + sx]
                    for c in 0..<channels {
                        var v = Float(image.samples[(sy * image.width + sx) * channels + c]) / 255
                        v = min(1, max(0, (v - 0.5) * contrast + 0.5 + brightness))
                        images[((n * channels + c) * size + y) * size + x] = (v - normalization.mean[c]) / normalization.std[c]
                    }
                }
            }
        }
        return Batch(count: items.count, channels: channels, height: size, width: size, images: images, labels: labels)
    }

    /// Mean grey level, to fill the corners a rotation uncovers.
    private static func edgeFill(_ image: Image8) -> UInt8 {
        let total = image.samples.reduce(0) { $0 + Int($1) }
        return UInt8(total / max(1, image.samples.count))
    }
}
