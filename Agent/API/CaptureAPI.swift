import Foundation
import HTTPTypes
public import Hummingbird
import LoupeImaging
import LoupeStorage
import LoupeVision
import NIOCore

/// Captures (docs/agent-api.md): the list, one with its labels, its image,
/// an imported image, and (with a camera) the camera's newest frame kept as
/// a capture.
public struct CaptureAPI: Sendable {
    public let store: LabelStore
    /// Largest request body: an imported image.
    public var maximumBody = 32 << 20
    public var user: @Sendable (Request) -> String = AgentAPI.signedInUser
    /// Keeps the camera's newest frame as a capture, recorded as the user; nil without an agent around the store.
    public var captureFromCamera: (@Sendable (String) async throws -> CaptureRecord)?

    public init(store: LabelStore) {
        self.store = store
    }

    public init(runtime: AgentRuntime) {
        self.init(store: runtime.store)
        captureFromCamera = { try await runtime.captureFromCamera(user: $0) }
    }

    public func register(on routes: AgentRoutes) {
        let api = routes.group("api/v1")
        api.get("captures", .viewer) { request, _ in
            let offset = max(0, request.uri.queryParameters.get("offset", as: Int.self) ?? 0)
            let limit = min(500, max(1, request.uri.queryParameters.get("limit", as: Int.self) ?? 100))
            let captures = try await store.captures(offset: offset, limit: limit)
            return try AgentAPI.json(CaptureList(total: try await store.captureCount(), captures: captures.map(CaptureJSON.init)))
        }
        api.get("captures/:number", .viewer) { _, context in
            let number = try AgentAPI.number(context)
            let capture = try await store.capture(number: number)
            return try AgentAPI.json(
                CaptureDetail(
                    capture: CaptureJSON(capture), labels: try await store.labels(captureNumber: number).map(ROIAPI.LabelJSON.init)))
        }
        api.get("captures/:number/image", .viewer) { _, context in
            let number = try AgentAPI.number(context)
            let data = try await store.image(of: try await store.capture(number: number))
            let type = data.starts(with: [0x89, 0x50, 0x4E, 0x47]) ? "image/png" : "image/jpeg"
            return AgentAPI.bytes(data, type: type)
        }
        api.post("captures/import", .operator) { request, _ in
            let body = try await AgentAPI.body(request, limit: maximumBody)
            let name = request.headers[AgentAPI.filenameHeader] ?? "upload"
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
            let recipe = try await store.recipe()
            let capture = try await store.addCapture(
                LabelStore.EncodedImage(bytes: body, width: decoded.width, height: decoded.height, channels: channels),
                source: "import:\(name)",
                inspectionType: recipe.inspectionType, recipeVersion: recipe.version, user: user)
            return try AgentAPI.json(CaptureJSON(capture), status: .created)
        }
        if let captureFromCamera {
            api.post("captures", .operator) { request, _ in
                let user = self.user(request)
                return try AgentAPI.json(CaptureJSON(try await captureFromCamera(user)), status: .created)
            }
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

    struct CaptureDetail: Codable {
        var capture: CaptureJSON
        var labels: [ROIAPI.LabelJSON]
    }
}
