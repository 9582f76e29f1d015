import Foundation
import HTTPTypes
import Hummingbird
import LoupeCapture
import LoupeImaging
import LoupeSegmentation
import LoupeStorage
import LoupeVision
import NIOCore
import ServiceLifecycle

/// The camera half of the agent's HTTP API (docs/agent-api.md): capture from
/// the camera, ROI crops, the wand, live mode and its threshold, results and
/// the overlay stream, training, and the installed model.
public struct LiveAPI: Sendable {
    public let runtime: AgentRuntime
    public let training: TrainingJobs
    /// Who actions are recorded as: the signed-in user the access middleware names.
    public var user: @Sendable (Request) -> String = LabelAPI.signedInUser

    public init(runtime: AgentRuntime, training: TrainingJobs) {
        self.runtime = runtime
        self.training = training
    }

    public func register(on routes: AgentRoutes) {
        let api = routes.group("api/v1")
        let store = runtime.store
        let pipeline = runtime.pipeline

        api.post("captures", .operator) { request, _ in
            let user = self.user(request)
            return try LabelAPI.json(LabelAPI.CaptureJSON(try runtime.captureFromCamera(user: user)), status: .created)
        }
        api.get("captures/:number/rois/:roi/image", .viewer) { _, context in
            let (number, roiName) = try LabelAPI.target(context)
            let crop = try roiCrop(number: number, roiName: roiName)
            return LabelAPI.bytes(try PNGCodec.encode(crop), type: "image/png")
        }
        // The learned wand: features prepared when the page opens a capture, then clicks.
        api.post("captures/:number/rois/:roi/wand/prepare", .operator) { _, context in
            let (number, roiName) = try LabelAPI.target(context)
            let key = try wandKey(number: number, roiName: roiName)
            if runtime.wand.cached(key) == nil {
                let (crop, mask) = try wandImage(number: number, roiName: roiName)
                runtime.wand.prepare(key, crop: crop, mask: mask, on: PagePriority.handlers)
            }
            return try LabelAPI.json(WandPrepared(ready: runtime.wand.isPrepared(key)), status: .accepted)
        }
        api.post("captures/:number/rois/:roi/wand", .operator) { request, context in
            let (number, roiName) = try LabelAPI.target(context)
            let click = try await LabelAPI.decode(WandClick.self, request, limit: 4096)
            let user = self.user(request)
            let roi = try store.recipe().roi(named: roiName)
            let key = try wandKey(number: number, roiName: roiName, roi: roi)
            guard (0..<roi.rect.width).contains(click.x), (0..<roi.rect.height).contains(click.y) else {
                throw StoreError.invalid("click (\(click.x), \(click.y)) is outside the \(roi.rect.width)x\(roi.rect.height) ROI")
            }
            let tolerance = click.tolerance ?? 0.5
            guard tolerance.isFinite, (0...1).contains(tolerance) else {
                throw StoreError.invalid("tolerance must be 0…1, not \(tolerance)")
            }
            let classes = try store.classes().count + 1
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
            let preparing =
                try runtime.wand.cached(key)
                ?? {
                    let (crop, mask) = try wandImage(number: number, roiName: roiName)
                    return runtime.wand.prepare(key, crop: crop, mask: mask, on: PagePriority.handlers)
                }()
            let features = await preparing.value
            var selected = 0
            let edit = try store.editMask(captureNumber: number, roi: roi, classes: classes, user: user, action: "wand") {
                mask throws(StoreError) in
                do {
                    let outcome = try runtime.wand.click(
                        key, features: features, at: LearnedWand.Click(x: click.x, y: click.y, positive: positive),
                        classIndex: UInt8(click.classIndex), tolerance: tolerance, current: mask)
                    mask = outcome.mask
                    selected = outcome.selectedPixels
                } catch {
                    throw .invalid("ROI \(roiName): \(error)")
                }
            }
            return try LabelAPI.json(WandResult(selectedPixels: selected, label: LabelAPI.LabelJSON(edit)))
        }

        // Suggested labels: the installed model's mask for an ROI, a proposal until accepted.
        api.post("captures/:number/rois/:roi/suggestion", .operator) { _, context in
            let (number, roiName) = try LabelAPI.target(context)
            let key = try wandKey(number: number, roiName: roiName)
            let crop = try roiCrop(number: number, roiName: roiName)
            let inspector = pipeline.currentInspector
            guard let segmenter = inspector.segmenter else {
                throw HTTPError(
                    .conflict, message: "no model is installed on this camera: train or install one before asking for suggestions")
            }
            let threshold = try store.recipe().confidenceThreshold
            let mask = try segmenter.segment(crop).mask(threshold: Float(threshold))
            runtime.suggestions.offer(.init(mask: mask, modelVersion: inspector.modelVersion, threshold: threshold), for: key)
            return try LabelAPI.json(
                SuggestionJSON(
                    roi: roiName, modelVersion: inspector.modelVersion, threshold: threshold,
                    labelledPixels: mask.samples.reduce(0) { $0 + ($1 == 0 ? 0 : 1) },
                    maskPNG: try PNGCodec.encode(mask)))
        }
        api.post("captures/:number/rois/:roi/suggestion/accept", .operator) { request, context in
            let (number, roiName) = try LabelAPI.target(context)
            let user = self.user(request)
            let roi = try store.recipe().roi(named: roiName)
            let key = try wandKey(number: number, roiName: roiName, roi: roi)
            guard let suggestion = runtime.suggestions.waiting(for: key) else {
                throw HTTPError(
                    .conflict, message: "no suggestion is waiting for ROI \(roiName) of capture \(number): ask for one first")
            }
            let classes = try store.classes().count + 1
            let edit = try store.editMask(
                captureNumber: number, roi: roi, classes: classes, user: user, action: "suggestion",
                note: "model \(suggestion.modelVersion) at threshold \(suggestion.threshold)"
            ) { mask throws(StoreError) in
                mask = suggestion.mask
            }
            runtime.suggestions.take(key)
            return try LabelAPI.json(LabelAPI.LabelJSON(edit))
        }
        api.delete("captures/:number/rois/:roi/suggestion", .operator) { _, context in
            let (number, roiName) = try LabelAPI.target(context)
            guard runtime.suggestions.take(try wandKey(number: number, roiName: roiName)) != nil else {
                throw HTTPError(.notFound, message: "no suggestion is waiting for ROI \(roiName) of capture \(number)")
            }
            return Response(status: .noContent)
        }

        // Live mode.
        api.get("live", .viewer) { _, _ in try LabelAPI.json(pipeline.statistics) }
        api.put("live", .operator) { request, _ in
            let change = try await LabelAPI.decode(LiveChange.self, request, limit: 4096)
            let user = self.user(request)
            if let threshold = change.threshold {
                guard threshold.isFinite, (0...1).contains(threshold) else {
                    throw StoreError.invalid("threshold must be 0…1, not \(threshold)")
                }
                var recipe = try store.recipe()
                if recipe.confidenceThreshold != threshold {
                    recipe.confidenceThreshold = threshold
                    try store.saveRecipe(recipe, user: user)
                    try runtime.reload()
                }
            }
            if let live = change.live {
                if live { try pipeline.requireCamera() }
                pipeline.setLive(live)
            }
            return try LabelAPI.json(pipeline.statistics)
        }
        // One frame, one inspection, one result from a camera in software trigger mode (camera.trigger "software").
        api.post("live/trigger", .operator) { request, _ in
            let wait = request.uri.queryParameters.get("wait", as: Bool.self) ?? false
            let stamp = try pipeline.trigger()
            guard wait else { return try LabelAPI.json(stamp, status: .accepted) }
            guard let result = await pipeline.result(of: stamp, timeout: .seconds(10)) else {
                if let reason = pipeline.failure(of: stamp) { throw TriggerError.frameFailed(trigger: stamp.sequence, reason: reason) }
                throw HTTPError(
                    .gatewayTimeout, message: "trigger \(stamp.sequence) gave no result within 10 s (see sourceError in GET /api/v1/live)")
            }
            return try LabelAPI.json(result)
        }
        api.get("live/results", .viewer) { request, _ in
            let limit = min(LivePipeline.logCapacity, max(1, request.uri.queryParameters.get("limit", as: Int.self) ?? 50))
            return try LabelAPI.json(pipeline.results(limit: limit))
        }
        api.get("live/frame.jpg", .viewer) { request, _ in
            let width = min(4096, max(64, request.uri.queryParameters.get("width", as: Int.self) ?? 1280))
            guard let latest = pipeline.latest else { throw HTTPError(.notFound, message: "no frame has been inspected yet") }
            return LabelAPI.bytes(try LiveOverlay.jpeg(latest, colors: try colors(), maxWidth: width), type: "image/jpeg")
        }
        let sessions = runtime.store.sessionEvents
        api.get("live/stream.mjpeg", .viewer) { request, context in
            let width = min(4096, max(64, request.uri.queryParameters.get("width", as: Int.self) ?? 960))
            let fps = min(30, max(0.2, request.uri.queryParameters.get("fps", as: Double.self) ?? 10))
            let colors = try colors()
            let ticks = LiveAPI.untilEnded(pipeline.subscribe(keepingNewest: 1), session: context, sessions)
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
            LiveAPI.eventStream(LiveAPI.untilEnded(pipeline.subscribe(), session: context, sessions), name: "result")
        }

        // Training.
        api.post("training", .operator) { request, _ in
            let start = try await LabelAPI.decode(TrainingRequest.self, request, limit: 4096)
            let user = self.user(request)
            return try LabelAPI.json(try await training.start(start, user: user), status: .accepted)
        }
        api.get("training", .viewer) { _, _ in
            guard let status = training.status else {
                throw HTTPError(.notFound, message: "no training job has run since the agent started")
            }
            return try LabelAPI.json(status)
        }
        api.post("training/cancel", .operator) { _, _ in
            try await training.cancel(jobId: nil)
            return try LabelAPI.json(training.status)
        }
        api.get("training/events", .viewer) { _, context in
            LiveAPI.eventStream(LiveAPI.untilEnded(training.subscribe(), session: context, sessions), name: "progress")
        }

        // Models.
        api.get("model", .viewer) { _, _ in try LabelAPI.json(runtime.shelf.state) }
        // The running model's training report (TrainingReport): pictures of the figures its file carries.
        api.get("model/report", .viewer) { _, _ in
            guard let (model, installed) = runtime.runningModel else { throw StoreError.notFound("a running model") }
            let page = TrainingReport(title: "Model \(installed.version)", model: model).html(stylesheet: "report.css")
            return Response(
                status: .ok, headers: [.contentType: "text/html; charset=utf-8"], body: ResponseBody(byteBuffer: ByteBuffer(string: page)))
        }
        api.get("model/report.css", .viewer) { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/css; charset=utf-8", .cacheControl: "no-cache"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: TrainingReport.stylesheet)))
        }
        api.post("model/rollback", .operator) { _, _ in
            try runtime.rollback()
            return try LabelAPI.json(runtime.shelf.state)
        }
    }

