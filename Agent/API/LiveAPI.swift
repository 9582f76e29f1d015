import Foundation
import HTTPTypes
public import Hummingbird
import LoupeCapture
import LoupeImaging
import LoupeStorage
import LoupeVision
import NIOCore

/// Live inspection (docs/agent-api.md): the camera's raw frame, live mode and
/// its threshold, software triggers, results, the overlay as a JPEG and as
/// an MJPEG stream, and result events.
public struct LiveAPI: Sendable {
    public let runtime: AgentRuntime
    public var user: @Sendable (Request) -> String = AgentAPI.signedInUser

    public init(runtime: AgentRuntime) {
        self.runtime = runtime
    }

    public func register(on routes: AgentRoutes) {
        let api = routes.group("api/v1")
        let store = runtime.store
        let pipeline = runtime.pipeline

        // The camera's newest frame as it comes, for the preview pane while live mode is off.
        api.get("camera/frame.jpg", .viewer) { request, _ in
            let width = min(4096, max(64, request.uri.queryParameters.get("width", as: Int.self) ?? 1280))
            let frame = try pipeline.requireLatestFrame()
            var image = frame.image
            if image.width > width { image = try image.resizedArea(width: width, height: max(1, image.height * width / image.width)) }
            var response = AgentAPI.bytes(try JPEGCodec.encode(image, quality: 80), type: "image/jpeg")
            response.headers[.cacheControl] = "no-store"
            response.headers[.init("X-Loupe-Frame")!] = "\(frame.sequence)"
            return response
        }
        // Live mode.
        api.get("live", .viewer) { _, _ in try AgentAPI.json(pipeline.statistics) }
        api.put("live", .operator) { request, _ in
            let change = try await AgentAPI.decode(LiveChange.self, request, limit: 4096)
            let user = self.user(request)
            if let threshold = change.threshold {
                guard threshold.isFinite, (0...1).contains(threshold) else {
                    throw StoreError.invalid("threshold must be 0…1, not \(threshold)")
                }
                var recipe = try await store.recipe()
                if recipe.confidenceThreshold != threshold {
                    recipe.confidenceThreshold = threshold
                    try await store.saveRecipe(recipe, user: user)
                    try await runtime.recipeChanged()
                }
            }
            if let live = change.live {
                if live { try pipeline.requireCamera() }
                pipeline.setLive(live)
            }
            return try AgentAPI.json(pipeline.statistics)
        }
        // One frame, one inspection, one result from a camera in software trigger mode (camera.trigger "software").
        api.post("live/trigger", .operator) { request, _ in
            let wait = request.uri.queryParameters.get("wait", as: Bool.self) ?? false
            let stamp = try pipeline.trigger()
            guard wait else { return try AgentAPI.json(stamp, status: .accepted) }
            guard let result = await pipeline.result(of: stamp, timeout: .seconds(10)) else {
                if let reason = pipeline.failure(of: stamp) { throw TriggerError.frameFailed(trigger: stamp.sequence, reason: reason) }
                throw HTTPError(
                    .gatewayTimeout, message: "trigger \(stamp.sequence) gave no result within 10 s (see sourceError in GET /api/v1/live)")
            }
            return try AgentAPI.json(result)
        }
        api.get("live/results", .viewer) { request, _ in
            let limit = min(LivePipeline.logCapacity, max(1, request.uri.queryParameters.get("limit", as: Int.self) ?? 50))
            return try AgentAPI.json(pipeline.results(limit: limit))
        }
        api.get("live/frame.jpg", .viewer) { request, _ in
            let width = min(4096, max(64, request.uri.queryParameters.get("width", as: Int.self) ?? 1280))
            guard let latest = pipeline.latest else { throw HTTPError(.notFound, message: "no frame has been inspected yet") }
            return AgentAPI.bytes(try LiveOverlay.jpeg(latest, colors: try await colors(), maxWidth: width), type: "image/jpeg")
        }
        let sessions = runtime.store.sessionEvents
        api.get("live/stream.mjpeg", .viewer) { request, context in
            let width = min(4096, max(64, request.uri.queryParameters.get("width", as: Int.self) ?? 960))
            let fps = min(30, max(0.2, request.uri.queryParameters.get("fps", as: Double.self) ?? 10))
            let colors = try await colors()
            let ticks = AgentAPI.untilEnded(pipeline.subscribe(keepingNewest: 1), session: context, sessions)
            let boundary = "loupeframe"
            return Response(
                status: .ok, headers: [.contentType: "multipart/x-mixed-replace; boundary=\(boundary)", .cacheControl: "no-store"],
                body: ResponseBody { writer in
                    var last = ContinuousClock.now - .seconds(10)
                    for await _ in ticks {
                        // At most `fps` frames a second: the stream drops what it cannot send.
                        let now = ContinuousClock.now
                        if now - last < .seconds(1 / fps) { continue }
                        last = now
                        guard let latest = pipeline.latest, let jpeg = try? LiveOverlay.jpeg(latest, colors: colors, maxWidth: width) else {
                            continue
                        }
                        var part = ByteBuffer(string: "--\(boundary)\r\nContent-Type: image/jpeg\r\nContent-Length: \(jpeg.count)\r\n\r\n")
                        part.writeBytes(jpeg)
                        part.writeString("\r\n")
                        try await writer.write(part)
                    }
                    try await writer.finish(nil)
                })
        }
        api.get("live/events", .viewer) { _, context in
            AgentAPI.eventStream(AgentAPI.untilEnded(pipeline.subscribe(), session: context, sessions), name: "result")
        }
    }

    private func colors() async throws -> [RGB] {
        let classes = try await runtime.store.classes().sorted { $0.index < $1.index }
        var colors = [RGB(0, 0, 0)]
        for record in classes {
            let c = record.color
            colors.append(RGB(UInt8((c >> 16) & 0xFF), UInt8((c >> 8) & 0xFF), UInt8(c & 0xFF)))
        }
        return colors
    }

    struct LiveChange: Codable {
        var live: Bool?
        var threshold: Double?
    }
}
