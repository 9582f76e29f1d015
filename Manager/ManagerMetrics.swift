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
        camerasConnected = registry.makeGauge(name: "loupe_cameras_connected", help: "Camera agents connected now")
        operatorsConnected = registry.makeGauge(name: "loupe_operators_connected", help: "Operator clients connected now")
        let uploads = "Labelled ROI uploads by outcome"
        uploadsStored = registry.makeCounter(name: "loupe_roi_uploads_total", labels: [("result", "stored")], help: uploads)
        uploadsDuplicate = registry.makeCounter(name: "loupe_roi_uploads_total", labels: [("result", "duplicate")], help: uploads)
        uploadsRefused = registry.makeCounter(name: "loupe_roi_uploads_total", labels: [("result", "refused")], help: uploads)
        uploadBytes = registry.makeCounter(name: "loupe_roi_upload_bytes_total", help: "Image and mask bytes of stored ROI uploads")
        let jobs = "Training jobs by state"
        trainingQueued = registry.makeGauge(name: "loupe_training_jobs", labels: [("state", "queued")], help: jobs)
        trainingRunning = registry.makeGauge(name: "loupe_training_jobs", labels: [("state", "running")], help: jobs)
        let finished = "Training jobs finished, by outcome"
        trainingSucceeded = registry.makeCounter(name: "loupe_training_jobs_finished_total", labels: [("state", "succeeded")], help: finished)
        trainingFailed = registry.makeCounter(name: "loupe_training_jobs_finished_total", labels: [("state", "failed")], help: finished)
        trainingCancelled = registry.makeCounter(name: "loupe_training_jobs_finished_total", labels: [("state", "cancelled")], help: finished)
        pushPending = registry.makeGauge(name: "loupe_model_push_pending_cameras", help: "Cameras whose assigned model version is not installed yet")
        offers = registry.makeCounter(name: "loupe_model_offers_total", help: "Model offers sent to cameras")
        chunkBytes = registry.makeCounter(name: "loupe_model_chunk_bytes_total", help: "Model bytes served in chunks")
        let installs = "Model installs reported by cameras, by outcome"
        installsOK = registry.makeCounter(name: "loupe_model_installs_total", labels: [("result", "ok")], help: installs)
        installsRefused = registry.makeCounter(name: "loupe_model_installs_total", labels: [("result", "refused")], help: installs)
        rolloutsCanary = registry.makeGauge(name: "loupe_rollouts_in_canary", help: "Canary rollouts waiting for their decision")
        let decided = "Canary rollouts decided, by outcome"
        rolloutsPromoted = registry.makeCounter(name: "loupe_rollouts_decided_total", labels: [("result", "promoted")], help: decided)
        rolloutsRolledBack = registry.makeCounter(name: "loupe_rollouts_decided_total", labels: [("result", "rolled-back")], help: decided)
    }

    /// The exposition text.
    public var text: String { registry.emitToString() }
}
