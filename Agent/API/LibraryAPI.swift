import Foundation
public import Hummingbird
import LoupeStorage

/// The camera's Library over HTTP (docs/agent-api.md): browse and filter the
/// kept frames, the frames worth labelling first ("Review"), a frame's
/// image, and Import From Library into labelling.
public struct LibraryAPI: Sendable {
    public let runtime: AgentRuntime
    public var user: @Sendable (Request) -> String = AgentAPI.signedInUser

    public init(runtime: AgentRuntime) {
        self.runtime = runtime
    }

    public func register(on routes: AgentRoutes) {
        let api = routes.group("api/v1")
        let library = runtime.library
        api.get("library", .viewer) { request, _ in
            let query = request.uri.queryParameters
            var filter = FrameLibrary.Filter()
            filter.verdict = try Self.oneOf(query.get("verdict"), ["pass", "fail"], name: "verdict")
            filter.reason = try Self.oneOf(query.get("reason"), ["fail", "unsure", "sample"], name: "reason")
            if let name = query.get("class") {
                guard FleetName.isValid(name) else { throw HTTPError(.badRequest, message: FleetName.refusal("class name", name)) }
                filter.className = name
            }
            filter.since = try Self.date(query.get("since"), name: "since")
            filter.until = try Self.date(query.get("until"), name: "until")
            filter.review = query.get("review") == "true"
            if let limit = query.get("limit") {
                guard let value = Int(limit), (1...1000).contains(value) else {
                    throw HTTPError(.badRequest, message: "limit must be 1…1000, not \(limit)")
                }
                filter.limit = value
            }
            let usage = try await library.usage()
            let frames = try await library.frames(filter).map(FrameJSON.init)
            return try AgentAPI.json(
                ListJSON(
                    frames: frames, kept: usage.frames, unsure: usage.unsure, bytes: usage.bytes,
                    quotaBytes: library.policy.quotaBytes, notKept: library.backlog.dropped))
        }
        api.get("library/:id/image", .viewer) { _, context in
            let id = try Self.id(context)
            return AgentAPI.bytes(try await library.image(of: try await library.frame(id: id)), type: "image/jpeg")
        }
        api.post("library/:id/import", .operator) { request, context in
            let id = try Self.id(context)
            let user = self.user(request)
            return try AgentAPI.json(CaptureAPI.CaptureJSON(try await runtime.captureFromLibrary(id: id, user: user)), status: .created)
        }
    }

    static func id(_ context: some RequestContext) throws -> Int64 {
        let text = context.parameters.get("id") ?? ""
        guard let id = Int64(text), id > 0 else {
            throw HTTPError(.badRequest, message: "Library frame id must be a positive number, not \"\(text)\"")
        }
        return id
    }

    static func oneOf(_ value: String?, _ allowed: [String], name: String) throws -> String? {
        guard let value else { return nil }
        guard allowed.contains(value) else {
            throw HTTPError(.badRequest, message: "\(name) must be one of \(allowed.joined(separator: ", ")), not \"\(value)\"")
        }
        return value
    }

    static func date(_ value: String?, name: String) throws -> Date? {
        guard let value else { return nil }
        guard let date = ISO8601DateFormatter().date(from: value) else {
            throw HTTPError(.badRequest, message: "\(name) must be an ISO 8601 time, not \"\(value)\"")
        }
        return date
    }

    struct FrameJSON: Codable {
        var id: Int64
        var sequence: Int
        var capturedAt: Date
        var verdict: String
        var reason: String
        var unsure: Double
        var classes: [String]
        var modelVersion: String
        var recipeVersion: Int
        var threshold: Double
        var alignScore: Double?
        var width: Int
        var height: Int
        var bytes: Int
        var importedAs: Int?
        var triggerSource: String?
        var triggerSequence: Int?
        var shiftX: Double?
        var shiftY: Double?
        var angleDegrees: Double?

        init(_ frame: LibraryFrame) {
            id = frame.id ?? 0
            sequence = frame.sequence
            capturedAt = frame.capturedAt
            verdict = frame.verdict
            reason = frame.reason
            unsure = frame.unsure
            classes = frame.classes.isEmpty ? [] : frame.classes.components(separatedBy: ",")
            modelVersion = frame.modelVersion
            recipeVersion = frame.recipeVersion
            threshold = frame.threshold
            alignScore = frame.alignScore
            width = frame.width
            height = frame.height
            bytes = frame.bytes
            importedAs = frame.importedAs
            triggerSource = frame.triggerSource
            triggerSequence = frame.triggerSequence
            shiftX = frame.shiftX
            shiftY = frame.shiftY
            angleDegrees = frame.angleDegrees
        }
    }

    struct ListJSON: Codable {
        var frames: [FrameJSON]
        var kept: Int
        var unsure: Int
        var bytes: Int
        var quotaBytes: Int
        /// Frames worth keeping that were not, for the rate limit or a full queue.
        var notKept: Int
    }
}
