import Foundation
import HTTPTypes
public import Hummingbird
import LoupeSegmentation
import LoupeStorage
import NIOCore

/// Training and the installed model (docs/agent-api.md): start, watch and
/// cancel the camera's training, the model shelf, the running model's
/// training report, and rollback.
public struct ModelAPI: Sendable {
    public let runtime: AgentRuntime
    public let training: TrainingJobs
    public var user: @Sendable (Request) -> String = AgentAPI.signedInUser

    public init(runtime: AgentRuntime, training: TrainingJobs) {
        self.runtime = runtime
        self.training = training
    }

    public func register(on routes: AgentRoutes) {
        let api = routes.group("api/v1")
        let sessions = runtime.store.sessionEvents
        // Training.
        api.post("training", .operator) { request, _ in
            let start = try await AgentAPI.decode(TrainingRequest.self, request, limit: 4096)
            let user = self.user(request)
            return try AgentAPI.json(try await training.start(start, user: user), status: .accepted)
        }
        api.get("training", .viewer) { _, _ in
            guard let status = training.status else {
                throw HTTPError(.notFound, message: "no training job has run since the agent started")
            }
            return try AgentAPI.json(status)
        }
        api.post("training/cancel", .operator) { _, _ in
            try await training.cancel(jobId: nil)
            return try AgentAPI.json(training.status)
        }
        api.get("training/events", .viewer) { _, context in
            AgentAPI.eventStream(AgentAPI.untilEnded(training.subscribe(), session: context, sessions), name: "progress")
        }
        // Models.
        api.get("model", .viewer) { _, _ in try AgentAPI.json(runtime.shelf.state) }
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
            return try AgentAPI.json(runtime.shelf.state)
        }
    }
}
