import Foundation
import HTTPTypes
public import Hummingbird
import LoupeImaging
import LoupeSegmentation
import LoupeStorage
import LoupeVision
import NIOCore

/// One ROI of one capture, `captures/:number/rois/:roi/…` (docs/agent-api.md):
/// its crop, its mask (whole PNGs, brush and eraser strokes, the mask tools,
/// undo and redo, the labelling check), the include flag, and with an agent
/// around the store the learned wand and the model's suggestions. Every edit
/// loads, changes and saves the mask inside one write (`LabelStore.editMask`)
/// and answers with what the page shows next.
public struct ROIAPI: Sendable {
    public let store: LabelStore
    /// The wand, the suggestions and the running model; nil for the label routes alone.
    public let runtime: AgentRuntime?
    /// Largest request body: a mask.
    public var maximumBody = 32 << 20
    public var user: @Sendable (Request) -> String = AgentAPI.signedInUser

    public init(store: LabelStore) {
        self.store = store
        runtime = nil
    }

    public init(runtime: AgentRuntime) {
        store = runtime.store
        self.runtime = runtime
    }

    public func register(on routes: AgentRoutes) {
        let api = routes.group("api/v1")
        api.get("captures/:number/rois/:roi/image", .viewer) { _, context in
            let (number, roiName) = try AgentAPI.target(context)
            let crop = try await roiCrop(number: number, roiName: roiName)
            return AgentAPI.bytes(try PNGCodec.encode(crop), type: "image/png")
        }
        api.get("captures/:number/rois/:roi/mask", .viewer) { _, context in
            let (number, roiName) = try AgentAPI.target(context)
            guard let label = try await store.label(captureNumber: number, roiName: roiName) else {
                throw StoreError.notFound("no mask for ROI \(roiName) on capture \(number)")
            }
            return AgentAPI.bytes(try store.blobs.get(label.maskHash), type: "image/png")
        }
        api.put("captures/:number/rois/:roi/mask", .operator) { request, context in
            let (number, roiName) = try AgentAPI.target(context)
            let body = try await AgentAPI.body(request, limit: maximumBody)
            let mask: Image8
            do {
                let decoded = try PNGCodec.decode(body, limits: .roi)
                guard case .gray8(let grey) = decoded else {
                    throw HTTPError(.badRequest, message: "a mask must be an 8-bit single-channel PNG of class indices")
                }
                mask = grey
            } catch let error as HTTPError {
                throw error
            } catch {
                throw HTTPError(.unsupportedMediaType, message: "the mask is not a PNG we can read: \(error)")
            }
            let user = self.user(request)
            let roi = try await store.recipe().roi(named: roiName)
            let label = try await store.saveMask(
                captureNumber: number, roi: (roi.name, roi.rect), mask: mask, classes: try await store.maskValues(), user: user)
            return try AgentAPI.json(LabelJSON(label))
        }
        api.post("captures/:number/rois/:roi/strokes", .operator) { request, context in
            let (number, roiName) = try AgentAPI.target(context)
            let strokes = try await AgentAPI.decode(StrokeBatch.self, request, limit: 4 << 20).strokes
            let user = self.user(request)
            let roi = try await store.recipe().roi(named: roiName)
            return try AgentAPI.json(
                LabelJSON(
                    try await store.applyStrokes(
                        strokes, captureNumber: number, roi: roi, classes: try await store.maskValues(), user: user)
                ))
        }
        api.put("captures/:number/rois/:roi/include", .operator) { request, context in
            let (number, roiName) = try AgentAPI.target(context)
            let flag = try await AgentAPI.decode(IncludeFlag.self, request, limit: 1024)
            let user = self.user(request)
            if flag.include, try await store.label(captureNumber: number, roiName: roiName) == nil {
                // Ticking an ROI nobody painted adds it as a defect-free example.
                let roi = try await store.recipe().roi(named: roiName)
                try await store.saveMask(
                    captureNumber: number, roi: (roi.name, roi.rect), mask: try LabelStore.emptyMask(for: roi),
                    classes: try await store.maskValues(), user: user)
            }
            try await store.setIncluded(captureNumber: number, roiName: roiName, included: flag.include, user: user)
            return try AgentAPI.json(LabelJSON(try await store.label(captureNumber: number, roiName: roiName)!))
        }

        // The mask tools: fill holes, grow, shrink, remove specks.
        api.post("captures/:number/rois/:roi/mask/tool", .operator) { request, context in
            let (number, roiName) = try AgentAPI.target(context)
            let command = try await AgentAPI.decode(MaskToolCommand.self, request, limit: 4096)
            let user = self.user(request)
            let roi = try await store.recipe().roi(named: roiName)
            let radius = command.radius ?? 2
            guard radius.isFinite, (0.5...64).contains(radius) else {
                throw StoreError.invalid("radius must be 0.5…64 px, not \(radius)")
            }
            let area = command.minimumArea ?? 30
            guard (1...1_000_000).contains(area) else { throw StoreError.invalid("minimumArea must be 1…1000000 px, not \(area)") }
            let tool: @Sendable (Image8) -> Image8
            switch command.tool {
            case "fill-holes": tool = MaskTools.fillHoles
            case "grow": tool = { MaskTools.dilate($0, radius: radius) }
            case "shrink": tool = { MaskTools.erode($0, radius: radius) }
            case "remove-specks": tool = { MaskTools.removeBlobs($0, smallerThan: area) }
            default: throw StoreError.invalid("tool must be fill-holes, grow, shrink or remove-specks, not \"\(command.tool)\"")
            }
            let edit = try await store.editMask(
                captureNumber: number, roi: roi, classes: try await store.maskValues(), user: user, action: command.tool
            ) { mask in
                mask = tool(mask)
            }
            return try AgentAPI.json(ROIAPI.LabelJSON(edit))
        }
        // The seed's labelling check: regions thinner than a 6 px radius brush.
        api.get("captures/:number/rois/:roi/mask/check", .viewer) { request, context in
            let (number, roiName) = try AgentAPI.target(context)
            let minimum = request.uri.queryParameters.get("radius", as: Double.self) ?? MaskCheck.defaultRadius
            guard let label = try await store.label(captureNumber: number, roiName: roiName) else {
                return try AgentAPI.json(MaskCheck(minimumRadius: minimum, thin: []))
            }
            return try AgentAPI.json(MaskCheck(try await store.mask(of: label), minimumRadius: minimum))
        }
        // Undo and redo: put back an earlier version of a mask by its hash
        // (every version stays in the content-addressed blob store), or an
        // empty mask for "before the first edit".
        api.put("captures/:number/rois/:roi/mask/revert", .operator) { request, context in
            let (number, roiName) = try AgentAPI.target(context)
            let revert = try await AgentAPI.decode(MaskRevert.self, request, limit: 4096)
            let user = self.user(request)
            let action = revert.action ?? "revert"
            guard ["undo", "redo", "revert"].contains(action) else {
                throw HTTPError(.badRequest, message: "action must be undo, redo or revert, not \"\(action)\"")
            }
            let roi = try await store.recipe().roi(named: roiName)
            let mask: Image8
            if let hash = revert.maskSHA256 {
                guard hash.count == 64, hash.allSatisfy(\.isHexDigit) else {
                    throw StoreError.invalid("maskSHA256 must be 64 hex digits")
                }
                let data: Data
                do { data = try store.blobs.get(hash.lowercased()) } catch StoreError.missingBlob {
                    throw StoreError.notFound("mask version \(hash.prefix(12))…")
                }
                do { mask = try PNGCodec.decode(data).gray8 } catch {
                    throw StoreError.invalid("blob \(hash.prefix(12))… is not a mask")
                }
            } else {
                mask = try LabelStore.emptyMask(for: roi)
            }
            let edit = try await store.editMask(
                captureNumber: number, roi: roi, classes: try await store.maskValues(), user: user, action: action
            ) { current in
                current = mask
            }
            return try AgentAPI.json(ROIAPI.LabelJSON(edit))
        }
        if let runtime { registerModelHelp(on: api, runtime: runtime) }
    }

