import Foundation
import Hummingbird
import LoupeStorage

/// The labels across captures (docs/agent-api.md): every labelled ROI with
/// its capture number, for "View All ROIs" and the training set, and the
/// edit log.
public struct LabelAPI: Sendable {
    public let store: LabelStore

    public init(store: LabelStore) {
        self.store = store
    }

    public func register(on routes: AgentRoutes) {
        let api = routes.group("api/v1")
        // Every labelled ROI with its capture number, for "View All ROIs".
        api.get("labels", .viewer) { request, _ in
            let includedOnly = request.uri.queryParameters.get("included") == "true"
            var numbers: [Int64: Int] = [:]
            var labels: [LabelSummary] = []
            for label in try await store.labels(includedOnly: includedOnly) {
                let number: Int
                if let known = numbers[label.captureID] {
                    number = known
                } else {
                    number = try await store.capture(id: label.captureID).number
                    numbers[label.captureID] = number
                }
                labels.append(LabelSummary(capture: number, label: ROIAPI.LabelJSON(label)))
            }
            return try AgentAPI.json(labels)
        }
        api.get("edits", .viewer) { request, _ in
            let limit = min(1000, max(1, request.uri.queryParameters.get("limit", as: Int.self) ?? 100))
            return try AgentAPI.json(try await store.edits(limit: limit))
        }
    }

    struct LabelSummary: Codable {
        var capture: Int
        var label: ROIAPI.LabelJSON
    }
}
