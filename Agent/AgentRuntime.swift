public import Crypto
public import Foundation
public import Logging
import LoupeCapture
import LoupeImaging
public import LoupeSegmentation
import LoupeStorage
import LoupeVision
import LoupeWire

/// Everything a running agent holds: the label store, the model shelf, the
/// live pipeline and the training jobs, and the glue that keeps them in step
/// (a saved recipe or an installed model rebuilds the inspector, which the
/// pipeline swaps in between frames).
public final class AgentRuntime: Sendable {
    public let config: AgentConfig
    public let store: LabelStore
    public let shelf: ModelShelf
    public let pipeline: LivePipeline
    /// The learned wand's feature stacks, click sessions and memory.
    public let wand = WandSessions()
    /// The installed model's suggested labels, waiting for the operator.
    public let suggestions = Suggestions()
    /// Inspected frames worth a look: failed, unsure, a sample of passes.
    public let library: FrameLibrary
    public let precision: InferencePrecision
    /// oneDNN threads for the live segment stage.
    public let threads: Int
    /// Threads for training on the camera.
    public let trainingThreads: Int
    let logger: Logger
    private let changes = NSLock()

    public init(config: AgentConfig, logger: Logger) async throws {
        self.config = config
        self.logger = logger
        try FileManager.default.createDirectory(atPath: config.dataDir, withIntermediateDirectories: true)
        store = try LabelStore(directory: config.dataDir + "/store")
        shelf = try ModelShelf(directory: config.dataDir + "/models", managerKeys: try config.trustedModelKeys())
        let camera = config.camera
        let cores = ProcessInfo.processInfo.activeProcessorCount
        // The align stage takes one core; segmentation gets the rest.
        threads = camera?.inferenceThreads ?? max(1, cores - 1)
        trainingThreads = cores
        switch camera?.precision {
        case "fp32": precision = .fp32
        case "bf16": precision = .bf16
        default:
            // A camera runs the precision that is faster on this CPU, timed once (a second at start), not the one its
            // flags suggest; without a camera nothing runs live, and suggestions take fp32.
            if camera != nil {
                let measured = InferencePrecision.measured
                precision = measured.fastest
                logger.info(
                    "inference precision measured",
                    metadata: [
                        "chosen": "\(measured.fastest.rawValue)", "fp32-ms": "\(String(format: "%.1f", measured.fp32Milliseconds))",
                        "bf16-ms": "\(measured.bf16Milliseconds.map { String(format: "%.1f", $0) } ?? "cannot run")",
                    ])
            } else {
                precision = .fp32
            }
        }
        var source: (any FrameSource)?
        var pacing: Duration?
        if let camera {
            let fps = camera.framesPerSecond ?? 25
            switch camera.source {
            case .v4l2:
                var request = V4L2Camera.Request()
                request.width = camera.width ?? 1280
                request.height = camera.height ?? 1024
                request.framesPerSecond = Int(fps.rounded())
                source = try V4L2Camera(path: camera.device ?? "/dev/video0", request: request)
            case .genicam:
                source = try AravisCamera(settings: camera.genicamSettings)
            case .files:
                source = try FileImport(camera.files ?? ".", loops: true)
                pacing = .seconds(1 / fps)
            case .synthetic:
                var synthetic = SyntheticCamera.Configuration(
                    width: camera.width ?? 1280, height: camera.height ?? 1024, seed: camera.seed ?? 1)
                synthetic.partSeed = camera.partSeed
                source = try SyntheticCamera(configuration: synthetic)
                pacing = .seconds(1 / fps)
            }
        }
        let (recipe, reference) = try await Self.stored(store)
        let inspector = try Self.makeInspector(recipe: recipe, reference: reference, shelf: shelf, precision: precision, logger: logger)
        let trigger = camera?.source == .genicam ? camera?.genicamSettings.trigger ?? .freeRun : .freeRun
        pipeline = LivePipeline(
            source: source, pacing: pacing, threads: threads, inspector: inspector, live: camera?.live ?? true, logger: logger,
            trigger: trigger)
        library = try FrameLibrary(
            directory: config.dataDir + "/library", policy: config.library ?? LibraryPolicy(), nice: PagePriority.nice)
        pipeline.observe { [library] frame, result, threshold in library.offer(frame, result: result, threshold: threshold) }
    }

    /// The stored recipe and its reference capture's image (decoded off the task pool).
    private static func stored(_ store: LabelStore) async throws -> (Recipe, Image8?) {
        let recipe = try await store.recipe()
        guard let number = recipe.referenceCapture else { return (recipe, nil) }
        let encoded = try await store.image(of: try await store.capture(number: number))
        return (recipe, try await BlockingIO.run { try ImageFile.decode(encoded).gray8 })
    }

    private static func makeInspector(
        recipe: Recipe, reference: Image8?, shelf: ModelShelf, precision: InferencePrecision, logger: Logger,
        model: (SegmentationModel, InstalledModel)? = nil
    ) throws -> Inspector {
        var loaded = model
        if loaded == nil {
            do {
                loaded = try shelf.loadCurrent()
            } catch {
                logger.error("the installed model does not load; inspecting without one", metadata: ["error": "\(error)"])
            }
        }
        let segmenter = try loaded.map { try Segmenter(model: $0.0, precision: precision) }
        return try Inspector(recipe: recipe, reference: reference, segmenter: segmenter, modelVersion: loaded?.1.version ?? "")
    }