    /// What needs the camera's models: the wand and the suggestions.
    private func registerModelHelp(on api: AgentRoutes, runtime: AgentRuntime) {
        let pipeline = runtime.pipeline
        // The learned wand: features prepared when the page opens a capture, then clicks.
        api.post("captures/:number/rois/:roi/wand/prepare", .operator) { _, context in
            let (number, roiName) = try AgentAPI.target(context)
            let key = try await wandKey(number: number, roiName: roiName)
            if runtime.wand.cached(key) == nil {
                let (crop, mask) = try await wandImage(number: number, roiName: roiName)
                runtime.wand.prepare(key, crop: crop, mask: mask, on: PagePriority.handlers)
            }
            return try AgentAPI.json(WandPrepared(ready: runtime.wand.isPrepared(key)), status: .accepted)
        }
        api.post("captures/:number/rois/:roi/wand", .operator) { request, context in
            let (number, roiName) = try AgentAPI.target(context)
            let click = try await AgentAPI.decode(WandClick.self, request, limit: 4096)
            let user = self.user(request)
            let roi = try await store.recipe().roi(named: roiName)
            let key = try await wandKey(number: number, roiName: roiName, roi: roi)
            guard (0..<roi.rect.width).contains(click.x), (0..<roi.rect.height).contains(click.y) else {
                throw StoreError.invalid("click (\(click.x), \(click.y)) is outside the \(roi.rect.width)x\(roi.rect.height) ROI")
            }
            let tolerance = click.tolerance ?? 0.5
            guard tolerance.isFinite, (0...1).contains(tolerance) else {
                throw StoreError.invalid("tolerance must be 0…1, not \(tolerance)")
            }
            let classes = try await store.maskValues()
            guard (1..<classes).contains(click.classIndex) else {
                throw StoreError.invalid("class \(click.classIndex) is not one of 1…\(classes - 1)")
            }
            let positive: Bool
            switch click.mode ?? "add" {
            case "add": positive = true
            case "remove": positive = false
            case let other: throw StoreError.invalid("mode must be \"add\" or \"remove\", not \"\(other)\"")
            }
            // Normally ready: the page asked for them when it opened the capture.
            let preparing: Task<WandFeatures, Never>
            if let cached = runtime.wand.cached(key) {
                preparing = cached
            } else {
                let (crop, mask) = try await wandImage(number: number, roiName: roiName)
                preparing = runtime.wand.prepare(key, crop: crop, mask: mask, on: PagePriority.handlers)
            }
            let features = await preparing.value
            let edit = try await store.editMask(captureNumber: number, roi: roi, classes: classes, user: user, action: "wand") {
                mask throws(StoreError) in
                do {
                    let outcome = try runtime.wand.click(
                        key, features: features, at: LearnedWand.Click(x: click.x, y: click.y, positive: positive),
                        classIndex: UInt8(click.classIndex), tolerance: tolerance, current: mask)
                    mask = outcome.mask
                    return outcome.selectedPixels
                } catch {
                    throw .invalid("ROI \(roiName): \(error)")
                }
            }
            return try AgentAPI.json(WandResult(selectedPixels: edit.outcome, label: ROIAPI.LabelJSON(edit)))
        }
        // Suggested labels: the installed model's mask for an ROI, a proposal until accepted.
        api.post("captures/:number/rois/:roi/suggestion", .operator) { _, context in
            let (number, roiName) = try AgentAPI.target(context)
            let key = try await wandKey(number: number, roiName: roiName)
            let crop = try await roiCrop(number: number, roiName: roiName)
            let inspector = pipeline.currentInspector
            guard let segmenter = inspector.segmenter else {
                throw HTTPError(
                    .conflict, message: "no model is installed on this camera: train or install one before asking for suggestions")
            }
            let threshold = try await store.recipe().confidenceThreshold
            let mask = try segmenter.segment(crop).mask(threshold: Float(threshold))
            runtime.suggestions.offer(.init(mask: mask, modelVersion: inspector.modelVersion, threshold: threshold), for: key)
            return try AgentAPI.json(
                SuggestionJSON(
                    roi: roiName, modelVersion: inspector.modelVersion, threshold: threshold,
                    labelledPixels: mask.samples.reduce(0) { $0 + ($1 == 0 ? 0 : 1) },
                    maskPNG: try PNGCodec.encode(mask)))
        }
        api.post("captures/:number/rois/:roi/suggestion/accept", .operator) { request, context in
            let (number, roiName) = try AgentAPI.target(context)
            let user = self.user(request)
            let roi = try await store.recipe().roi(named: roiName)
            let key = try await wandKey(number: number, roiName: roiName, roi: roi)
            guard let suggestion = runtime.suggestions.waiting(for: key) else {
                throw HTTPError(
                    .conflict, message: "no suggestion is waiting for ROI \(roiName) of capture \(number): ask for one first")
            }
            let classes = try await store.maskValues()
            let edit = try await store.editMask(
                captureNumber: number, roi: roi, classes: classes, user: user, action: "suggestion",
                note: "model \(suggestion.modelVersion) at threshold \(suggestion.threshold)"
            ) { mask throws(StoreError) in
                mask = suggestion.mask
            }
            runtime.suggestions.take(key)
            return try AgentAPI.json(ROIAPI.LabelJSON(edit))
        }
        api.delete("captures/:number/rois/:roi/suggestion", .operator) { _, context in
            let (number, roiName) = try AgentAPI.target(context)
            guard runtime.suggestions.take(try await wandKey(number: number, roiName: roiName)) != nil else {
                throw HTTPError(.notFound, message: "no suggestion is waiting for ROI \(roiName) of capture \(number)")
            }
            return Response(status: .noContent)
        }
    }

