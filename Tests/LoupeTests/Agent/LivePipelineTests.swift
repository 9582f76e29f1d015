import Crypto
import Foundation
import Logging
import LoupeAgent
import LoupeCapture
import LoupeImaging
import LoupeSegmentation
import LoupeVision
import ServiceLifecycle
import Testing

extension SegmentationTests {
    /// The live pipeline: inspection verdicts, frame dropping, the rolling log, model swaps.
    @Suite struct LivePipelineTests {
        init() { DNNLRuntime.setThreads(1) }

        /// A network that calls every pixel class 1 with confidence e^2 / (e^2 + 3) ≈ 0.711.
        /// A model that marks every pixel as `classIndex` (1, scratch: every ROI fails; 0: every ROI passes).
        static func constantModel(classIndex: Int = 1) -> SegmentationModel {
            var weights = Weights(configuration: .standard, seed: 3)
            for index in weights.parameters.indices where weights.parameters[index].name.hasPrefix("head") {
                let tensor = weights.parameters[index]
                var bias: [Float] = [0, 0, 0, 0]
                bias[classIndex] = 2
                weights.parameters[index].values = tensor.name == "head.bias" ? bias : [Float](repeating: 0, count: tensor.values.count)
            }
            return SegmentationModel(
                weights: weights, classes: ClassInfo.defaults(count: 4, names: ["background", "scratch", "spot", "crack"]))
        }

        static let camera = try! SyntheticCamera(
            configuration: .init(width: 640, height: 512, maxShift: 20, maxRotationDegrees: 6, seed: 5))

        static func recipe(threshold: Double) -> Recipe {
            Recipe(
                version: 3, inspectionType: "part", template: PixelRect(x: 160, y: 128, width: 320, height: 256),
                rois: [
                    RecipeROI(name: "left", rect: PixelRect(x: 140, y: 160, width: 64, height: 64)),
                    RecipeROI(name: "right", rect: PixelRect(x: 400, y: 260, width: 64, height: 64)),
                ],
                confidenceThreshold: threshold, failRule: FailRule(minimumDefectPixels: 25))
        }

        static func inspector(threshold: Double) throws -> Inspector {
            try Inspector(
                recipe: recipe(threshold: threshold), reference: camera.reference, segmenter: try Segmenter(model: constantModel()),
                modelVersion: "const-1")
        }

