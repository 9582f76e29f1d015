import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import LoupeAgent
import LoupeCapture
import LoupeProto
import LoupeSegmentation
import LoupeStorage
import LoupeWire
import NIOCore
import Testing

/// An error carries its own HTTP status: a route that just throws it, wrapping nothing, answers with that status,
/// the error's words and the security headers; an error nobody classified is a 500 that says nothing of its insides.
@Suite struct HTTPErrorTests {
    private struct Unclassified: Error, CustomStringConvertible {
        var description: String { "secret internal detail" }
    }

    static let cases: [(path: String, error: any Error, status: Int, says: String?)] = [
        ("invalid", StoreError.invalid("the name is empty"), 400, "the name is empty"),
        ("missing", StoreError.notFound("capture 7"), 404, "not found: capture 7"),
        ("full", StoreError.diskFull(path: "/data/labels.sqlite"), 507, "disk full while writing /data/labels.sqlite"),
        ("broken", StoreError.database("disk I/O error"), 500, "database: disk I/O error"),
        ("no-camera", CaptureError.notConfigured, 409, nil),
        ("camera-busy", TriggerError.liveOff, 409, nil),
        ("busy", TrainingJobError.busy(jobId: "local-1"), 409, "training job local-1 is still running"),
        ("unreachable", TrainingJobError.managerUnreachable, 503, "cannot reach right now"),
        ("no-previous", ModelInstallError.noPreviousModel, 409, nil),
        ("bad-set", SegmentationError.emptyDataset("no ROIs"), 422, "empty dataset: no ROIs"),
        ("manager-refused", WireError.remote(code: .notFound, message: "no labelled ROIs"), 502, "no labelled ROIs"),
        ("unclassified", Unclassified(), 500, nil),
    ]

    @Test func aThrownErrorAnswersWithItsOwnStatusOnAnyRoute() async throws {
        let router = AgentRouter(context: AgentRequestContext.self)
        router.add(middleware: SecurityHeadersMiddleware(secure: false))
        let routes = AgentRoutes(router: router)
        for entry in Self.cases {
            let error = entry.error
            // A route as bare as one can be written: no wrapper, no catch.
            routes.get(RouterPath(entry.path), .viewer) { _, _ -> Response in throw error }
        }
        let app = Application(router: router)
        try await app.test(.router) { client in
            for entry in Self.cases {
                try await client.execute(uri: "/\(entry.path)", method: .get) { response in
                    let text = String(buffer: response.body)
                    let answer = try? JSONDecoder().decode([String: [String: String]].self, from: Data(text.utf8))
                    let message = answer?["error"]?["message"] ?? ""
                    #expect(response.status.code == entry.status, "\(entry.path): \(response.status) \(text)")
                    #expect(response.headers[.contentSecurityPolicy] != nil, "\(entry.path): the error has the security headers")
                    if let says = entry.says { #expect(message.contains(says), "\(entry.path): \(text)") }
                    // A refused value reads as the reason alone, as the page shows it.
                    if entry.path == "invalid" { #expect(message == "the name is empty", "\(text)") }
                    if entry.path == "unclassified" { #expect(!text.contains("secret"), "a 500 tells nothing of the error: \(text)") }
                }
            }
        }
    }
}