    private func roiCrop(number: Int, roiName: String) async throws -> Image8 {
        let roi = try await store.recipe().roi(named: roiName)
        let image = try ImageFile.decode(try await store.image(of: try await store.capture(number: number))).gray8
        guard roi.rect.x >= 0, roi.rect.y >= 0, roi.rect.x + roi.rect.width <= image.width, roi.rect.y + roi.rect.height <= image.height
        else {
            throw StoreError.invalid(
                "ROI \(roiName) (\(roi.rect.x),\(roi.rect.y) \(roi.rect.width)x\(roi.rect.height)) lies outside capture \(number) "
                    + "(\(image.width)x\(image.height))"
            )
        }
        return try image.cropped(to: roi.rect)
    }

    /// What the wand's features and sessions and the suggestions are kept by: an ROI of a stored
    /// capture at the recipe's rectangle (a capture that does not exist is 404 here).
    private func wandKey(number: Int, roiName: String, roi: RecipeROI? = nil) async throws -> CaptureROI {
        _ = try await store.capture(number: number)
        let rect = if let roi { roi.rect } else { try await store.recipe().roi(named: roiName).rect }
        return CaptureROI(capture: number, roi: roiName, rect: rect)
    }

    /// The ROI's crop and its stored mask when that fits the ROI: what the wand's features are computed from.
    private func wandImage(number: Int, roiName: String) async throws -> (Image8, Image8?) {
        let crop = try await roiCrop(number: number, roiName: roiName)
        var mask: Image8?
        if let label = try await store.label(captureNumber: number, roiName: roiName), label.roiWidth == crop.width,
            label.roiHeight == crop.height
        {
            mask = try await store.mask(of: label)
        }
        return (crop, mask)
    }

