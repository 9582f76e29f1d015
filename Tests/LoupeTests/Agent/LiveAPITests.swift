import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import LoupeAgent
import LoupeImaging
import LoupeSegmentation
import LoupeWire
import NIOCore
import Testing

extension SegmentationTests {
    /// The camera half of the agent API over real HTTP, with a real runtime:
    /// the synthetic camera, the live pipeline, local training and the model shelf.
    @Suite struct LiveAPITests {
        init() { DNNLRuntime.setThreads(1) }

        static func runtime(_ dir: String) async throws -> AgentRuntime {
            var config = AgentConfig(
                cameraId: "cam-live", manager: nil, tls: TLSFiles(ca: "", cert: "", key: ""), dataDir: dir,
                camera: .init(
                    source: .synthetic, width: 640, height: 512, framesPerSecond: 5, seed: 5, inferenceThreads: 1, precision: "fp32"))
            // Every other pass kept as a sample, so the Library fills within the test whatever the model says.
            var library = LibraryPolicy()
            library.passSampleEvery = 2
            config.library = library
            return try await AgentRuntime(config: config, logger: Logger(label: "test"))
        }

        /// The agent's routes (and the page's files, with `page`) on a real server.
        static func application(_ runtime: AgentRuntime, page: Bool = false) -> some ApplicationProtocol {
            // Without the access middleware: AccessTests and SecurityMatrixTests cover access.
            let router = AgentRouter(context: AgentRequestContext.self)
            router.add(middleware: SecurityHeadersMiddleware(secure: false))
            let routes = AgentRoutes(router: router)
            AgentHTTP.registerAPI(runtime: runtime, training: TrainingJobs(runtime: runtime, logger: Logger(label: "test")), on: routes)
            if page { PageAPI().register(on: routes) }
            return Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)), services: [runtime.pipeline])
        }

        typealias Client = any TestClientProtocol

        func expectStatus(
            _ client: Client, _ uri: String, _ method: HTTPRequest.Method, _ body: Any? = nil, _ status: HTTPResponse.Status,
            sourceLocation: SourceLocation = #_sourceLocation
        ) async throws -> [String: Any] {
            let buffer = try body.map { try LabelAPITests.json($0) }
            return try await client.execute(uri: uri, method: method, body: buffer) { response async throws -> [String: Any] in
                let text = String(buffer: response.body)
                #expect(response.status == status, "\(method) \(uri): \(text)", sourceLocation: sourceLocation)
                return (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? [:]
            }
        }

        @Test func everyRouteThatNeedsACameraSaysSoTheSameWayOnAnAgentWithout() async throws {
            let dir = LabelStoreTests.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let config = AgentConfig(cameraId: "cam-none", manager: nil, tls: TLSFiles(ca: "", cert: "", key: ""), dataDir: dir)
            let runtime = try await AgentRuntime(config: config, logger: Logger(label: "test"))
            try await Self.application(runtime, page: true).test(.live) { client in
                for (uri, method, body) in [
                    ("/api/v1/live", HTTPRequest.Method.put, ["live": true] as Any?), ("/api/v1/captures", .post, nil),
                    ("/api/v1/camera/frame.jpg", .get, nil),
                ] {
                    let answer = try await client.execute(uri: uri, method: method, body: try body.map { try LabelAPITests.json($0) }) {
                        response in
                        (response.status, String(buffer: response.body))
                    }
                    #expect(answer.0 == .conflict && answer.1.contains("no camera configured"), "\(method) \(uri): \(answer)")
                }
                // Turning live off needs no camera; the label routes work as ever.
                _ = try await expectStatus(client, "/api/v1/live", .put, ["live": false], .ok)
                _ = try await expectStatus(client, "/api/v1/captures", .get, nil, .ok)
            }
        }

        @Test func anOperatorCapturesLabelsWithTheWandTrainsAndWatchesLive() async throws {
            let dir = LabelStoreTests.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let runtime = try await Self.runtime(dir)
            try await Self.application(runtime).test(.live) { client in
                _ = try await expectStatus(client, "/api/v1/classes", .put, [["index": 1, "name": "scratch", "color": 0xFF0000]], .ok)
                // No ROIs are ticked yet: training is refused with the reason.
                _ = try await expectStatus(client, "/api/v1/training", .post, ["iterations": 2], .badRequest)
                // Capture the reference from the camera, then set the template and ROIs on it.
                let ready = try await eventually { runtime.pipeline.latestFrame != nil }
                #expect(ready)
                let reference = try await expectStatus(client, "/api/v1/captures", .post, nil, .created)
                #expect(reference["number"] as? Int == 1 && (reference["source"] as? String ?? "").hasPrefix("camera:synthetic"))
                _ = try await expectStatus(
                    client, "/api/v1/recipe", .put,
                    [
                        "version": 0, "inspectionType": "part", "referenceCapture": 1,
                        "template": ["x": 160, "y": 128, "width": 320, "height": 256],
                        "rois": [["name": "left", "rect": ["x": 140, "y": 160, "width": 64, "height": 64]]],
                        "confidenceThreshold": 0.5, "failRule": ["minimumDefectPixels": 25],
                    ], .ok)
                // A trigger mode needs a GenICam camera: this synthetic one is refused, naming why.
                _ = try await expectStatus(
                    client, "/api/v1/recipe", .put,
                    [
                        "version": 0, "inspectionType": "part", "rois": [], "confidenceThreshold": 0.5,
                        "failRule": ["minimumDefectPixels": 25], "trigger": "software",
                    ], .badRequest)
                #expect(try await runtime.store.recipe().trigger == nil)
                // Later camera captures are stored aligned to the reference.
                let aligned = try await expectStatus(client, "/api/v1/captures", .post, nil, .created)
                #expect((aligned["source"] as? String ?? "").hasSuffix("aligned"))
                try await client.execute(uri: "/api/v1/captures/2/rois/left/image", method: .get) { response in
                    #expect(response.status == .ok && response.headers[.contentType] == "image/png")
                    let crop = try PNGCodec.decode(Data(response.body.readableBytesView))
                    #expect(crop.width == 64 && crop.height == 64)
                }
                // Imported images with a dark pit in the ROI: the wand from one click on it, then the checkbox.
                var labelled = 0
                var random = SeededGenerator(seed: 8)
                for index in 0..<3 {
                    var image = try Image8(width: 640, height: 512)
                    for i in image.samples.indices { image.samples[i] = UInt8(175 + random.below(10)) }
                    let (cx, cy) = (172 + index * 3, 192 - index * 2)
                    for y in (cy - 9)...(cy + 9) {
                        for x in (cx - 9)...(cx + 9) where (x - cx) * (x - cx) + (y - cy) * (y - cy) <= 64 {
                            image[x, y] = UInt8(60 + random.below(10))
                        }
                    }
                    let number = try await client.execute(
                        uri: "/api/v1/captures/import", method: .post, headers: [LabelAPITests.filename: "pit-\(index).png"],
                        body: ByteBuffer(bytes: try PNGCodec.encode(image))
                    ) { response in
                        #expect(response.status == .created)
                        return try LabelAPITests.object(response.body)["number"] as? Int ?? 0
                    }
                    let wand = try await expectStatus(
                        client, "/api/v1/captures/\(number)/rois/left/wand", .post,
                        ["x": 32 + index * 3, "y": 32 - index * 2, "classIndex": 1, "tolerance": 0.5], .ok)
                    let selected = wand["selectedPixels"] as? Int ?? 0
                    #expect(selected > 150 && selected < 260, "the pit has about 200 px; the wand selected \(selected)")
                    let label = try #require(wand["label"] as? [String: Any])
                    #expect((label["labelledPixels"] as? Int ?? 0) == selected)
                    _ = try await expectStatus(client, "/api/v1/captures/\(number)/rois/left/include", .put, ["include": true], .ok)
                    labelled += 1
                }
                // Each pit left behind teaches the wand of the next (the last is still being worked on).
                #expect(runtime.wand.rememberedImages == 2)
                // Features prepared ahead of the first click, as the page asks when it opens a capture.
                _ = try await expectStatus(client, "/api/v1/captures/1/rois/left/wand/prepare", .post, nil, .accepted)
                var prepared = false
                for _ in 0..<100 where !prepared {
                    prepared =
                        try await expectStatus(client, "/api/v1/captures/1/rois/left/wand/prepare", .post, nil, .accepted)["ready"] as? Bool
                        ?? false
                    if !prepared { try await Task.sleep(for: .milliseconds(20)) }
                }
                #expect(prepared, "the features of capture 1's ROI were never ready")
                _ = try await expectStatus(client, "/api/v1/captures/99/rois/left/wand/prepare", .post, nil, .notFound)
                // Bad wand clicks and live settings change nothing.
                _ = try await expectStatus(
                    client, "/api/v1/captures/2/rois/left/wand", .post, ["x": 3, "y": 3, "classIndex": 1, "mode": "erase"], .badRequest)
                _ = try await expectStatus(
                    client, "/api/v1/captures/2/rois/left/wand", .post, ["x": 3, "y": 3, "classIndex": 1, "tolerance": -0.1], .badRequest)
                _ = try await expectStatus(
                    client, "/api/v1/captures/2/rois/left/wand", .post, ["x": 64, "y": 3, "classIndex": 1], .badRequest)
                _ = try await expectStatus(
                    client, "/api/v1/captures/2/rois/left/wand", .post, ["x": 3, "y": 3, "classIndex": 2], .badRequest)
                _ = try await expectStatus(
                    client, "/api/v1/captures/2/rois/left/wand", .post, ["x": "3", "y": 3, "classIndex": 1], .badRequest)
                _ = try await expectStatus(
                    client, "/api/v1/captures/99/rois/left/wand", .post, ["x": 3, "y": 3, "classIndex": 1], .notFound)
                _ = try await expectStatus(client, "/api/v1/captures/2/rois/..%2Fetc/image", .get, nil, .badRequest)
                _ = try await expectStatus(client, "/api/v1/live", .put, ["threshold": 2], .badRequest)
                _ = try await expectStatus(client, "/api/v1/training", .post, ["iterations": 0], .badRequest)
                _ = try await expectStatus(client, "/api/v1/model/rollback", .post, nil, .conflict)
                _ = try await expectStatus(client, "/api/v1/model/report", .get, nil, .notFound)
                #expect(try await runtime.store.recipe().version == 1)

                // Live before any model: ROIs are cut but not judged.
                let unjudged = try await eventually { runtime.pipeline.results(limit: 1).first?.verdict == .noModel }
                #expect(unjudged)
                // No model, nothing to suggest.
                _ = try await expectStatus(client, "/api/v1/captures/2/rois/left/suggestion", .post, nil, .conflict)

                // Train on the camera; a second start while it runs is refused; cancelling keeps the (absent) model.
                let long = try await expectStatus(client, "/api/v1/training", .post, ["iterations": 5000, "seed": 7], .accepted)
                #expect(
                    long["state"] as? String == "running" && long["location"] as? String == "local"
                        && long["trainingImages"] as? Int == labelled)
                _ = try await expectStatus(client, "/api/v1/training", .post, ["iterations": 2], .conflict)
                _ = try await expectStatus(client, "/api/v1/training/cancel", .post, nil, .ok)
                let cancelled = try await eventually(timeout: .seconds(60)) {
                    try await expectStatus(client, "/api/v1/training", .get, nil, .ok)["state"] as? String == "cancelled"
                }
                #expect(cancelled)
                #expect(runtime.shelf.state.current == nil)
                _ = try await expectStatus(client, "/api/v1/training/cancel", .post, nil, .notFound)
                _ = try await expectStatus(client, "/api/v1/training", .post, ["iterations": 2, "seed": 7], .accepted)
                let finished = try await eventually(timeout: .seconds(120)) {
                    runtime.pipeline.currentInspector.modelVersion.hasPrefix("local-")
                }
                #expect(finished)
                // The job's state follows the model's install by a moment.
                var status: [String: Any] = [:]
                _ = try await eventually(timeout: .seconds(10)) {
                    status = try await expectStatus(client, "/api/v1/training", .get, nil, .ok)
                    return status["state"] as? String == "succeeded"
                }
                #expect(status["state"] as? String == "succeeded", "\(status)")
                let version = try #require(status["modelVersion"] as? String)
                let model = try await expectStatus(client, "/api/v1/model", .get, nil, .ok)
                #expect((model["current"] as? [String: Any])?["version"] as? String == version)
                #expect((model["current"] as? [String: Any])?["origin"] as? String == "local-training")

                // Live results now carry the model, and are judged.
                let judged = try await eventually(timeout: .seconds(30)) {
                    guard let newest = runtime.pipeline.results(limit: 1).first else { return false }
                    return newest.modelVersion == version
                        && (newest.verdict == .pass || newest.verdict == .fail || newest.verdict == .notAligned)
                }
                #expect(judged)
                let live = try await expectStatus(client, "/api/v1/live", .get, nil, .ok)
                #expect(live["modelVersion"] as? String == version && (live["framesInspected"] as? Int ?? 0) > 0)
                // The slider's mark: the running model's calibrated threshold, when it had a validation split to calibrate on.
                let calibrated = try #require(runtime.pipeline.currentInspector.segmenter?.model.metadata.calibratedThreshold)
                if calibrated > 0 {
                    #expect(abs((live["calibratedThreshold"] as? Double ?? -1) - Double(calibrated)) < 1e-6, "\(live)")
                } else {
                    #expect(live["calibratedThreshold"] == nil, "no validation split, no mark: \(live)")
                }
                // The running model's report: a page of pictures, its stylesheet beside it, no script.
                try await client.execute(uri: "/api/v1/model/report", method: .get) { response in
                    let page = String(buffer: response.body)
                    #expect(response.status == .ok && response.headers[.contentType] == "text/html; charset=utf-8")
                    #expect(
                        page.contains("<title>Model \(version)</title>") && page.contains("<svg") && !page.contains("<script"),
                        "\(page.prefix(300))")
                }
                try await client.execute(uri: "/api/v1/model/report.css", method: .get) { response in
                    #expect(response.status == .ok && String(buffer: response.body) == TrainingReport.stylesheet)
                }
                // The threshold slider saves a new recipe version; the pipeline picks it up.
                let changed = try await expectStatus(client, "/api/v1/live", .put, ["threshold": 0.9], .ok)
                #expect(changed["threshold"] as? Double == 0.9 && changed["recipeVersion"] as? Int == 2)
                try await client.execute(uri: "/api/v1/live/results?limit=3", method: .get) { response in
                    let results = try #require(
                        try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [[String: Any]])
                    #expect(!results.isEmpty && results.count <= 3)
                }
                // The camera's Library keeps inspected frames worth a look; one comes into labelling.
                var listed: [String: Any] = [:]
                let kept = try await eventually(timeout: .seconds(30)) {
                    listed = try await expectStatus(client, "/api/v1/library?limit=5", .get, nil, .ok)
                    return !((listed["frames"] as? [[String: Any]]) ?? []).isEmpty
                }
                #expect(kept, "the Library kept no frame: \(listed)")
                let first = try #require((listed["frames"] as? [[String: Any]])?.first)
                let frameID = try #require(first["id"] as? Int)
                #expect(
                    ["fail", "unsure", "sample"].contains(first["reason"] as? String ?? "") && first["modelVersion"] as? String == version)
                let libraryImage = try await client.execute(uri: "/api/v1/library/\(frameID)/image", method: .get) { response in
                    #expect(response.status == .ok && response.headers[.contentType] == "image/jpeg")
                    return Data(response.body.readableBytesView)
                }
                #expect(try JPEGCodec.decode(libraryImage).width == 640)
                let fromLibrary = try await expectStatus(client, "/api/v1/library/\(frameID)/import", .post, nil, .created)
                #expect((fromLibrary["source"] as? String ?? "").hasPrefix("library:\(frameID)#"), "\(fromLibrary)")
                let imported = try await expectStatus(client, "/api/v1/library?limit=1000", .get, nil, .ok)
                let marked = (imported["frames"] as? [[String: Any]] ?? []).first { $0["id"] as? Int == frameID }
                #expect(marked?["importedAs"] as? Int == fromLibrary["number"] as? Int)
                _ = try await expectStatus(client, "/api/v1/library?verdict=maybe", .get, nil, .badRequest)
                _ = try await expectStatus(client, "/api/v1/library?since=yesterday", .get, nil, .badRequest)
                _ = try await expectStatus(client, "/api/v1/library?class=..%2Fx", .get, nil, .badRequest)
                _ = try await expectStatus(client, "/api/v1/library?limit=0", .get, nil, .badRequest)
                _ = try await expectStatus(client, "/api/v1/library/abc/image", .get, nil, .badRequest)
                _ = try await expectStatus(client, "/api/v1/library/999999/import", .post, nil, .notFound)
                _ = try await expectStatus(client, "/api/v1/library?review=true&reason=unsure", .get, nil, .ok)

                // Suggested labels: a proposal, stored only when accepted, and logged as a suggestion.
                #expect(try await runtime.store.label(captureNumber: 2, roiName: "left") == nil)
                let suggestion = try await expectStatus(client, "/api/v1/captures/2/rois/left/suggestion", .post, nil, .ok)
                #expect(suggestion["modelVersion"] as? String == version && suggestion["threshold"] as? Double == 0.9)
                let proposal = try PNGCodec.decode(try #require(Data(base64Encoded: suggestion["maskPNG"] as? String ?? "")))
                #expect(proposal.width == 64 && proposal.height == 64)
                #expect(
                    try await runtime.store.label(captureNumber: 2, roiName: "left") == nil, "a suggestion is not stored until accepted")
                let accepted = try await expectStatus(client, "/api/v1/captures/2/rois/left/suggestion/accept", .post, nil, .ok)
                #expect(accepted["labelledPixels"] as? Int == suggestion["labelledPixels"] as? Int)
                let stored = try #require(try await runtime.store.label(captureNumber: 2, roiName: "left"))
                #expect(try await runtime.store.mask(of: stored).samples == proposal.gray8.samples)
                let logged = try #require(try await runtime.store.edits(limit: 1).first)
                #expect(logged.action == "suggestion" && logged.detail.contains("model \(version)"), "\(logged)")
                _ = try await expectStatus(client, "/api/v1/captures/2/rois/left/suggestion/accept", .post, nil, .conflict)
                // Rejected: nothing changes.
                _ = try await expectStatus(client, "/api/v1/captures/2/rois/left/suggestion", .post, nil, .ok)
                try await client.execute(uri: "/api/v1/captures/2/rois/left/suggestion", method: .delete) {
                    #expect($0.status == .noContent)
                }
                try await client.execute(uri: "/api/v1/captures/2/rois/left/suggestion", method: .delete) {
                    #expect($0.status == .notFound)
                }
                _ = try await expectStatus(client, "/api/v1/captures/2/rois/left/suggestion/accept", .post, nil, .conflict)
                #expect(try await runtime.store.label(captureNumber: 2, roiName: "left")?.maskHash == stored.maskHash)
                _ = try await expectStatus(client, "/api/v1/captures/99/rois/left/suggestion", .post, nil, .notFound)
                // The overlay as an MJPEG stream (for an <img>), and the results as server-sent events.
                let port = try #require(client.port)
                let mjpeg = try await RawHTTP.collect(
                    port: port, request: "GET /api/v1/live/stream.mjpeg?fps=5&width=320 HTTP/1.1\r\nHost: localhost\r\n\r\n"
                ) { bytes in
                    RawHTTP.find(Array("--loupeframe".utf8), in: bytes).map {
                        RawHTTP.find(Array("--loupeframe".utf8), in: bytes, from: $0 + 1) != nil
                    } ?? false
                }
                let head = String(decoding: mjpeg.prefix(400), as: UTF8.self)
                #expect(head.hasPrefix("HTTP/1.1 200") && head.contains("multipart/x-mixed-replace; boundary=loupeframe"), "\(head)")
                let start = try #require(RawHTTP.find([0xFF, 0xD8, 0xFF], in: mjpeg), "no JPEG in the stream")
                let end = try #require(RawHTTP.find(Array("\r\n--loupeframe".utf8), in: mjpeg, from: start))
                let part = try JPEGCodec.decode(Data(mjpeg[start..<end]))
                #expect(part.width == 320 && part.height == 256)
                let events = try await RawHTTP.collect(port: port, request: "GET /api/v1/live/events HTTP/1.1\r\nHost: localhost\r\n\r\n") {
                    bytes in
                    // One whole event (the body is chunked, so look for the event's own blank line).
                    String(decoding: bytes, as: UTF8.self).components(separatedBy: "event: result\ndata: ").dropFirst().first?.contains(
                        "\n\n") ?? false
                }
                let text = String(decoding: events, as: UTF8.self)
                #expect(text.contains("text/event-stream"), "\(text)")
                let data = try #require(
                    text.components(separatedBy: "event: result\ndata: ").dropFirst().first?.components(separatedBy: "\n").first)
                let event = try #require(try JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any])
                #expect(event["modelVersion"] as? String == version && event["verdict"] != nil)
                try await client.execute(uri: "/api/v1/live/frame.jpg?width=320", method: .get) { response in
                    #expect(response.status == .ok && response.headers[.contentType] == "image/jpeg")
                    let frame = try JPEGCodec.decode(Data(response.body.readableBytesView))
                    #expect(frame.width == 320 && frame.height == 256)
                }
            }
        }
    }
}
