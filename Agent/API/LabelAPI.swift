import Foundation
import HTTPTypes
import Hummingbird
import LoupeCapture
import LoupeImaging
import LoupeStorage
import LoupeVision
import NIOCore

/// The label half of the agent's HTTP API (docs/agent-api.md): captures,
/// imports, the recipe, classes, ROI masks (whole PNGs or brush/eraser
/// strokes), the include flag and the edit log. Every route answers bad
/// input with a 4xx that names the cause, and changes nothing.
public struct LabelAPI: Sendable {
    public let store: LabelStore
    /// Largest request body: an imported image or a mask.
    public var maximumBody = 32 << 20
    /// Who the edits are recorded as: the signed-in user the access middleware names.
    /// Who an action is recorded as: the user the access middleware names on the request.
    public static let signedInUser: @Sendable (Request) -> String = { $0.headers[.loupeUser] ?? "unknown" }
    public var user: @Sendable (Request) -> String = LabelAPI.signedInUser
    /// Called after a new recipe version is saved (the live pipeline reloads).
    public var recipeSaved: @Sendable () throws -> Void = {}
    /// Why the agent cannot run a recipe (its camera takes no triggers); nil when it can.
    public var recipeRefusal: @Sendable (Recipe) -> String? = { _ in nil }

    public init(store: LabelStore) {
        self.store = store
    }

    /// The agent's wiring: a saved recipe reloads the live pipeline, and one its camera cannot run is refused.
    public init(runtime: AgentRuntime) {
        self.init(store: runtime.store)
        recipeSaved = { try runtime.reload() }
        recipeRefusal = { runtime.pipeline.refusal(of: $0) }
    }

    public func register(on routes: AgentRoutes) {
        let api = routes.group("api/v1")
        api.get("health", .open) { _, _ in try Self.json(["status": "ok"]) }
        api.get("captures", .viewer) { request, _ in
            let offset = max(0, request.uri.queryParameters.get("offset", as: Int.self) ?? 0)
            let limit = min(500, max(1, request.uri.queryParameters.get("limit", as: Int.self) ?? 100))
            let captures = try store.captures(offset: offset, limit: limit)
            return try Self.json(CaptureList(total: try store.captureCount(), captures: captures.map(CaptureJSON.init)))
        }
        api.get("captures/:number", .viewer) { _, context in
            let number = try Self.number(context)
            let capture = try store.capture(number: number)
            return try Self.json(
                CaptureDetail(capture: CaptureJSON(capture), labels: try store.labels(captureNumber: number).map(LabelJSON.init)))
        }
        api.get("captures/:number/image", .viewer) { _, context in
            let number = try Self.number(context)
            let data = try store.image(of: try store.capture(number: number))
            let type = data.starts(with: [0x89, 0x50, 0x4E, 0x47]) ? "image/png" : "image/jpeg"
            return Self.bytes(data, type: type)
        }
        api.post("captures/import", .operator) { request, _ in
            let body = try await Self.body(request, limit: maximumBody)
            let name = request.headers[Self.filenameHeader] ?? "upload"
            guard FleetName.isValid(name.replacingOccurrences(of: " ", with: "_")) else {
                throw HTTPError(.badRequest, message: FleetName.refusal("file name", name) + " (spaces allowed, no paths)")
            }
            let decoded: DecodedImage
            do { decoded = try ImageFile.decode(body) } catch {
                throw HTTPError(.unsupportedMediaType, message: "not a PNG or JPEG image we can read: \(error)")
            }
            let channels: Int
            switch decoded {
            case .rgb8: channels = 3
            default: channels = 1
            }
            let user = self.user(request)
            let recipe = try store.recipe()
            let capture = try store.addCapture(
                encoded: body, width: decoded.width, height: decoded.height, channels: channels, source: "import:\(name)",
                inspectionType: recipe.inspectionType, recipeVersion: recipe.version, user: user)
            return try Self.json(CaptureJSON(capture), status: .created)
        }
        api.get("recipe", .viewer) { _, _ in try Self.json(try store.recipe()) }
        api.put("recipe", .operator) { request, _ in
            let recipe = try await Self.decode(Recipe.self, request, limit: 1 << 20)
            if let refusal = self.recipeRefusal(recipe) { throw HTTPError(.badRequest, message: refusal) }
            let user = self.user(request)
            let saved = try store.saveRecipe(recipe, user: user)
            try recipeSaved()
            return try Self.json(saved)
        }
        api.get("classes", .viewer) { _, _ in try Self.json(try store.classes()) }
        api.put("classes", .operator) { request, _ in
            let classes = try await Self.decode([ClassRecord].self, request, limit: 1 << 16)
            let user = self.user(request)
            try store.setClasses(classes, user: user)
            return try Self.json(try store.classes())
        }
        api.get("captures/:number/rois/:roi/mask", .viewer) { _, context in
            let (number, roiName) = try Self.target(context)
            guard let label = try store.label(captureNumber: number, roiName: roiName) else {
                throw StoreError.notFound("no mask for ROI \(roiName) on capture \(number)")
            }
            return Self.bytes(try store.blobs.get(label.maskHash), type: "image/png")
        }
        api.put("captures/:number/rois/:roi/mask", .operator) { request, context in
            let (number, roiName) = try Self.target(context)
            let body = try await Self.body(request, limit: maximumBody)
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
            let roi = try store.recipe().roi(named: roiName)
            let label = try store.saveMask(
                captureNumber: number, roi: (roi.name, roi.rect), mask: mask, classes: try store.classes().count + 1, user: user)
            return try Self.json(LabelJSON(label))
        }
        api.post("captures/:number/rois/:roi/strokes", .operator) { request, context in
            let (number, roiName) = try Self.target(context)
            let strokes = try await Self.decode(StrokeBatch.self, request, limit: 4 << 20).strokes
            let user = self.user(request)
            let roi = try store.recipe().roi(named: roiName)
            return try Self.json(
                LabelJSON(
                    try store.applyStrokes(strokes, captureNumber: number, roi: roi, classes: try store.classes().count + 1, user: user)
                ))
        }
        api.put("captures/:number/rois/:roi/include", .operator) { request, context in
            let (number, roiName) = try Self.target(context)
            let flag = try await Self.decode(IncludeFlag.self, request, limit: 1024)
            let user = self.user(request)
            if flag.include, try store.label(captureNumber: number, roiName: roiName) == nil {
                // Ticking an ROI nobody painted adds it as a defect-free example.
                let roi = try store.recipe().roi(named: roiName)
                try store.saveMask(
                    captureNumber: number, roi: (roi.name, roi.rect), mask: try LabelStore.emptyMask(for: roi),
                    classes: try store.classes().count + 1, user: user)
            }
            try store.setIncluded(captureNumber: number, roiName: roiName, included: flag.include, user: user)
            return try Self.json(LabelJSON(try store.label(captureNumber: number, roiName: roiName)!))
        }
        api.get("edits", .viewer) { request, _ in
            let limit = min(1000, max(1, request.uri.queryParameters.get("limit", as: Int.self) ?? 100))
            return try Self.json(try store.edits(limit: limit))
        }
    }

