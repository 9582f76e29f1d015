import Foundation
import Prometheus

/// The manager's Prometheus metrics (served on `metricsAddress` at /metrics).
public final class ManagerMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    let camerasConnected: Gauge
    let operatorsConnected: Gauge
    let uploadsStored: Counter
    let uploadsDuplicate: Counter
    let uploadsRefused: Counter
    let uploadBytes: Counter
    let trainingQueued: Gauge
    let trainingRunning: Gauge
    let trainingSucceeded: Counter
    let trainingFailed: Counter
    let trainingCancelled: Counter
    let pushPending: Gauge
    let offers: Counter
    let chunkBytes: Counter
    let installsOK: Counter
    let installsRefused: Counter
    let rolloutsCanary: Gauge
    let rolloutsPromoted: Counter
    let rolloutsRolledBack: Counter

    public init() {
        camerasConnected = registry.makeGauge(descriptor: Self.metric("cameras_connected", unit: "", help: "Camera agents connected now"))
        operatorsConnected = registry.makeGauge(descriptor: Self.metric("operators_connected", unit: "", help: "Operator clients connected now"))
        let uploads = "Labelled ROI uploads by outcome"
        uploadsStored = registry.makeCounter(descriptor: Self.metric("roi_uploads", unit: "total", help: uploads), labels: [("result", "stored")])
        uploadsDuplicate = registry.makeCounter(descriptor: Self.metric("roi_uploads", unit: "total", help: uploads), labels: [("result", "duplicate")])
        uploadsRefused = registry.makeCounter(descriptor: Self.metric("roi_uploads", unit: "total", help: uploads), labels: [("result", "refused")])
        uploadBytes = registry.makeCounter(descriptor: Self.metric("roi_upload_bytes", unit: "total", help: "Image and mask bytes of stored ROI uploads"))
        let jobs = "Training jobs by state"
        trainingQueued = registry.makeGauge(descriptor: Self.metric("training_jobs", unit: "", help: jobs), labels: [("state", "queued")])
        trainingRunning = registry.makeGauge(descriptor: Self.metric("training_jobs", unit: "", help: jobs), labels: [("state", "running")])
        let finished = "Training jobs finished, by outcome"
        trainingSucceeded = registry.makeCounter(descriptor: Self.metric("training_jobs_finished", unit: "total", help: finished), labels: [("state", "succeeded")])
        trainingFailed = registry.makeCounter(descriptor: Self.metric("training_jobs_finished", unit: "total", help: finished), labels: [("state", "failed")])
        trainingCancelled = registry.makeCounter(descriptor: Self.metric("training_jobs_finished", unit: "total", help: finished), labels: [("state", "cancelled")])
        pushPending = registry.makeGauge(descriptor: Self.metric("model_push_pending_cameras", unit: "", help: "Cameras whose assigned model version is not installed yet"))
        offers = registry.makeCounter(descriptor: Self.metric("model_offers", unit: "total", help: "Model offers sent to cameras"))
        chunkBytes = registry.makeCounter(descriptor: Self.metric("model_chunk_bytes", unit: "total", help: "Model bytes served in chunks"))
        let installs = "Model installs reported by cameras, by outcome"
        installsOK = registry.makeCounter(descriptor: Self.metric("model_installs", unit: "total", help: installs), labels: [("result", "ok")])
        installsRefused = registry.makeCounter(descriptor: Self.metric("model_installs", unit: "total", help: installs), labels: [("result", "refused")])
        rolloutsCanary = registry.makeGauge(descriptor: Self.metric("rollouts_in_canary", unit: "", help: "Canary rollouts waiting for their decision"))
        let decided = "Canary rollouts decided, by outcome"
        rolloutsPromoted = registry.makeCounter(descriptor: Self.metric("rollouts_decided", unit: "total", help: decided), labels: [("result", "promoted")])
        rolloutsRolledBack = registry.makeCounter(descriptor: Self.metric("rollouts_decided", unit: "total", help: decided), labels: [("result", "rolled-back")])
    }

    /// `loupe_<name>[_<unit>]`, with its HELP line.
    private static func metric(_ name: String, unit: String, help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "loupe", metricName: name, unitName: unit, helpText: help)
    }

    /// The exposition text.
    public var text: String { registry.emitToString() }
}