    private func roiCrop(number: Int, roiName: String) throws -> Image8 {
        let store = runtime.store
        let roi = try store.recipe().roi(named: roiName)
        let image = try ImageFile.decode(try store.image(of: try store.capture(number: number))).gray8
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
    private func wandKey(number: Int, roiName: String, roi: RecipeROI? = nil) throws -> CaptureROI {
        _ = try runtime.store.capture(number: number)
        let roi = try roi ?? runtime.store.recipe().roi(named: roiName)
        return CaptureROI(capture: number, roi: roiName, rect: roi.rect)
    }

    /// The ROI's crop and its stored mask when that fits the ROI: what the wand's features are computed from.
    private func wandImage(number: Int, roiName: String) throws -> (Image8, Image8?) {
        let store = runtime.store
        let crop = try roiCrop(number: number, roiName: roiName)
        var mask: Image8?
        if let label = try store.label(captureNumber: number, roiName: roiName), label.roiWidth == crop.width,
            label.roiHeight == crop.height
        {
            mask = try store.mask(of: label)
        }
        return (crop, mask)
    }

    private func colors() throws -> [RGB] {
        let classes = try runtime.store.classes().sorted { $0.index < $1.index }
        var colors = [RGB(0, 0, 0)]
        for record in classes {
            let c = record.color
            colors.append(RGB(UInt8((c >> 16) & 0xFF), UInt8((c >> 8) & 0xFF), UInt8(c & 0xFF)))
        }
        return colors
    }

    /// A stream of JSON events (text/event-stream), for EventSource on the page.
    static func eventStream<Element: Encodable & Sendable>(_ events: AsyncStream<Element>, name: String) -> Response {
        Response(
            status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-store"],
            body: ResponseBody { writer in
                try await writer.write(ByteBuffer(string: ": loupe \(name) events\n\n"))
                for await event in events {
                    guard let data = try? LabelAPI.encoder.encode(event) else { continue }
                    try await writer.write(ByteBuffer(string: "event: \(name)\ndata: \(String(decoding: data, as: UTF8.self))\n\n"))
                }
                try await writer.finish(nil)
            })
    }

    /// The same values, ending when the agent shuts down (an open stream, the
    /// page's event source or the MJPEG view, must not hold up its shutdown)
    /// or when the request's session ends: signed out, its password changed,
    /// its user removed, or expired.
    static func untilEnded<Element: Sendable>(
        _ stream: AsyncStream<Element>, session context: AgentRequestContext,
        _ sessions: SessionEvents
    ) -> AsyncStream<Element> {
        let (out, continuation) = AsyncStream.makeStream(of: Element.self, bufferingPolicy: .bufferingNewest(4))
        let expiry = context.session?.expiresAt
        // Task {} inherits the request's task locals, among them the graceful-shutdown handler.
        let forward = Task {
            await cancelWhenGracefulShutdown {
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { for await value in stream { continuation.yield(value) } }
                    if let expiry {
                        group.addTask { try? await Task.sleep(for: .seconds(max(0, expiry.timeIntervalSinceNow))) }
                    }
                    await group.next()
                    group.cancelAll()
                }
            }
            continuation.finish()
        }
        let watch = context.sessionKey.map { key in sessions.watch(key: key, user: context.session?.user ?? "") { forward.cancel() } }
        continuation.onTermination = { _ in
            forward.cancel()
            if let watch { sessions.unwatch(watch) }
        }
        return out
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
        var label: LabelAPI.LabelJSON
    }

    struct LiveChange: Codable {
        var live: Bool?
        var threshold: Double?
    }
}
