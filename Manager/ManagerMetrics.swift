import Foundation
import Hummingbird
import Logging
public import LoupeProto
import LoupeWire
import NIOCore
public import Prometheus
import ServiceLifecycle

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
        camerasConnected = registry.loupeGauge("cameras_connected", "Camera agents connected now")
        operatorsConnected = registry.loupeGauge("operators_connected", "Operator clients connected now")
        let uploads = "Labelled ROI uploads by outcome"
        uploadsStored = registry.loupeCounter("roi_uploads", uploads, [("result", "stored")])
        uploadsDuplicate = registry.loupeCounter("roi_uploads", uploads, [("result", "duplicate")])
        uploadsRefused = registry.loupeCounter("roi_uploads", uploads, [("result", "refused")])
        uploadBytes = registry.loupeCounter("roi_upload_bytes", "Image and mask bytes of stored ROI uploads")
        let jobs = "Training jobs by state"
        trainingQueued = registry.loupeGauge("training_jobs", jobs, [("state", "queued")])
        trainingRunning = registry.loupeGauge("training_jobs", jobs, [("state", "running")])
        let finished = "Training jobs finished, by outcome"
        trainingSucceeded = registry.loupeCounter("training_jobs_finished", finished, [("state", "succeeded")])
        trainingFailed = registry.loupeCounter("training_jobs_finished", finished, [("state", "failed")])
        trainingCancelled = registry.loupeCounter("training_jobs_finished", finished, [("state", "cancelled")])
        pushPending = registry.loupeGauge("model_push_pending_cameras", "Cameras whose assigned model version is not installed yet")
        offers = registry.loupeCounter("model_offers", "Model offers sent to cameras")
        chunkBytes = registry.loupeCounter("model_chunk_bytes", "Model bytes served in chunks")
        let installs = "Model installs reported by cameras, by outcome"
        installsOK = registry.loupeCounter("model_installs", installs, [("result", "ok")])
        installsRefused = registry.loupeCounter("model_installs", installs, [("result", "refused")])
        rolloutsCanary = registry.loupeGauge("rollouts_in_canary", "Canary rollouts waiting for their decision")
        let decided = "Canary rollouts decided, by outcome"
        rolloutsPromoted = registry.loupeCounter("rollouts_decided", decided, [("result", "promoted")])
        rolloutsRolledBack = registry.loupeCounter("rollouts_decided", decided, [("result", "rolled-back")])
    }

    /// The exposition text.
    public var text: String { registry.emitToString() }

    /// A camera's stream figures from its status report, as gauges labelled
    /// with the camera (GenICam cameras; zero for other sources). The
    /// registry hands back the same gauge for the same name and labels.
    public func report(cameraId: String, status: Loupe_V1_AgentStatus) {
        let labels = [("camera", cameraId)]
        let figures: [(String, String, UInt64)] = [
            (
                "camera_incomplete_frames", "Frames the camera sent incomplete (packets lost; not inspected), since its agent started",
                status.cameraIncompleteFrames
            ),
            ("camera_missing_packets", "GigE Vision packets missing, since the camera's agent started", status.cameraMissingPackets),
            ("camera_resent_packets", "GigE Vision packets resent, since the camera's agent started", status.cameraResentPackets),
            ("camera_reconnects", "Times the camera was lost and found again, since its agent started", status.cameraReconnects),
        ]
        for (name, help, value) in figures { registry.loupeGauge(name, help, labels).set(to: Double(value)) }
        registry.loupeGauge("camera_lost", "1 while the camera gives no frames (the agent's status names why)", labels).set(
            to: status.cameraError.isEmpty ? 0.0 : 1.0)
    }
}

extension PrometheusCollectorRegistry {
    /// `loupe_<name>_total`, with its HELP line.
    fileprivate func loupeCounter(_ name: String, _ help: String, _ labels: [(String, String)] = []) -> Counter {
        makeCounter(
            descriptor: MetricNameDescriptor(namespace: "loupe", metricName: name, unitName: "total", helpText: help), labels: labels)
    }

    /// `loupe_<name>`, with its HELP line.
    fileprivate func loupeGauge(_ name: String, _ help: String, _ labels: [(String, String)] = []) -> Gauge {
        makeGauge(descriptor: MetricNameDescriptor(namespace: "loupe", metricName: name, unitName: "", helpText: help), labels: labels)
    }
}

/// GET /metrics in Prometheus' text format, on its own port (`metricsAddress`).
struct MetricsService: Service {
    let metrics: ManagerMetrics
    let address: String
    let logger: Logger
    let onListening: @Sendable (Int) -> Void

    func run() async throws {
        let (host, port) = try parseAddress(address)
        let router = Router()
        let metrics = self.metrics
        router.get("metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: metrics.text)))
        }
        let (logger, onListening) = (self.logger, self.onListening)
        let app = Application(
            router: router, configuration: .init(address: .hostname(host, port: port), serverName: "loupe-manager-metrics"),
            onServerRunning: { channel in
                let bound = channel.localAddress?.port ?? port
                logger.info("metrics listening", metadata: ["address": "\(host):\(bound)"])
                onListening(bound)
            }, logger: logger)
        try await app.run()
    }
}