    // MARK: Shapes on the wire

    struct CaptureJSON: Codable {
        var number: Int
        var width: Int
        var height: Int
        var channels: Int
        var source: String
        var capturedAt: Date
        var inspectionType: String
        var recipeVersion: Int

        init(_ record: CaptureRecord) {
            number = record.number
            width = record.width
            height = record.height
            channels = record.channels
            source = record.source
            capturedAt = record.capturedAt
            inspectionType = record.inspectionType
            recipeVersion = record.recipeVersion
        }
    }

    struct CaptureList: Codable {
        var total: Int
        var captures: [CaptureJSON]
    }

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
        var check: PageAPI.MaskCheck?

        init(_ edit: LabelStore.MaskEdit) {
            self.init(edit.label)
            maskPNG = edit.png
            check = PageAPI.MaskCheck(edit.mask)
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

    struct CaptureDetail: Codable {
        var capture: CaptureJSON
        var labels: [LabelJSON]
    }

    struct StrokeBatch: Codable {
        var strokes: [Stroke]
    }

    struct IncludeFlag: Codable {
        var include: Bool
    }

    // MARK: Helpers

    static let filenameHeader = HTTPField.Name("X-Loupe-Filename")!

    static var encoder: JSONEncoder { JSONEncoder.iso }

    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        let data = try encoder.encode(value)
        return Response(
            status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func bytes(_ data: Data, type: String) -> Response {
        Response(status: .ok, headers: [.contentType: type], body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func number(_ context: some RequestContext) throws -> Int {
        guard let text = context.parameters.get("number"), let number = Int(text), number > 0 else {
            throw HTTPError(
                .badRequest, message: "capture number must be a positive integer, not \"\(context.parameters.get("number") ?? "")\"")
        }
        return number
    }

    /// The capture number and ROI name of a `captures/:number/rois/:roi/…` route.
    static func target(_ context: some RequestContext) throws -> (number: Int, roi: String) {
        (try number(context), try roi(context))
    }

    static func roi(_ context: some RequestContext) throws -> String {
        let name = context.parameters.get("roi") ?? ""
        guard FleetName.isValid(name) else {
            throw HTTPError(.badRequest, message: FleetName.refusal("ROI name", name))
        }
        return name
    }

    static func body(_ request: Request, limit: Int) async throws -> Data {
        if let length = request.headers[.contentLength].flatMap(Int.init), length > limit {
            throw HTTPError(.contentTooLarge, message: "body of \(length) bytes is over the \(limit)-byte limit")
        }
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: limit)
        } catch {
            throw HTTPError(.contentTooLarge, message: "body is over the \(limit)-byte limit")
        }
        guard buffer.readableBytes > 0 else { throw HTTPError(.badRequest, message: "the request has no body") }
        return Data(buffer.readableBytesView)
    }

    static func decode<T: Decodable>(_ type: T.Type, _ request: Request, limit: Int) async throws -> T {
        let data = try await body(request, limit: limit)
        do {
            return try JSONDecoder.iso.decode(T.self, from: data)
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            throw HTTPError(
                .badRequest,
                message: "wrong type at \(context.codingPath.map(\.stringValue).joined(separator: ".")): \(context.debugDescription)")
        } catch let DecodingError.keyNotFound(key, _) {
            throw HTTPError(.badRequest, message: "missing field \"\(key.stringValue)\"")
        } catch {
            throw HTTPError(.badRequest, message: "the body is not the JSON this route takes: \(error)")
        }
    }
}
