import Foundation
import LoupeImaging
import LoupeSegmentation
import Testing

/// Small synthetic images: bright squares are class 1, dark discs class 2.
enum ToyData {
    static func dataset(count: Int, size: Int = 32, seed: UInt64 = 5) throws -> SegmentationDataset {
        var random = SeededGenerator(seed: seed)
        var items: [LabelledImage] = []
        for index in 0..<count {
            var pixels = (0..<(size * size)).map { _ in UInt8(110 + random.below(20)) }
            var mask = [UInt8](repeating: 0, count: size * size)
            let sx = random.below(size - 10), sy = random.below(size - 10)
            for y in sy..<(sy + 8) { for x in sx..<(sx + 8) { pixels[y * size + x] = 230; mask[y * size + x] = 1 } }
            let cx = random.below(size - 8) + 4, cy = random.below(size - 8) + 4
            for y in 0..<size {
                for x in 0..<size where (x - cx) * (x - cx) + (y - cy) * (y - cy) <= 9 && mask[y * size + x] == 0 {
                    pixels[y * size + x] = 20; mask[y * size + x] = 2
                }
            }
            items.append(
                try LabelledImage(
                    name: String(format: "toy-%03d", index), image: Image8(width: size, height: size, samples: pixels),
                    mask: Image8(width: size, height: size, samples: mask), classes: 3))
        }
        return SegmentationDataset(items: items, classes: 3)
    }

    static func configuration(passes: Int = 8) -> TrainingConfiguration {
        TrainingConfiguration(
            network: UNetConfiguration(inputChannels: 1, classes: 3, baseWidth: 4, depth: 2), passes: passes, batchSize: 4, cropSize: 32,
            optimizer: AdamWConfiguration(learningRate: 2e-2), warmupSteps: 2, augmentation: Augmentation(rotationDegrees: 0),
            validationFraction: 0.25, seed: 11, threads: 1)
    }
}

extension SegmentationTests {
    @Suite struct TrainerTests {
        init() { DNNLRuntime.setThreads(1) }

        @Test func trainingLearnsAToyTaskAndReportsProgress() throws {
            let data = try ToyData.dataset(count: 32)
            var events: [TrainingProgress] = []
            let result = try Trainer(configuration: ToyData.configuration()).train(data) { events.append($0) }
            let validations = events.filter { $0.phase == .validating && $0.validationMIoU != nil }
            print("toy training: mIoU per pass \(validations.map { $0.validationMIoU! }), loss \(result.history.map(\.loss))")
            #expect(validations.count == 8)
            #expect(result.model.metadata.validationMIoU >= 0.6)
            #expect(result.history.last!.loss < result.history.first!.loss)
            let training = events.filter { $0.phase == .training }
            #expect(training.map(\.step) == Array(1...training.count))
            #expect(training.allSatisfy { $0.loss.isFinite && $0.imagesPerSecond > 0 && $0.etaSeconds >= 0 })
            #expect(events.last?.phase == .finished)
            // The kept model is the best validated one.
            #expect(result.model.metadata.validationMIoU == validations.map { $0.validationMIoU! }.max())
        }

        @Test func theSameSeedGivesTheSameModel() throws {
            let data = try ToyData.dataset(count: 12)
            let a = try Trainer(configuration: ToyData.configuration(passes: 2)).train(data)
            let b = try Trainer(configuration: ToyData.configuration(passes: 2)).train(data)
            #expect(a.model.weights == b.model.weights)
            var other = ToyData.configuration(passes: 2)
            other.seed = 12
            let c = try Trainer(configuration: other).train(data)
            #expect(c.model.weights != a.model.weights)
        }