        @Test func theThresholdAndTheFailRuleDecideEachROI() throws {
            let rendered = Self.camera.render().0
            let frame = CapturedFrameInput(sequence: 1, capturedAt: Date(), image: rendered.image, captureMilliseconds: 0)
            let failing = try Self.inspector(threshold: 0.5).inspect(frame, threshold: 0.5)
            // The record says where the part was: the camera's own pose, to a pixel and half a degree.
            let placement = try #require(failing.result.placement)
            let truth = rendered.pose.apply(320, 256)
            #expect(abs(placement.shiftX - (truth.x - 320)) < 1 && abs(placement.shiftY - (truth.y - 256)) < 1, "\(placement) vs \(truth)")
            #expect(
                abs(placement.angleDegrees - rendered.pose.angle * 180 / .pi) < 0.5, "\(placement) vs \(rendered.pose.angle * 180 / .pi)°")
            #expect(failing.result.verdict == .fail)
            #expect(failing.result.rois.map(\.name) == ["left", "right"])
            for roi in failing.result.rois {
                #expect(!roi.passed)
                #expect(
                    roi.defects.count == 1 && roi.defects[0].className == "scratch" && roi.defects[0].area == 64 * 64
                        && roi.defects[0].regions == 1)
                #expect(abs(roi.maxConfidence - 0.7113) < 0.001)
            }
            #expect((failing.result.alignScore ?? 0) > 0.5)
            #expect(failing.result.modelVersion == "const-1" && failing.result.recipeVersion == 3)
            // Above the network's confidence, nothing counts: the part passes.
            let passing = try Self.inspector(threshold: 0.8).inspect(frame, threshold: 0.8)
            #expect(passing.result.verdict == .pass && passing.result.rois.allSatisfy { $0.passed && $0.defects.isEmpty })
            // A frame without the part is not judged.
            let blank = CapturedFrameInput(
                sequence: 2, capturedAt: Date(), image: try Image8(width: 640, height: 512, fill: 90), captureMilliseconds: 0)
            let missing = try Self.inspector(threshold: 0.5).inspect(blank, threshold: 0.5)
            #expect(missing.result.verdict == .notAligned && missing.result.rois.isEmpty)
            // No model: ROIs are cut, nothing is judged.
            let bare = try Inspector(
                recipe: Self.recipe(threshold: 0.5), reference: Self.camera.reference, segmenter: nil, modelVersion: "")
            #expect(try bare.inspect(frame, threshold: 0.5).result.verdict == .noModel)
        }

        /// The demo's score: each ROI's masks against its cut of the frame's true
        /// labels, and the verdict the fail rule gives the truth.
        @Test func aJudgedFrameIsCheckedAgainstItsTrueLabels() throws {
            // The same part held still, so the ROIs sit where the recipe puts them.
            let still = try SyntheticCamera(configuration: .init(width: 640, height: 512, maxShift: 0, maxRotationDegrees: 0, seed: 5))
            let image = still.render().0.image
            let frame = CapturedFrameInput(sequence: 1, capturedAt: Date(), image: image, captureMilliseconds: 0)
            let outcome = try Self.inspector(threshold: 0.5).inspect(frame, threshold: 0.5)  // every ROI pixel scratch
            let rule = FailRule(minimumDefectPixels: 25)
            let roiPixels = 2 * 64 * 64
            // The truth says scratch everywhere: prediction and truth agree on every pixel.
            let scratched = try LivePipeline.Latest(image: image, outcome: outcome, groundTruth: Image8(width: 640, height: 512, fill: 1))
                .checkAgainstTruth(failRule: rule)
            #expect(scratched?.overlap[1]?.intersection == roiPixels && scratched?.overlap[1]?.union == roiPixels)
            #expect(scratched?.truthFails == true)
            // A clean part: no agreement, and the right verdict is a pass.
            let clean = try LivePipeline.Latest(image: image, outcome: outcome, groundTruth: Image8(width: 640, height: 512))
                .checkAgainstTruth(failRule: rule)
            #expect(clean?.overlap[1]?.intersection == 0 && clean?.overlap[1]?.union == roiPixels)
            #expect(clean?.truthFails == false)
            // One true crack of 24 px inside the left ROI is under the rule; all its pixels count in the crack's union.
            var small = try Image8(width: 640, height: 512)
            for dy in 0..<4 { for dx in 0..<6 { small.samples[(190 + dy) * 640 + 170 + dx] = 3 } }
            let check = try #require(
                try LivePipeline.Latest(image: image, outcome: outcome, groundTruth: small).checkAgainstTruth(failRule: rule))
            #expect(check.truthFails == false)
            #expect(check.overlap[3]?.intersection == 0 && check.overlap[3]?.union == 24 && check.overlap[1]?.union == roiPixels)
            #expect(
                try LivePipeline.Latest(image: image, outcome: outcome, groundTruth: small).checkAgainstTruth(
                    failRule: FailRule(minimumDefectPixels: 24))?.truthFails == true)
            // Without truth, nothing to check.
            #expect(try LivePipeline.Latest(image: image, outcome: outcome).checkAgainstTruth(failRule: rule) == nil)
        }

        @Test func aBusyPipelineDropsFramesKeepsALogAndSwapsBetweenFrames() async throws {
            let frames = (0..<4).map { _ in Self.camera.render().0.image }
            // A 500 fps camera: far faster than inspection, so frames must be dropped, not queued.
            let pipeline = LivePipeline(
                source: try FrameReplay(images: frames, origin: "test"), pacing: .milliseconds(2), threads: 1,
                inspector: try Self.inspector(threshold: 0.5), live: true, logger: Logger(label: "test"))
            let group = ServiceGroup(services: [pipeline], logger: Logger(label: "test"))
            let events = pipeline.subscribe()
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                let busy = try await eventually(timeout: .seconds(30)) { pipeline.statistics.framesInspected >= 4 }
                #expect(busy)
                var received = 0
                for await result in events {
                    #expect(result.verdict == .fail)
                    received += 1
                    if received == 2 { break }
                }
                // Swap in a recipe with a higher threshold: later frames pass.
                pipeline.swap(try Self.inspector(threshold: 0.8))
                let passes = try await eventually(timeout: .seconds(30)) { pipeline.statistics.passCount >= 2 }
                #expect(passes)
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
            }
            let statistics = pipeline.statistics
            #expect(statistics.framesDropped > 0 && statistics.framesCaptured > statistics.framesInspected)
            #expect(statistics.failCount >= 4 && statistics.passCount >= 2)
            #expect((statistics.p50["total"] ?? 0) > 0 && (statistics.p99["segment"] ?? 0) >= (statistics.p50["segment"] ?? 0))
            let log = pipeline.results(limit: 1000)
            #expect(log.count == statistics.framesInspected)
            #expect(zip(log, log.dropFirst()).allSatisfy { $0.sequence > $1.sequence }, "the log is newest first")
            #expect(log.first?.verdict == .pass && log.last?.verdict == .fail)
        }

        @Test func aTamperedOrForeignModelIsRefusedAndTheInstalledOneStays() throws {
            let dir = LabelStoreTests.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let managerKey = Curve25519.Signing.PrivateKey()
            let shelf = try ModelShelf(directory: dir, managerKeys: [managerKey.publicKey])
            let first = try ProvenanceTests.signed(Self.constantModel(), managerKey, "v1", sequence: 1)
            let offer1 = ProvenanceTests.offer(try ProvenanceTests.assignment(managerKey, version: "v1", modelSequence: 1, sequence: 2))
            try shelf.install(first, version: "v1", expectedSHA256: Data(SHA256.hash(data: first)), from: .manager(offer1))
            let offer = ProvenanceTests.offer(try ProvenanceTests.assignment(managerKey, version: "v2", modelSequence: 3, sequence: 4))
            #expect(shelf.state.current?.version == "v1" && shelf.state.previous == nil)
            #expect(throws: ModelInstallError.noPreviousModel) { try shelf.rollback() }

            var second = SegmentationModel(weights: Weights(configuration: .standard, seed: 9))
            second.metadata.description = "v2"
            let good = try ProvenanceTests.signed(second, managerKey, "v2", sequence: 3)
            // One flipped byte: the offer's SHA-256 no longer matches.
            var flipped = good
            flipped[flipped.count / 2] ^= 0x40
            #expect {
                try shelf.install(flipped, version: "v2", expectedSHA256: Data(SHA256.hash(data: good)), from: .manager(offer))
            } throws: { error in
                guard case ModelInstallError.hashMismatch = error else { return false }
                return true
            }
            // Signed by a key the agent does not trust.
            let foreign = try ProvenanceTests.signed(second, Curve25519.Signing.PrivateKey(), "v2", sequence: 3)
            #expect {
                try shelf.install(foreign, version: "v2", expectedSHA256: Data(SHA256.hash(data: foreign)), from: .manager(offer))
            } throws: { error in
                guard case ModelInstallError.badSignature = error else { return false }
                return true
            }
            // Unsigned.
            let unsigned = try ModelFile.encode(second)
            #expect(throws: ModelInstallError.self) {
                try shelf.install(unsigned, version: "v2", expectedSHA256: nil, from: .local("file"))
            }
            #expect(shelf.state.current?.version == "v1")
            #expect(try shelf.loadCurrent()?.0.weights == Self.constantModel().weights)
            #expect(!FileManager.default.fileExists(atPath: dir + "/v2.loupe"))

            // The good one installs; v1 becomes the rollback target, and rolling back returns to it.
            try shelf.install(good, version: "v2", expectedSHA256: Data(SHA256.hash(data: good)), from: .manager(offer))
            #expect(shelf.state.current?.version == "v2" && shelf.state.previous?.version == "v1")
            let (restored, info) = try shelf.rollback()
            #expect(info.version == "v1" && restored.weights == Self.constantModel().weights)
            #expect(shelf.state.previous?.version == "v2")
            // Reopening the shelf finds the same state.
            #expect(try ModelShelf(directory: dir, managerKeys: [managerKey.publicKey]).state.current?.version == "v1")
        }

        @Test func aDownloadResumesFromItsLastWholeChunk() throws {
            let dir = LabelStoreTests.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let shelf = try ModelShelf(directory: dir, managerKeys: [])
            let data = Data((0..<10_000).map { UInt8($0 % 251) })
            try shelf.append(data[0..<4096], to: "v7", at: 0)
            #expect(shelf.downloaded("v7") == 4096)
            // A chunk that skips ahead, or repeats, is refused; the download is unchanged.
            #expect(throws: ModelInstallError.chunkOutOfOrder(version: "v7", expected: 4096, received: 8192)) {
                try shelf.append(data[8192...], to: "v7", at: 8192)
            }
            #expect(throws: ModelInstallError.chunkOutOfOrder(version: "v7", expected: 4096, received: 0)) {
                try shelf.append(data[0..<4096], to: "v7", at: 0)
            }
            // A new shelf on the same folder (an agent restart) resumes where it stopped.
            let again = try ModelShelf(directory: dir, managerKeys: [])
            try again.append(data[4096...], to: "v7", at: again.downloaded("v7"))
            #expect(again.downloadedData("v7") == data)
            #expect(throws: ModelInstallError.invalidVersion("../etc")) { try again.append(data, to: "../etc", at: 0) }
        }
    }
}