    /// Rebuilds the inspector for a new model (or the installed one), keeping the running recipe.
    public func reload(model: (SegmentationModel, InstalledModel)? = nil) throws {
        try changes.withLock {
            let running = pipeline.currentInspector
            let inspector = try Self.makeInspector(
                recipe: running.recipe, reference: running.reference, shelf: shelf, precision: precision, logger: logger,
                model: model ?? runningModel)
            pipeline.swap(inspector)
        }
    }

    /// Rebuilds the inspector from the stored recipe (after it was saved), keeping the running model. A reload
    /// that read an older recipe than the one running (two saves racing) leaves the newer in place.
    public func recipeChanged() async throws {
        let (recipe, reference) = try await Self.stored(store)
        try changes.withLock {
            guard recipe.version >= pipeline.currentInspector.recipe.version else { return }
            let inspector = try Self.makeInspector(
                recipe: recipe, reference: reference, shelf: shelf, precision: precision, logger: logger, model: runningModel)
            pipeline.swap(inspector)
        }
    }

    /// The model the live pipeline runs, with its shelf record; nil when it runs none.
    public var runningModel: (SegmentationModel, InstalledModel)? {
        let inspector = pipeline.currentInspector
        guard let segmenter = inspector.segmenter, let installed = shelf.state.current, installed.version == inspector.modelVersion else {
            return nil
        }
        return (segmenter.model, installed)
    }

    /// Verifies and installs a model file, then swaps it in between frames.
    @discardableResult
    public func install(_ data: Data, version: String, expectedSHA256: Data?, from source: ModelShelf.Source) throws -> InstalledModel {
        let (model, installed) = try shelf.install(data, version: version, expectedSHA256: expectedSHA256, from: source)
        try reload(model: (model, installed))
        logger.info(
            "model installed",
            metadata: ["version": "\(version)", "origin": "\(source.origin)", "sha256": "\(installed.sha256.prefix(16))"])
        return installed
    }

    /// Goes back to the previous model.
    @discardableResult
    public func rollback() throws -> InstalledModel {
        let (model, installed) = try shelf.rollback()
        try reload(model: (model, installed))
        logger.warning("model rolled back", metadata: ["version": "\(installed.version)"])
        return installed
    }

    /// Stores the camera's newest frame as a capture. With an aligner in the
    /// recipe the frame is stored aligned (in template coordinates), so ROI
    /// rectangles cut the same part of the part as the live pipeline does.
    public func captureFromCamera(user: String) async throws -> CaptureRecord {
        let frame = try pipeline.requireLatestFrame()
        return try await addCapture(
            frame.image, capturedAt: frame.capturedAt, source: "camera:\(frame.origin)#\(frame.sequence)", user: user)
    }

    /// Frame `id` of the camera's Library as the next capture, for labelling ("Import From Library").
    public func captureFromLibrary(id: Int64, user: String) async throws -> CaptureRecord {
        let kept = try await library.frame(id: id)
        let decoded = try ImageFile.decode(try await library.image(of: kept))
        let image: Image8
        if case .rgb8(let rgb) = decoded { image = rgb } else { image = decoded.gray8 }
        let capture = try await addCapture(image, capturedAt: kept.capturedAt, source: "library:\(id)#\(kept.sequence)", user: user)
        try await library.markImported(id: id, as: capture.number)
        return capture
    }

    /// A camera frame as the next capture: aligned to the reference as the recipe's ROIs expect.
    private func addCapture(_ frame: Image8, capturedAt: Date, source: String, user: String) async throws -> CaptureRecord {
        let inspector = pipeline.currentInspector
        var image = frame
        var source = source
        if let aligner = inspector.aligner {
            let alignment = try aligner.align(frame)
            guard alignment.aligned else {
                throw StoreError.invalid("the part was not found in the frame (alignment score \(String(format: "%.2f", alignment.score)))")
            }
            image = frame.warped(by: alignment.pose.inverse)
            source += " aligned"
        }
        let png = try PNGCodec.encode(image)
        let recipe = inspector.recipe
        return try await store.addCapture(
            LabelStore.EncodedImage(bytes: png, width: image.width, height: image.height, channels: image.channels), source: source,
            at: capturedAt, inspectionType: recipe.inspectionType, recipeVersion: recipe.version, user: user)
    }

    /// The included, labelled ROIs of an inspection type, as training images.
    public func trainingSet(inspectionType: String, classes: Int) async throws -> SegmentationDataset {
        var items: [LabelledImage] = []
        var images: [Int64: Image8] = [:]
        for label in try await store.labels(includedOnly: true) {
            let capture = try await store.capture(id: label.captureID)
            guard capture.inspectionType == inspectionType else { continue }
            let image: Image8
            if let cached = images[label.captureID] {
                image = cached
            } else {
                image = try ImageFile.decode(try await store.image(of: capture)).gray8
                images[label.captureID] = image
            }
            let crop = try image.cropped(to: PixelRect(x: label.roiX, y: label.roiY, width: label.roiWidth, height: label.roiHeight))
            items.append(
                try LabelledImage(
                    name: "capture-\(capture.number)-\(label.roiName)", image: crop, mask: try await store.mask(of: label), classes: classes
                ))
        }
        return SegmentationDataset(items: items, classes: classes)
    }
}

extension AgentConfig {
    /// The manager's model-signing public keys (the files named in `modelKeys`).
    public func trustedModelKeys() throws -> [Curve25519.Signing.PublicKey] {
        try (modelKeys ?? []).map { path in
            do {
                return try SigningKeyFile.loadPublic(path)
            } catch {
                throw ConfigError.invalid(
                    path: path, key: "modelKeys", reason: "not an Ed25519 public key (64 hex digits or 32 raw bytes): \(error)")
            }
        }
    }
}
