import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import LoupeAgent
import LoupeImaging
import NIOCore
import Testing

/// The label API over real HTTP on loopback (Hummingbird's live test server).
@Suite struct LabelAPITests {
    static let filename = HTTPField.Name("X-Loupe-Filename")!

    static func application(_ store: LabelStore, maximumBody: Int = 32 << 20) -> some ApplicationProtocol {
        // The routes a label store alone serves (no camera, no model), without the access middleware (AccessTests and
        // SecurityMatrixTests cover that).
        let router = AgentRouter(context: AgentRequestContext.self)
        router.add(middleware: SecurityHeadersMiddleware(secure: false))
        let routes = AgentRoutes(router: router)
        AgentAPI.registerHealth(on: routes)
        var captures = CaptureAPI(store: store), rois = ROIAPI(store: store)
        captures.maximumBody = maximumBody
        rois.maximumBody = maximumBody
        captures.register(on: routes)
        rois.register(on: routes)
        RecipeAPI(store: store).register(on: routes)
        LabelAPI(store: store).register(on: routes)
        return Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
    }

    static func json(_ object: Any) throws -> ByteBuffer {
        ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: object))
    }

    static func object(_ buffer: ByteBuffer) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(buffer.readableBytesView)) as? [String: Any])
    }

    @Test func anOperatorImportsLabelsAndTicksAnROI() async throws {
        let dir = LabelStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try LabelStore(directory: dir)
        let png = try LabelStoreTests.png(80, size: 64)
        try await Self.application(store).test(.live) { client in
            try await client.execute(uri: "/api/v1/health", method: .get) { #expect($0.status == .ok) }
            try await client.execute(
                uri: "/api/v1/classes", method: .put,
                body: try Self.json([["index": 1, "name": "scratch", "color": 0xFF0000], ["index": 2, "name": "dent", "color": 0x00FF00]])
            ) {
                #expect($0.status == .ok)
            }
            try await client.execute(
                uri: "/api/v1/recipe", method: .put,
                body: try Self.json([
                    "version": 0, "inspectionType": "brake-disc",
                    "rois": [["name": "hub", "rect": ["x": 8, "y": 8, "width": 32, "height": 32]]],
                    "confidenceThreshold": 0.6, "failRule": ["minimumDefectPixels": 20],
                ])
            ) { response async throws in
                #expect(response.status == .ok)
                #expect(try Self.object(response.body)["version"] as? Int == 1)
            }
            try await client.execute(
                uri: "/api/v1/captures/import", method: .post, headers: [Self.filename: "part-1.png"], body: ByteBuffer(bytes: png)
            ) { response async throws in
                #expect(response.status == .created)
                let capture = try Self.object(response.body)
                #expect(
                    capture["number"] as? Int == 1 && capture["width"] as? Int == 64 && capture["inspectionType"] as? String == "brake-disc"
                )
            }
            try await client.execute(uri: "/api/v1/captures/1/image", method: .get) { response async throws in
                #expect(response.status == .ok && Data(response.body.readableBytesView) == png)
                #expect(response.headers[.contentType] == "image/png")
            }
            // A brush stroke, then the checkbox.
            try await client.execute(
                uri: "/api/v1/captures/1/rois/hub/strokes", method: .post,
                body: try Self.json([
                    "strokes": [["tool": "brush", "classIndex": 2, "radius": 3, "points": [[5, 5], [20, 5]]]]
                ])
            ) { response async throws in
                #expect(response.status == .ok)
                #expect((try Self.object(response.body)["labelledPixels"] as? Int ?? 0) > 60)
            }
            try await client.execute(uri: "/api/v1/captures/1/rois/hub/include", method: .put, body: try Self.json(["include": true])) {
                response async throws in
                #expect(response.status == .ok)
                #expect(try Self.object(response.body)["includeInTraining"] as? Bool == true)
            }
            try await client.execute(uri: "/api/v1/captures/1/rois/hub/mask", method: .get) { response async throws in
                #expect(response.status == .ok)
                let mask = try PNGCodec.decode(Data(response.body.readableBytesView)).gray8
                #expect(mask.width == 32 && mask.samples.contains(2))
            }
            // A whole mask replaces the strokes.
            var mask = try Image8(width: 32, height: 32)
            mask.samples[0] = 1
            try await client.execute(
                uri: "/api/v1/captures/1/rois/hub/mask", method: .put, body: ByteBuffer(bytes: try PNGCodec.encode(mask))
            ) { response async throws in
                #expect(response.status == .ok)
                #expect(try Self.object(response.body)["labelledPixels"] as? Int == 1)
            }
            try await client.execute(uri: "/api/v1/captures", method: .get) { response async throws in
                let list = try Self.object(response.body)
                #expect(list["total"] as? Int == 1)
            }
            try await client.execute(uri: "/api/v1/captures/1", method: .get) { response async throws in
                let detail = try Self.object(response.body)
                let labels = try #require(detail["labels"] as? [[String: Any]])
                #expect(labels.count == 1 && labels[0]["roi"] as? String == "hub")
            }
            try await client.execute(uri: "/api/v1/edits?limit=3", method: .get) { response async throws in
                let edits = try #require(try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [[String: Any]])
                #expect(edits.count == 3 && edits[0]["action"] as? String == "mask")
            }
        }
        #expect(try await store.outboxDepth() == 1)
    }

    /// Two editors paint one ROI at once, each over its own connections: every stroke of both is in the
    /// stored mask (each edit reads, paints and writes inside one SQLite write), and each answer carries
    /// the mask it stored and its labelling check, so the page needs no second request.
    @Test func twoEditorsOfOneROIAtOnceLoseNothing() async throws {
        let dir = LabelStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try LabelStore(directory: dir)
        try await Self.application(store).test(.live) { client in
            try await client.execute(
                uri: "/api/v1/classes", method: .put, body: try Self.json([["index": 1, "name": "scratch", "color": 0xFF0000]])
            ) {
                #expect($0.status == .ok)
            }
            try await client.execute(
                uri: "/api/v1/recipe", method: .put,
                body: try Self.json([
                    "version": 0, "inspectionType": "disc",
                    "rois": [["name": "hub", "rect": ["x": 0, "y": 0, "width": 64, "height": 64]]],
                    "confidenceThreshold": 0.5, "failRule": ["minimumDefectPixels": 1],
                ])
            ) { #expect($0.status == .ok) }
            try await client.execute(
                uri: "/api/v1/captures/import", method: .post, headers: [Self.filename: "part.png"],
                body: ByteBuffer(bytes: try LabelStoreTests.png(90, size: 64))
            ) { #expect($0.status == .created) }
            let port = try #require(client.port)
            // Editor 0 dabs down column 8, editor 1 down column 40: 2 x 24 dabs, all at once.
            let dabs = (0..<2).flatMap { editor in (0..<24).map { (editor, 8 + 32 * editor, 2 + 2 * $0) } }
            let answers = try await withThrowingTaskGroup(of: PlainHTTP.Response.self) { group in
                for (_, x, y) in dabs {
                    group.addTask {
                        let stroke = try Self.json(["strokes": [["tool": "brush", "classIndex": 1, "radius": 1, "points": [[x, y]]]]])
                        return try await PlainHTTP.send(
                            port: port, method: "POST", target: "/api/v1/captures/1/rois/hub/strokes",
                            headers: ["Content-Type": "application/json"], body: Data(stroke.readableBytesView))
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(answers.allSatisfy { $0.status == 200 }, "\(answers.filter { $0.status != 200 })")
            let label = try #require(try await store.label(captureNumber: 1, roiName: "hub"))
            let mask = try await store.mask(of: label)
            let lost = dabs.filter { mask[$0.1, $0.2] != 1 }
            #expect(lost.isEmpty, "strokes lost: \(lost.count) of \(dabs.count)")
            #expect(try await store.edits(limit: 100).filter { $0.action == "strokes" }.count == dabs.count)
            // The last answer to arrive names the stored mask, carries its PNG and its check.
            let last = try #require(
                try answers.map { try JSONSerialization.jsonObject(with: $0.body) as? [String: Any] ?? [:] }
                    .first { $0["maskSHA256"] as? String == label.maskHash })
            let png = try #require((last["maskPNG"] as? String).flatMap { Data(base64Encoded: $0) })
            #expect(try PNGCodec.decode(png).gray8 == mask)
            let check = try #require(last["check"] as? [String: Any])
            #expect(
                check["minimumRadius"] as? Double == 6 && (check["thin"] as? [Any])?.isEmpty == false, "radius-1 dabs are thin: \(check)")
        }
    }

    @Test func badRequestsGetANamed4xxAndChangeNothing() async throws {
        let dir = LabelStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try LabelStore(directory: dir)
        try await store.setClasses([ClassRecord(index: 1, name: "scratch", color: 0xFF0000)], user: "setup")
        try await store.saveRecipe(
            Recipe(rois: [RecipeROI(name: "hub", rect: PixelRect(x: 0, y: 0, width: 16, height: 16))]), user: "setup")
        _ = try await store.addCapture(
            LabelStore.EncodedImage(bytes: try LabelStoreTests.png(1), width: 16, height: 16, channels: 1), source: "camera",
            inspectionType: "t",
            recipeVersion: 1, user: "setup")
        let editsBefore = try await store.edits(limit: 1000).count
        let recipeBefore = try await store.recipe()

        let huge = ByteBuffer(repeating: 0x89, count: 5000)
        let cases: [(String, HTTPRequest.Method, HTTPFields, ByteBuffer?, HTTPResponse.Status)] = [
            ("/api/v1/captures/abc", .get, [:], nil, .badRequest),
            ("/api/v1/captures/-3", .get, [:], nil, .badRequest),
            ("/api/v1/captures/99", .get, [:], nil, .notFound),
            ("/api/v1/captures/99/image", .get, [:], nil, .notFound),
            ("/api/v1/captures/import", .post, [Self.filename: "a.png"], ByteBuffer(string: "GIF89a not an image"), .unsupportedMediaType),
            ("/api/v1/captures/import", .post, [Self.filename: "a.png"], huge, .contentTooLarge),
            (
                "/api/v1/captures/import", .post, [Self.filename: "../../etc/passwd"], ByteBuffer(bytes: try LabelStoreTests.png(3)),
                .badRequest
            ),
            ("/api/v1/captures/import", .post, [:], nil, .badRequest),
            ("/api/v1/recipe", .put, [:], try Self.json(["version": "one", "rois": 5]), .badRequest),
            (
                "/api/v1/recipe", .put, [:],
                try Self.json([
                    "version": 0, "inspectionType": "x", "rois": [], "confidenceThreshold": 7, "failRule": ["minimumDefectPixels": 1],
                ]), .badRequest
            ),
            ("/api/v1/classes", .put, [:], try Self.json([["index": 5, "name": "x", "color": 0]]), .badRequest),
            (
                "/api/v1/captures/1/rois/nope/strokes", .post, [:],
                try Self.json(["strokes": [["tool": "brush", "classIndex": 1, "radius": 2, "points": [[1, 1]]]]]), .notFound
            ),
            ("/api/v1/captures/1/rois/..%2F..%2Fetc/strokes", .post, [:], try Self.json(["strokes": []]), .badRequest),
            (
                "/api/v1/captures/1/rois/hub/strokes", .post, [:],
                try Self.json(["strokes": [["tool": "spray", "classIndex": 1, "radius": 2, "points": [[1, 1]]]]]), .badRequest
            ),
            (
                "/api/v1/captures/1/rois/hub/strokes", .post, [:],
                try Self.json(["strokes": [["tool": "brush", "classIndex": 9, "radius": 2, "points": [[1, 1]]]]]), .badRequest
            ),
            (
                "/api/v1/captures/1/rois/hub/mask", .put, [:], ByteBuffer(bytes: try PNGCodec.encode(try Image8(width: 8, height: 8))),
                .badRequest
            ),
            ("/api/v1/captures/1/rois/hub/mask", .put, [:], ByteBuffer(string: "not a png"), .unsupportedMediaType),
            ("/api/v1/captures/1/rois/hub/mask", .get, [:], nil, .notFound),
            ("/api/v1/captures/1/rois/hub/include", .put, [:], try Self.json(["include": "yes"]), .badRequest),
            ("/api/v1/captures/99/rois/hub/include", .put, [:], try Self.json(["include": true]), .notFound),
            ("/api/v1/captures/1/rois/nope/include", .put, [:], try Self.json(["include": true]), .notFound),
        ]
        try await Self.application(store, maximumBody: 4096).test(.live) { client in
            for (uri, method, headers, body, expected) in cases {
                try await client.execute(uri: uri, method: method, headers: headers, body: body) { response async throws in
                    let text = String(buffer: response.body)
                    #expect(response.status == expected, "\(method) \(uri): \(response.status) \(text)")
                    #expect(!text.isEmpty, "\(method) \(uri) gave no reason")
                }
            }
        }
        #expect(try await store.captureCount() == 1)
        #expect(try await store.recipe() == recipeBefore)
        #expect(try await store.labels().isEmpty)
        #expect(try await store.edits(limit: 1000).count == editsBefore)
    }
}
