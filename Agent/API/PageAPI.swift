import Foundation
import HTTPTypes
import Hummingbird
import LoupeCapture
import LoupeImaging
import LoupeStorage
import LoupeVision
import LoupeWire
import NIOCore

/// What the Label & Train page needs beyond the label and live routes: the
/// page itself (HTML, CSS and JavaScript compiled into the binary), the raw
/// camera frame, the alignment test for recipe setup, every labelled ROI for
/// "View All ROIs", the mask tools, the labelling check and undo/redo.
public struct PageAPI: Sendable {
    public let runtime: AgentRuntime
    public var user: @Sendable (Request) -> String = LabelAPI.signedInUser

    public init(runtime: AgentRuntime) {
        self.runtime = runtime
    }

    /// The page's files: path → (MIME type, bytes).
    static let assets: [String: (type: String, bytes: [UInt8])] = [
        "/": ("text/html; charset=utf-8", PackageResources.index_html),
        "/index.html": ("text/html; charset=utf-8", PackageResources.index_html),
        "/app.css": ("text/css; charset=utf-8", PackageResources.app_css),
        "/app.js": ("text/javascript; charset=utf-8", PackageResources.app_js),
        "/editor.js": ("text/javascript; charset=utf-8", PackageResources.editor_js),
        "/recipe.js": ("text/javascript; charset=utf-8", PackageResources.recipe_js),
    ]