    // MARK: Shapes on the wire

    struct LabelJSON: Codable {
        var roi: String
        var rect: PixelRect
        var labelledPixels: Int
        var includeInTraining: Bool
        var updatedAt: Date
        var updatedBy: String
        var maskSHA256: String
        /// After an edit, what the page shows next, so that an edit costs one request: the edited mask
        /// (its PNG, base64 in JSON) and its labelling check.
        var maskPNG: Data?
        var check: ROIAPI.MaskCheck?

        init<Outcome>(_ edit: LabelStore.MaskEdit<Outcome>) {
            self.init(edit.label)
            maskPNG = edit.png
            check = ROIAPI.MaskCheck(edit.mask)
        }

        init(_ record: LabelRecord) {
            roi = record.roiName
            rect = PixelRect(x: record.roiX, y: record.roiY, width: record.roiWidth, height: record.roiHeight)
            labelledPixels = record.labelledPixels
            includeInTraining = record.includeInTraining
            updatedAt = record.updatedAt
            updatedBy = record.updatedBy
            maskSHA256 = record.maskHash
        }
    }

    struct StrokeBatch: Codable {
        var strokes: [Stroke]
    }

    struct IncludeFlag: Codable {
        var include: Bool
    }

    struct MaskToolCommand: Codable {
        /// fill-holes, grow, shrink or remove-specks.
        var tool: String
        /// Grow and shrink: pixels (2 when unset).
        var radius: Double?
        /// Remove specks: regions smaller than this many pixels (30 when unset).
        var minimumArea: Int?
    }

    struct ThinRegion: Codable {
        var classIndex: Int
        var area: Int
        var inscribedRadius: Double
        var bounds: PixelRect
    }

    /// The labelling check: painted regions thinner than a `minimumRadius` brush.
    struct MaskCheck: Codable {
        /// The seed's brush radius, what every edit's answer is checked against.
        static let defaultRadius = 6.0
        var minimumRadius: Double
        var thin: [ThinRegion]

        init(minimumRadius: Double, thin: [ThinRegion]) {
            self.minimumRadius = minimumRadius
            self.thin = thin
        }

        init(_ mask: Image8, minimumRadius: Double = defaultRadius) {
            self.init(
                minimumRadius: minimumRadius,
                thin: MaskTools.tooThin(mask, minimumRadius: minimumRadius).map {
                    ThinRegion(classIndex: Int($0.label), area: $0.area, inscribedRadius: $0.inscribedRadius, bounds: $0.bounds)
                })
        }
    }

    struct MaskRevert: Codable {
        /// The mask version to restore; nil for an empty mask.
        var maskSHA256: String?
        /// Recorded in the edit log: "undo" or "redo" (default "revert").
        var action: String?
    }

    struct WandClick: Codable {
        var x: Int
        var y: Int
        var classIndex: Int
        /// 0…1; 0.5 by default.
        var tolerance: Double?
        /// "add" (default) or "remove".
        var mode: String?
    }

    struct SuggestionJSON: Codable {
        var roi: String
        var modelVersion: String
        var threshold: Double
        var labelledPixels: Int
        /// The proposal: an 8-bit PNG of class indices, base64 in JSON.
        var maskPNG: Data
    }

    struct WandPrepared: Codable {
        /// False while the features are being computed.
        var ready: Bool
    }

    struct WandResult: Codable {
        var selectedPixels: Int
        var label: ROIAPI.LabelJSON
    }
}