        /// A set spooled to disk (as the manager and workers train) is read back a
        /// batch at a time and makes the very model the same set in memory makes;
        /// its file is unlinked from the start, and a bad ROI is refused on the way in.
        @Test func aSetSpooledToDiskTrainsToTheSameModelAsTheSameSetInMemory() throws {
            let data = try ToyData.dataset(count: 16)
            let directory = NSTemporaryDirectory() + "loupe-spool-\(UUID().uuidString)"
            defer { try? FileManager.default.removeItem(atPath: directory) }
            var spool = try ImageSpool(directory: directory, classes: data.classes)
            for item in data.items {
                try spool.add(name: item.name, imagePNG: try PNGCodec.encode(item.image), maskPNG: try PNGCodec.encode(item.mask))
            }
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty, "the scratch file is unlinked at once")
            #expect(throws: SegmentationError.self) { try spool.add(name: "roi-bad", imagePNG: Data([0x89, 0x50, 0x4E]), maskPNG: Data()) }
            var wrongClass = data.items[0].mask
            wrongClass.samples[0] = 7
            #expect(throws: SegmentationError.classOutOfRange(file: "roi-7", value: 7, classes: 3)) {
                try spool.add(name: "roi-7", imagePNG: try PNGCodec.encode(data.items[0].image), maskPNG: try PNGCodec.encode(wrongClass))
            }
            let spooled = spool.finish(sha256: "set-hash")
            #expect(spooled.count == 16 && spooled.spooledBytes > 0 && spooled.summaries == data.summaries)
            #expect(try spooled.image(at: 5).image.samples == data.items[5].image.samples)
            let inMemory = try Trainer(configuration: ToyData.configuration(passes: 2)).train(data)
            let fromDisk = try Trainer(configuration: ToyData.configuration(passes: 2)).train(spooled)
            #expect(fromDisk.model.weights == inMemory.model.weights)
            #expect(fromDisk.model.metadata.datasetSHA256 == "set-hash")
            #expect(fromDisk.model.metadata.validationMIoU == inMemory.model.metadata.validationMIoU)
        }

        @Test func aTimeBudgetEndsTrainingAndCancellationStopsIt() throws {
            let data = try ToyData.dataset(count: 12)
            var configuration = ToyData.configuration()
            configuration.timeBudgetSeconds = 1.5
            let start = Date()
            let result = try Trainer(configuration: configuration).train(data)
            let seconds = Date().timeIntervalSince(start)
            #expect(result.steps >= 1 && seconds < 15)

            let control = TrainingControl()
            #expect(throws: SegmentationError.cancelled) {
                _ = try Trainer(configuration: ToyData.configuration()).train(data, control: control) { progress in
                    if progress.step == 3 { control.cancel() }
                }
            }
        }

        @Test func aDivergingRunStopsOnTheNonFiniteLoss() throws {
            let data = try ToyData.dataset(count: 8)
            var configuration = ToyData.configuration()
            configuration.optimizer.learningRate = 1e30
            configuration.warmupSteps = 0
            do {
                _ = try Trainer(configuration: configuration).train(data)
                Issue.record("training at a learning rate of 1e30 finished")
            } catch {
                guard case .nonFiniteLoss(let iteration) = error else { Issue.record("unexpected \(error)"); return }
                #expect(iteration >= 2)
                #expect(error.description.contains("last good model was kept"))
            }
        }

        /// Repeat factor sampling: images of a rare defect are drawn more often,
        /// a pass keeps its length, and balanced data is drawn as before.
        @Test func imagesOfRareDefectsAreDrawnMoreOften() throws {
            let image = try Image8(width: 8, height: 8, fill: 100)
            func item(_ index: Int, _ label: UInt8) throws -> LabelledImage {
                var mask = try Image8(width: 8, height: 8)
                if label != 0 { for i in 0..<6 { mask.samples[i] = label } }
                return try LabelledImage(name: "i\(index)", image: image, mask: mask, classes: 3)
            }
            // 16 ROIs without a defect, 3 with class 1 (15 %), 1 with class 2 (5 %).
            let labels: [UInt8] = [UInt8](repeating: 0, count: 16) + [1, 1, 1, 2]
            let dataset = SegmentationDataset(items: try labels.enumerated().map { try item($0, $1) }, classes: 3)
            let factors = Trainer.repeatFactors(dataset, threshold: 1)
            #expect(abs(factors.reduce(0, +) - 20) < 1e-9, "a pass still draws 20 images: \(factors)")
            #expect(abs(factors[16] / factors[0] - (1 / 0.15).squareRoot()) < 1e-9, "class 1 weighs sqrt(1 / 0.15): \(factors)")
            #expect(abs(factors[19] / factors[0] - (1 / 0.05).squareRoot()) < 1e-9, "class 2 weighs sqrt(1 / 0.05): \(factors)")
            #expect(Trainer.repeatFactors(dataset, threshold: 0) == [Double](repeating: 1, count: 20), "threshold 0 turns it off")
            // As NEU-Seg: every image shows one defect, the classes equally often.
            let balanced = SegmentationDataset(items: try (0..<12).map { try item($0, UInt8(1 + $0 % 2)) }, classes: 3)
            #expect(Trainer.repeatFactors(balanced, threshold: 1).allSatisfy { abs($0 - 1) < 1e-9 }, "balanced classes: every image once")
            var configuration = ToyData.configuration()
            configuration.repeatThreshold = 2
            #expect(throws: SegmentationError.invalidConfiguration("repeat threshold must be in [0, 1], not 2.0")) {
                try configuration.validate()
            }
        }

        @Test func badLabelsAreRefusedByName() throws {
            let image = try Image8(width: 8, height: 8, fill: 100)
            #expect(throws: SegmentationError.maskSizeMismatch(file: "a.png", image: "8x8", mask: "4x8x1")) {
                _ = try LabelledImage(name: "a.png", image: image, mask: Image8(width: 4, height: 8), classes: 3)
            }
            #expect(throws: SegmentationError.classOutOfRange(file: "b.png", value: 7, classes: 3)) {
                _ = try LabelledImage(name: "b.png", image: image, mask: Image8(width: 8, height: 8, fill: 7), classes: 3)
            }
            let blank = SegmentationDataset(
                items: [try LabelledImage(name: "c.png", image: image, mask: Image8(width: 8, height: 8), classes: 3)], classes: 3)
            var configuration = ToyData.configuration()
            configuration.cropSize = 8
            configuration.validationFraction = 0
            #expect(throws: SegmentationError.noLabelledPixels("the training images")) {
                _ = try Trainer(configuration: configuration).train(blank)
            }
        }

        @Test func datasetFoldersAreReadAndTheirFlawsNamed() throws {
            let root = FileManager.default.temporaryDirectory.appendingPathComponent("loupe-dataset-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: root) }
            for folder in ["images/training", "annotations/training"] {
                try FileManager.default.createDirectory(atPath: root + "/" + folder, withIntermediateDirectories: true)
            }
            let image = try Image8(width: 16, height: 16, fill: 90)
            var mask = try Image8(width: 16, height: 16)
            mask.samples[17] = 2
            try PNGCodec.encode(image).write(to: URL(fileURLWithPath: root + "/images/training/one.png"))
            try PNGCodec.encode(mask).write(to: URL(fileURLWithPath: root + "/annotations/training/one.png"))
            let loaded = try SegmentationDataset.load(directory: root, split: "training", channels: 1, classes: 3)
            #expect(loaded.items.count == 1 && loaded.pixelCounts == [255, 0, 1])

            #expect(throws: SegmentationError.classOutOfRange(file: root + "/images/training/one.png", value: 2, classes: 2)) {
                _ = try SegmentationDataset.load(directory: root, split: "training", channels: 1, classes: 2)
            }
            try PNGCodec.encode(image).write(to: URL(fileURLWithPath: root + "/images/training/two.png"))
            #expect(
                throws: SegmentationError.unreadableFile(
                    file: root + "/annotations/training/two.png", reason: "the mask for \(root)/images/training/two.png is missing")
            ) {
                _ = try SegmentationDataset.load(directory: root, split: "training", channels: 1, classes: 3)
            }
            try Data("not a png".utf8).write(to: URL(fileURLWithPath: root + "/annotations/training/two.png"))
            do {
                _ = try SegmentationDataset.load(directory: root, split: "training", channels: 1, classes: 3)
                Issue.record("a corrupt mask was accepted")
            } catch {
                #expect(error.description.contains("annotations/training/two.png: cannot read"))
            }
            #expect(throws: SegmentationError.self) {
                _ = try SegmentationDataset.load(directory: root + "/nowhere", split: "training", channels: 1, classes: 3)
            }
        }

        @Test func neuSegLoadsWithItsFourClasses() throws {
            let root = NEUSeg.root
            guard FileManager.default.fileExists(atPath: root) else {
                print("SKIPPED neuSegLoadsWithItsFourClasses: NEU-Seg not found at \(root)")
                return
            }
            let data = try SegmentationDataset.load(directory: root, split: "test", channels: 1, classes: 4, limit: 40)
            #expect(data.items.count == 40)
            #expect(data.items.allSatisfy { $0.image.width == 200 && $0.image.height == 200 })
            let counts = data.pixelCounts
            #expect(counts[0] > counts[1] + counts[2] + counts[3])
            #expect(counts.dropFirst().reduce(0, +) > 0)
        }
    }
}
