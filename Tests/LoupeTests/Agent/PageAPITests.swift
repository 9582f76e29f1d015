import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import LoupeAgent
import LoupeImaging
import LoupeSegmentation
import NIOCore
import Testing

extension SegmentationTests {
    /// The routes the Label & Train page adds (the page's files, the raw
    /// camera frame, the alignment test, all labels, mask tools, the labelling
    /// check, undo/redo) over real HTTP with a real runtime on the synthetic
    /// camera; and their answers to bad input.
    @Suite struct PageAPITests {
        init() { DNNLRuntime.setThreads(1) }

        @Test func thePageAndItsRoutesWork() async throws {
            let dir = LabelStoreTests.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let runtime = try await LiveAPITests.runtime(dir)
            let live = LiveAPITests()
            try await LiveAPITests.application(runtime, page: true).test(.live) { client in
                // The page's files, with a content security policy.
                for (path, type) in [
                    ("/", "text/html"), ("/app.js", "text/javascript"), ("/editor.js", "text/javascript"),
                    ("/recipe.js", "text/javascript"), ("/app.css", "text/css"),
                ] {
                    try await client.execute(uri: path, method: .get) { response in
                        #expect(response.status == .ok, "\(path)")
                        #expect(response.headers[.contentType]?.hasPrefix(type) == true, "\(path): \(response.headers[.contentType] ?? "")")
                        #expect(response.headers[HTTPField.Name("Content-Security-Policy")!]?.contains("default-src 'self'") == true)
                        #expect(response.body.readableBytes > 500, "\(path) is empty")
                    }
                }
                // The raw camera frame once the camera delivers.
                #expect(try await eventually { runtime.pipeline.latestFrame != nil })
                try await client.execute(uri: "/api/v1/camera/frame.jpg?width=320", method: .get) { response in
                    #expect(response.status == .ok)
                    let image = try JPEGCodec.decode(Data(response.body.readableBytesView))
                    #expect(image.width == 320 && image.height == 256)
                }
                _ = try await live.expectStatus(client, "/api/v1/classes", .put, [["index": 1, "name": "scratch", "color": 0xFF0000]], .ok)
                _ = try await live.expectStatus(client, "/api/v1/captures", .post, nil, .created)
                // Alignment test: nothing to test before a template exists; a drafted template aligns without saving it.
                _ = try await live.expectStatus(client, "/api/v1/align/test", .post, [String: Any](), .badRequest)
                let draft: [String: Any] = [
                    "referenceCapture": 1, "template": ["x": 160, "y": 128, "width": 320, "height": 256], "angleRangeDegrees": 10,
                ]
                let aligned = try await live.expectStatus(client, "/api/v1/align/test", .post, draft, .ok)
                #expect((aligned["score"] as? Double ?? 0) > 0.5 && aligned["aligned"] as? Bool == true, "\(aligned)")
                #expect(try await runtime.store.recipe().template == nil, "the test does not save the draft")
                _ = try await live.expectStatus(
                    client, "/api/v1/align/test", .post, ["angleRangeDegrees": 500, "template": draft["template"]!, "referenceCapture": 1],
                    .badRequest)
                _ = try await live.expectStatus(
                    client, "/api/v1/align/test", .post, ["referenceCapture": 77, "template": draft["template"]!], .notFound)

                _ = try await live.expectStatus(
                    client, "/api/v1/recipe", .put,
                    [
                        "version": 0, "inspectionType": "part",
                        "rois": [
                            ["name": "a", "rect": ["x": 100, "y": 100, "width": 64, "height": 64]],
                            ["name": "b", "rect": ["x": 300, "y": 100, "width": 64, "height": 64]],
                        ],
                        "confidenceThreshold": 0.5, "failRule": ["minimumDefectPixels": 10], "angleRangeDegrees": 25, "minAlignScore": 0.4,
                    ], .ok)
                let saved = try await runtime.store.recipe()
                #expect(saved.angleRangeDegrees == 25 && saved.minAlignScore == 0.4)

                // Ticking an ROI nobody painted stores it as a defect-free example.
                let ticked = try await live.expectStatus(client, "/api/v1/captures/1/rois/b/include", .put, ["include": true], .ok)
                #expect(ticked["labelledPixels"] as? Int == 0 && ticked["includeInTraining"] as? Bool == true)

                // A ring with a hole and a 3 px speck; the check flags the speck (and the ring's thin wall).
                let ring: [String: Any] = [
                    "tool": "brush", "classIndex": 1, "radius": 8,
                    "points": (0...24).map { step -> [Double] in
                        let a = Double(step) * .pi / 12; return [32 + 18 * cos(a), 32 + 18 * sin(a)]
                    },
                ]
                let speck: [String: Any] = ["tool": "brush", "classIndex": 1, "radius": 1.5, "points": [[5, 58]]]
                let first = try await live.expectStatus(
                    client, "/api/v1/captures/1/rois/a/strokes", .post, ["strokes": [ring, speck]], .ok)
                let firstHash = try #require(first["maskSHA256"] as? String)
                let check = try await live.expectStatus(client, "/api/v1/captures/1/rois/a/mask/check", .get, nil, .ok)
                let thin = try #require(check["thin"] as? [[String: Any]])
                #expect(thin.contains { ($0["area"] as? Int ?? 0) < 20 }, "the speck is flagged: \(thin)")

                let filled = try await live.expectStatus(client, "/api/v1/captures/1/rois/a/mask/tool", .post, ["tool": "fill-holes"], .ok)
                #expect((filled["labelledPixels"] as? Int ?? 0) > (first["labelledPixels"] as? Int ?? 0))
                let cleaned = try await live.expectStatus(
                    client, "/api/v1/captures/1/rois/a/mask/tool", .post, ["tool": "remove-specks", "minimumArea": 30], .ok)
                #expect((cleaned["labelledPixels"] as? Int ?? 0) < (filled["labelledPixels"] as? Int ?? 0))
                let grown = try await live.expectStatus(
                    client, "/api/v1/captures/1/rois/a/mask/tool", .post, ["tool": "grow", "radius": 2], .ok)
                let shrunk = try await live.expectStatus(
                    client, "/api/v1/captures/1/rois/a/mask/tool", .post, ["tool": "shrink", "radius": 2], .ok)
                #expect((grown["labelledPixels"] as? Int ?? 0) > (cleaned["labelledPixels"] as? Int ?? 0))
                #expect((shrunk["labelledPixels"] as? Int ?? 0) < (grown["labelledPixels"] as? Int ?? 0))

                // Undo to the first version by its hash, and to empty.
                let undone = try await live.expectStatus(
                    client, "/api/v1/captures/1/rois/a/mask/revert", .put, ["maskSHA256": firstHash, "action": "undo"], .ok)
                #expect(undone["maskSHA256"] as? String == firstHash && undone["labelledPixels"] as? Int == first["labelledPixels"] as? Int)
                #expect(try await runtime.store.edits(limit: 1).first?.action == "undo")
                let emptied = try await live.expectStatus(
                    client, "/api/v1/captures/1/rois/a/mask/revert", .put, ["maskSHA256": NSNull(), "action": "undo"], .ok)
                #expect(emptied["labelledPixels"] as? Int == 0)

                // Every label, and only the ticked ones.
                let all = try await client.execute(uri: "/api/v1/labels", method: .get) {
                    try JSONSerialization.jsonObject(with: Data($0.body.readableBytesView)) as? [[String: Any]] ?? []
                }
                #expect(all.count == 2 && all.allSatisfy { $0["capture"] as? Int == 1 })
                let included = try await client.execute(uri: "/api/v1/labels?included=true", method: .get) {
                    try JSONSerialization.jsonObject(with: Data($0.body.readableBytesView)) as? [[String: Any]] ?? []
                }
                #expect(included.count == 1 && (included.first?["label"] as? [String: Any])?["roi"] as? String == "b")

                // Bad input: a named 4xx, nothing changed.
                let editsBefore = try await runtime.store.edits(limit: 1000).count
                let cases: [(String, HTTPRequest.Method, Any?, HTTPResponse.Status)] = [
                    ("/api/v1/captures/1/rois/a/mask/tool", .post, ["tool": "blur"], .badRequest),
                    ("/api/v1/captures/1/rois/a/mask/tool", .post, ["tool": "grow", "radius": 1000], .badRequest),
                    ("/api/v1/captures/1/rois/a/mask/tool", .post, ["tool": "remove-specks", "minimumArea": 0], .badRequest),
                    ("/api/v1/captures/1/rois/zz/mask/tool", .post, ["tool": "grow"], .notFound),
                    ("/api/v1/captures/9/rois/a/mask/tool", .post, ["tool": "grow"], .notFound),
                    ("/api/v1/captures/1/rois/a/mask/revert", .put, ["maskSHA256": "../../etc/passwd"], .badRequest),
                    ("/api/v1/captures/1/rois/a/mask/revert", .put, ["maskSHA256": String(repeating: "a", count: 64)], .notFound),
                    ("/api/v1/captures/1/rois/a/mask/revert", .put, ["maskSHA256": firstHash, "action": "drop table"], .badRequest),
                    ("/api/v1/captures/1/rois/zz/include", .put, ["include": true], .notFound),
                    (
                        "/api/v1/align/test", .post, ["template": ["x": 0, "y": 0, "width": 4, "height": 4], "referenceCapture": 1],
                        .badRequest
                    ),
                ]
                for (uri, method, body, status) in cases {
                    let answer = try await live.expectStatus(client, uri, method, body, status)
                    #expect(!answer.isEmpty, "\(uri) gave no reason")
                }
                #expect(try await runtime.store.edits(limit: 1000).count == editsBefore)
            }
        }
    }
}
