import Foundation
public import Logging
import LoupeCapture
import LoupePKI
import LoupeProto
import LoupeSegmentation
import LoupeWire
public import ServiceLifecycle
import LoupeStorage

/// A whole agent, put together: the runtime (store, models, live pipeline),
/// its link to the manager (status, outbox, model offers, training
/// progress), training jobs, and the HTTP side. `loupe agent` runs one;
/// `loupe demo` runs three in one process.
public final class AgentAssembly: Sendable {
    public let runtime: AgentRuntime
    public let link: ManagerLink
    public let training: TrainingJobs
    public let services: [any Service]

    /// - Parameter onHTTP: called with the page's base URL once it listens.
    public init(config: AgentConfig, logger: Logger, onHTTP: @escaping @Sendable (String) -> Void = { _ in }) async throws {
        try FleetName.validate(config.cameraId)
        let runtime = try await AgentRuntime(config: config, logger: logger)
        let store = runtime.store
        let (captures, outbox) = (try await store.captureCount(), try await store.outboxDepth())
        logger.info(
            "label store open",
            metadata: [
                "captures": "\(captures)", "outbox": "\(outbox)",
                "model": "\(runtime.shelf.state.current?.version ?? "none")",
                "precision": "\(runtime.precision.rawValue)", "camera": "\(config.camera?.source.rawValue ?? "none")",
            ])
        let pipeline = runtime.pipeline
        let sender = OutboxSender(store: store, bytesPerSecond: config.manager?.uploadBytesPerSecond, logger: logger)
        let models = ModelReceiver(runtime: runtime, logger: logger)
        let jobs = LateBound<TrainingJobs>()
        let inbound: RequestHandler = { connection, envelope in
            switch envelope.body {
            case .modelOffer(let offer): return try await models.handle(connection, offer)
            case .trainingProgress(let progress):
                jobs.value?.managerProgress(progress)
                return nil
            default: throw WireError.refused(code: .unimplemented, message: "an agent does not serve \(envelope.bodyName)")
            }
        }
        let link = ManagerLink(config: config, logger: logger, outbox: sender, inbound: inbound) {
            let live = pipeline.statistics
            var status = Loupe_V1_AgentStatus()
            status.framesPerSecond = live.framesPerSecond
            status.latencyP50Ms = live.p50["total"] ?? 0
            status.latencyP99Ms = live.p99["total"] ?? 0
            status.passCount = UInt64(live.passCount)
            status.failCount = UInt64(live.failCount)
            status.passCountLastHour = UInt64(live.passLastHour)
            status.failCountLastHour = UInt64(live.failLastHour)
            status.modelVersion = live.modelVersion
            status.outboxDepth = UInt64((try? await store.outboxDepth()) ?? 0)
            status.recipeVersion = live.recipeVersion.description
            status.inspectionType = pipeline.currentInspector.recipe.inspectionType
            status.cameraError = live.sourceError ?? ""
            if let camera = live.camera {
                status.cameraIncompleteFrames = UInt64(camera.incompleteFrames)
                status.cameraMissingPackets = UInt64(camera.missingPackets)
                status.cameraResentPackets = UInt64(camera.resentPackets)
                status.cameraReconnects = UInt64(camera.reconnects)
            }
            if let usage = try? await runtime.library.usage() {
                status.libraryFrames = UInt64(usage.frames)
                status.libraryUnsureFrames = UInt64(usage.unsure)
            }
            return status
        }
        var connection: (@Sendable () -> WireConnection?)?
        if config.manager != nil { connection = { @Sendable in link.connection } }
        let training = TrainingJobs(runtime: runtime, logger: logger, manager: connection)
        jobs.set(training)
        // Training first: a group shuts down in reverse order, so the page (which can start a job) goes before it.
        var services: [any Service] = [training, link, pipeline]
        if let modbus = config.line?.modbus {
            services.append(ModbusServer(address: modbus.address, pipeline: pipeline, logger: logger))
        }
        if let mqtt = config.line?.mqtt {
            services.append(
                MQTTLink(
                    settings: try MQTTLink.Settings(mqtt, camera: config.cameraId), camera: config.cameraId, pipeline: pipeline,
                    logger: logger))
        }
        if config.http != nil {
            try await AgentHTTP.ensureAdmin(runtime: runtime, logger: logger)
            PagePriority.configure(nice: config.http?.pageNice ?? PagePriority.defaultNice)
            services.append(try AgentHTTP.service(runtime: runtime, training: training, logger: logger, onRunning: onHTTP))
        }
        self.runtime = runtime
        self.link = link
        self.training = training
        self.services = services
    }
}