    public func register(on routes: AgentRoutes) {
        for (path, asset) in Self.assets {
            // The security headers (CSP, nosniff, …) come from SecurityHeadersMiddleware, as on every response.
            routes.get(RouterPath(path), .open) { _, _ in
                Response(
                    status: .ok, headers: [.contentType: asset.type, .cacheControl: "no-cache"],
                    body: ResponseBody(byteBuffer: ByteBuffer(bytes: asset.bytes)))
            }
        }

        let api = routes.group("api/v1")
        let store = runtime.store
        let pipeline = runtime.pipeline

        // The camera's newest frame as it comes, for the preview pane while live mode is off.
        api.get("camera/frame.jpg", .viewer) { request, _ in
            let width = min(4096, max(64, request.uri.queryParameters.get("width", as: Int.self) ?? 1280))
            let frame = try pipeline.requireLatestFrame()
            var image = frame.image
            if image.width > width { image = try image.resizedArea(width: width, height: max(1, image.height * width / image.width)) }
            var response = LabelAPI.bytes(try JPEGCodec.encode(image, quality: 80), type: "image/jpeg")
            response.headers[.cacheControl] = "no-store"
            response.headers[.init("X-Loupe-Frame")!] = "\(frame.sequence)"
            return response
        }

        // Recipe setup: find the template (saved or drafted) in the current live frame.
        api.post("align/test", .operator) { request, _ in
            let draft = try await LabelAPI.decode(AlignDraft.self, request, limit: 8192)
            let saved = try store.recipe()
            var recipe = saved
            if let reference = draft.referenceCapture { recipe.referenceCapture = reference }
            if let template = draft.template { recipe.template = template }
            if let range = draft.angleRangeDegrees { recipe.angleRangeDegrees = range }
            if let score = draft.minAlignScore { recipe.minAlignScore = score }
            try recipe.validate()
            guard let configuration = recipe.alignerConfiguration, let referenceNumber = recipe.referenceCapture else {
                throw StoreError.invalid("draw the aligner's template on a capture first")
            }
            let frame = try pipeline.requireLatestFrame()
            let reference = try ImageFile.decode(try store.image(of: try store.capture(number: referenceNumber))).gray8
            let clock = ContinuousClock()
            let start = clock.now
            let alignment: Alignment
            do {
                alignment = try Aligner(reference: reference, configuration: configuration).align(frame.image)
            } catch {
                throw StoreError.invalid("the aligner cannot use this template: \(error)")
            }
            let placement = configuration.placement(of: alignment.pose)
            return try LabelAPI.json(
                AlignTestResult(
                    score: alignment.score, aligned: alignment.aligned, minScore: configuration.minScore,
                    x: placement.x, y: placement.y, angleDegrees: placement.angleDegrees,
                    shiftX: placement.shiftX, shiftY: placement.shiftY,
                    milliseconds: (clock.now - start).milliseconds, frameSequence: frame.sequence))
        }

        // Every labelled ROI with its capture number, for "View All ROIs".
        api.get("labels", .viewer) { request, _ in
            let includedOnly = request.uri.queryParameters.get("included") == "true"
            var numbers: [Int64: Int] = [:]
            let labels = try store.labels(includedOnly: includedOnly).map { label throws(StoreError) -> LabelSummary in
                let number: Int
                if let known = numbers[label.captureID] {
                    number = known
                } else {
                    number = try store.capture(id: label.captureID).number
                    numbers[label.captureID] = number
                }
                return LabelSummary(capture: number, label: LabelAPI.LabelJSON(label))
            }
            return try LabelAPI.json(labels)
        }

        // The mask tools: fill holes, grow, shrink, remove specks.
        api.post("captures/:number/rois/:roi/mask/tool", .operator) { request, context in
            let (number, roiName) = try LabelAPI.target(context)
            let command = try await LabelAPI.decode(MaskToolCommand.self, request, limit: 4096)
            let user = self.user(request)
            let roi = try store.recipe().roi(named: roiName)
            let radius = command.radius ?? 2
            guard radius.isFinite, (0.5...64).contains(radius) else {
                throw StoreError.invalid("radius must be 0.5…64 px, not \(radius)")
            }
            let area = command.minimumArea ?? 30
            guard (1...1_000_000).contains(area) else { throw StoreError.invalid("minimumArea must be 1…1000000 px, not \(area)") }
            let tool: (Image8) -> Image8
            switch command.tool {
            case "fill-holes": tool = MaskTools.fillHoles
            case "grow": tool = { MaskTools.dilate($0, radius: radius) }
            case "shrink": tool = { MaskTools.erode($0, radius: radius) }
            case "remove-specks": tool = { MaskTools.removeBlobs($0, smallerThan: area) }
            default: throw StoreError.invalid("tool must be fill-holes, grow, shrink or remove-specks, not \"\(command.tool)\"")
            }
            let edit = try store.editMask(
                captureNumber: number, roi: roi, classes: try store.classes().count + 1, user: user, action: command.tool
            ) { mask in
                mask = tool(mask)
            }
            return try LabelAPI.json(LabelAPI.LabelJSON(edit))
        }

        // The seed's labelling check: regions thinner than a 6 px radius brush.
        api.get("captures/:number/rois/:roi/mask/check", .viewer) { request, context in
            let (number, roiName) = try LabelAPI.target(context)
            let minimum = request.uri.queryParameters.get("radius", as: Double.self) ?? MaskCheck.defaultRadius
            guard let label = try store.label(captureNumber: number, roiName: roiName) else {
                return try LabelAPI.json(MaskCheck(minimumRadius: minimum, thin: []))
            }
            return try LabelAPI.json(MaskCheck(try store.mask(of: label), minimumRadius: minimum))
        }

        // Undo and redo: put back an earlier version of a mask by its hash
        // (every version stays in the content-addressed blob store), or an
        // empty mask for "before the first edit".
        api.put("captures/:number/rois/:roi/mask/revert", .operator) { request, context in
            let (number, roiName) = try LabelAPI.target(context)
            let revert = try await LabelAPI.decode(MaskRevert.self, request, limit: 4096)
            let user = self.user(request)
            let action = revert.action ?? "revert"
            guard ["undo", "redo", "revert"].contains(action) else {
                throw HTTPError(.badRequest, message: "action must be undo, redo or revert, not \"\(action)\"")
            }
            let roi = try store.recipe().roi(named: roiName)
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
            let edit = try store.editMask(
                captureNumber: number, roi: roi, classes: try store.classes().count + 1, user: user, action: action
            ) { current in
                current = mask
            }
            return try LabelAPI.json(LabelAPI.LabelJSON(edit))
        }
    }

    struct AlignDraft: Codable {
        var referenceCapture: Int?
        var template: PixelRect?
        var angleRangeDegrees: Double?
        var minAlignScore: Double?
    }

    struct AlignTestResult: Codable {
        var score: Double
        var aligned: Bool
        var minScore: Double
        /// Where the template's centre was found in the frame.
        var x: Double
        var y: Double
        var angleDegrees: Double
        /// How far the part moved from the reference.
        var shiftX: Double
        var shiftY: Double
        var milliseconds: Double
        var frameSequence: Int
    }

    struct LabelSummary: Codable {
        var capture: Int
        var label: LabelAPI.LabelJSON
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
}
