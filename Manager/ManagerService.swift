import Crypto
import Foundation
import Hummingbird
import Prometheus
public import Logging
public import LoupePKI
public import LoupeProto
import LoupeSegmentation
public import LoupeWire
public import NIOCore
public import ServiceLifecycle
import Synchronization
import LoupeStorage

/// The plant's fleet manager: accepts agents and operators over mutual TLS,
/// checks their certificates' roles and the revocation list, and serves the
/// protocol: this type holds the connection loop and the dispatch; model
/// offers and rollouts (`ModelOffers`), operator commands
/// (`OperatorCommands`) and the metrics port (`MetricsService`) are their
/// own types. The stores are open before it starts (`init` opens them and
/// throws when it cannot). Runs under swift-service-lifecycle; on SIGTERM it
/// stops accepting, says Goodbye to every peer and exits.
public final class ManagerService: Service, Sendable {
    public let config: ManagerConfig
    public let registry = CameraRegistry()
    public let metrics = ManagerMetrics()
    let logger: Logger
    private let onListening: @Sendable (SocketAddress) -> Void
    /// The listener once bound, for the connections it serves.
    private let listener = Mutex<WireServer?>(nil)
    private let onMetricsListening: @Sendable (Int) -> Void
    let trainingData: any TrainingDataStoring
    let models: any ModelRegistryStoring
    let training: TrainingQueue
    let offers: ModelOffers
    let operatorCommands: OperatorCommands
    /// What camera certificates may upload, train and cancel.
    let permissions: CameraPermissions

    let storage: ManagerStorage

    /// Opens the stores `config` names (they must open, or this throws, naming why) and makes the manager.
    public static func open(
        config: ManagerConfig, logger: Logger, onListening: @escaping @Sendable (SocketAddress) -> Void = { _ in },
        onMetricsListening: @escaping @Sendable (Int) -> Void = { _ in }
    ) async throws -> ManagerService {
        let storage = try await ManagerStorage.open(config, logger: logger)
        let service = try ManagerService(
            config: config, storage: storage, logger: logger, onListening: onListening, onMetricsListening: onMetricsListening)
        try await service.registry.attach(storage.fleet, logger: logger)
        return service
    }

    private init(
        config: ManagerConfig, storage: ManagerStorage, logger: Logger, onListening: @escaping @Sendable (SocketAddress) -> Void,
        onMetricsListening: @escaping @Sendable (Int) -> Void
    ) throws {
        self.config = config
        self.logger = logger
        self.onListening = onListening
        self.onMetricsListening = onMetricsListening
        self.storage = storage
        permissions = CameraPermissions(assigned: config.cameraInspectionTypes ?? [:], limits: config.cameraLimits)
        trainingData = storage.trainingData
        models = storage.models
        if let published = config.publishPublicKey {
            // Only the public half leaves the data folder.
            try SigningKeyFile.write(models.signingKey.publicKey.rawRepresentation, to: published, secret: false)
        }
        let wakeups = ModelOffers.makeWakeups()
        let trainingSettings = TrainingQueue.Settings(
            concurrency: config.trainingConcurrency ?? 1,
            threads: config.trainingThreads ?? ProcessInfo.processInfo.activeProcessorCount,
            lease: .seconds(fraction: config.trainingLeaseSeconds ?? 30), holder: "manager \(config.managerId)",
            scratchDirectory: config.trainingScratchDirectory)
        training = TrainingQueue(
            jobs: storage.trainingJobs, data: trainingData, registry: models, settings: trainingSettings, metrics: metrics,
            logger: logger, onAssigned: { wakeups.1.yield() })
        offers = ModelOffers(
            models: models, cameras: registry, training: training, metrics: metrics, logger: logger, wakeups: wakeups,
            tick: .seconds(fraction: config.registryPollSeconds ?? 1), sharedFleet: storage.sharedFleet)
        operatorCommands = OperatorCommands(
            models: models, trainingData: trainingData, training: training, cameras: registry,
            sharedFleet: storage.sharedFleet, offers: offers, logger: logger)
    }

    /// The connections open now (agents, operators, workers), handshake done or under way.
    public var connections: [WireConnection] { listener.withLock { $0?.activeConnections ?? [] } }

    public func run() async throws {
        let (held, versions) = (try await trainingData.count(), try await models.versions().count)
        logger.info(
            "training data and model registry open",
            metadata: [
                "rois": "\(held)", "models": "\(versions)", "storage": "\(storage.location)",
                "signing-key": "\(models.signingKey.publicKey.rawRepresentation.hexString.prefix(16))…",
            ])
        let (host, port) = try parseAddress(config.listen)
        let server = try await WireServer.bind(
            WireServerConfiguration(
                host: host, port: port, tls: config.tls, connection: config.connectionSettings,
                maxConnections: config.maxConnections ?? WireServerConfiguration.defaultMaxConnections,
                maxConnectionsPerPeer: config.maxConnectionsPerCertificate ?? WireServerConfiguration.defaultMaxConnectionsPerPeer),
            logger: logger
        )
        listener.withLock { $0 = server }
        let logger = self.logger
        let revocations = try RevocationWatcher(path: config.revocationList, logger: logger) { list in
            // Also drop live connections whose certificate was just revoked.
            for connection in server.activeConnections {
                if let peer = connection.peer, list.isRevoked(serial: peer.serial) {
                    logger.warning("closing connection of revoked certificate", metadata: ["peer": "\(peer)"])
                    connection.closeWithError(
                        WireError.refused(
                            code: .certificateRevoked,
                            message: "certificate serial \(peer.serial) of \(peer.role.rawValue) \(peer.name) has been revoked"))
                }
            }
        }
        logger.info(
            "manager listening",
            metadata: [
                "address": "\(server.localAddress)", "manager": "\(config.managerId)",
                "revocations": "\(revocations.list.entries.count)",
            ])
        onListening(server.localAddress)

        let (offers, training) = (self.offers, self.training)
        try await withGracefulShutdownHandler {
            try await withThrowingTaskGroup(of: Void.self) { group in
                let poll = self.config.revocationPollSeconds ?? 1
                group.addTask { await revocations.run(pollInterval: poll > 0 ? .seconds(fraction: poll) : nil) }
                group.addTask { await offers.run(server: server) }
                group.addTask { await training.run() }
                if let address = self.config.metricsAddress {
                    let metrics = MetricsService(
                        metrics: self.metrics, address: address, logger: logger, onListening: self.onMetricsListening)
                    group.addTask { try await metrics.run() }
                }
                try await server.run(
                    handshake: { connection, hello in try self.welcome(connection, hello, revocations: revocations) },
                    handler: { connection, envelope in try await self.handle(connection, envelope) },
                    // A camera is offered its model as soon as its Welcome is out.
                    welcomed: { connection in if connection.peer?.role == .agent { offers.wake() } },
                    closed: { connection in
                        offers.forget(connection)
                        training.forget(connection)
                        if let peer = connection.peer, peer.role == .agent, connection.wasWelcomed {
                            self.registry.disconnected(cameraId: peer.name)
                            logger.info("agent disconnected", metadata: ["camera": "\(peer.name)"])
                        }
                    }
                )
                group.cancelAll()
            }
            await training.shutdown()
            await self.registry.detach()
            self.storage.database?.close()
        } onGracefulShutdown: {
            logger.info("manager shutting down gracefully")
            Task { await server.shutdown(reason: "manager shutting down") }
        }
        logger.info("manager stopped")
    }

    /// Checks a client's Hello: revocation, role, protocol version.
    func welcome(_ connection: WireConnection, _ hello: Loupe_V1_Hello, revocations: RevocationWatcher) throws -> Loupe_V1_Welcome {
        guard let peer = connection.peer else {
            throw WireError.refused(code: .permissionDenied, message: "no client certificate identity")
        }
        do {
            try revocations.admit(serial: peer.serial, name: peer.name, role: peer.role.rawValue)
        } catch {
            logger.warning(
                "refused certificate", metadata: ["peer": "\(peer)", "address": "\(connection.remoteAddress)", "why": "\(error)"])
            throw error
        }
        guard peer.role != .manager else {
            throw WireError.refused(
                code: .permissionDenied,
                message: "a manager certificate cannot connect to the manager; use an agent, operator or worker certificate")
        }
        guard hello.protocolVersion == WireProtocol.version else {
            throw WireError.refused(
                code: .protocolVersionMismatch,
                message: "client speaks protocol version \(hello.protocolVersion); this manager speaks version \(WireProtocol.version)")
        }
        if peer.role == .agent {
            registry.connected(cameraId: peer.name, address: connection.remoteAddress, softwareVersion: hello.softwareVersion)
        }
        logger.info(
            "\(peer.role.rawValue) connected",
            metadata: [
                "peer": "\(peer.name)", "address": "\(connection.remoteAddress)", "software": "\(hello.softwareVersion)",
            ])
        var welcome = Loupe_V1_Welcome()
        welcome.protocolVersion = WireProtocol.version
        welcome.softwareVersion = WireProtocol.softwareVersion
        welcome.capabilities = [
            "echo", "fleet-status", "agent-status", "roi-upload", "model-chunks", "training", "operator-commands", "rollouts",
            "training-workers",
        ]
        welcome.peerIdentity = peer.name
        welcome.peerRole = peer.role.wire
        welcome.heartbeatIntervalMs = UInt32(config.connectionSettings.heartbeatInterval.seconds * 1000)
        welcome.idleTimeoutMs = UInt32(config.connectionSettings.idleTimeout.seconds * 1000)
        welcome.maxFrameBytes = UInt32(config.connectionSettings.maxFrameBytes)
        welcome.managerID = config.managerId
        return welcome
    }

    /// Serves one request or event from a connected agent or operator.
    func handle(_ connection: WireConnection, _ envelope: Envelope) async throws -> Envelope.OneOf_Body? {
        guard let peer = connection.peer, let body = envelope.body else { return nil }
        try Permissions.check(body, role: peer.role)
        switch body {
        case .echo(let echo):
            return .echo(echo)
        case .agentStatus(let status):
            registry.report(cameraId: peer.name, status: status)
            metrics.report(cameraId: peer.name, status: status)
            return nil
        case .roiUpload(let upload):
            let store = trainingData
            do {
                try await permissions.checkInspectionType(upload.inspectionType, camera: peer.name) {
                    try await store.inspectionTypes(cameraId: peer.name)
                }
            } catch {
                metrics.uploadsRefused.increment()
                logger.warning(
                    "upload refused", metadata: ["camera": "\(peer.name)", "type": "\(upload.inspectionType)", "why": "\(error)"])
                throw error
            }
            let stored: Bool
            do {
                stored = try await store.store(upload, from: peer.name)
                if stored {
                    metrics.uploadsStored.increment()
                    metrics.uploadBytes.increment(by: Int64(upload.imagePng.count + upload.maskPng.count))
                } else {
                    metrics.uploadsDuplicate.increment()
                }
            } catch {
                metrics.uploadsRefused.increment()
                switch error {
                case .invalid(let why): throw WireError.refused(code: .invalidArgument, message: why)
                case .diskFull, .database: throw WireError.refused(code: .unavailable, message: error.description)
                }
            }
            var ack = Loupe_V1_RoiAck()
            ack.contentSha256 = upload.contentSha256
            ack.status = stored ? .stored : .duplicate
            return .roiAck(ack)
        case .modelChunkRequest(let request):
            guard request.length > 0, request.length <= ModelChunks.maximumBytes else {
                throw WireError.refused(
                    code: .invalidArgument, message: "chunk length \(request.length) must be 1…\(ModelChunks.maximumBytes)")
            }
            let (data, last) = try await OperatorCommands.mapped {
                try await models.chunk(request.modelVersion, offset: request.offset, length: Int(request.length))
            }
            var chunk = Loupe_V1_ModelChunk()
            chunk.modelVersion = request.modelVersion
            chunk.offset = request.offset
            chunk.data = data
            chunk.last = last
            metrics.chunkBytes.increment(by: Int64(data.count))
            return .modelChunk(chunk)
        case .trainingStart(var request):
            let queue = training
            if peer.role == .agent {
                // A camera trains only its own type, within its quota and budget.
                var budget = CameraPermissions.TrainingBudget(
                    inspectionType: request.inspectionType, timeBudgetSeconds: Double(request.timeBudgetSeconds),
                    passes: Int(request.iterations))
                let held = { () async throws -> Set<String> in try await self.trainingData.inspectionTypes(cameraId: peer.name) }
                let queued = try await queue.activeJobs(requestedBy: peer.name)
                try await permissions.admitTraining(&budget, camera: peer.name, queuedByCamera: queued, typesHeld: held)
                request.timeBudgetSeconds = UInt32(budget.timeBudgetSeconds)
            }
            return .trainingProgress(
                try await queue.submit(request, requester: peer.name, isCamera: peer.role == .agent, connection: connection))
        case .trainingCancel(let cancel):
            let queue = training
            // A camera cancels only the jobs it asked for; an operator any.
            try await queue.cancel(jobId: cancel.jobID, onlyIfRequestedBy: peer.role == .agent ? peer.name : nil)
            var progress = Loupe_V1_TrainingProgress()
            progress.jobID = cancel.jobID
            progress.state = .cancelled
            return .trainingProgress(progress)
        case .modelInstalled(let report):
            do {
                try await models.recordInstall(cameraId: peer.name, version: report.modelVersion, ok: report.ok, error: report.error)
            } catch {
                logger.error(
                    "cannot record a camera's install report",
                    metadata: [
                        "camera": "\(peer.name)", "version": "\(report.modelVersion)", "error": "\(error)",
                    ])
            }
            offers.wake()
            (report.ok ? metrics.installsOK : metrics.installsRefused).increment()
            if report.ok {
                logger.info("camera installed model", metadata: ["camera": "\(peer.name)", "version": "\(report.modelVersion)"])
            } else {
                logger.error(
                    "camera refused model",
                    metadata: ["camera": "\(peer.name)", "version": "\(report.modelVersion)", "error": "\(report.error)"])
            }
            return nil
        case .fleetStatusQuery(let query):
            var reply = Loupe_V1_FleetStatusReply()
            reply.cameras = try await operatorCommands.fleet().filter {
                query.inspectionType.isEmpty || $0.status.inspectionType == query.inspectionType
            }
            return .fleetStatusReply(reply)
        case .modelListQuery, .modelPush, .modelRollback, .rolloutDecision, .trainingStatusQuery, .datasetStatsQuery, .cameraGroupSet,
            .cameraGroupList:
            return try await operatorCommands.handle(body, connection: connection, peer: peer)
        case .workClaim(let claim):
            return .workAssignment(try await training.claim(worker: peer.name, wait: .milliseconds(Int64(claim.waitMs))))
        case .datasetPageQuery(let query):
            // Half a frame of PNGs, so a page and its framing always fit.
            return .datasetPage(try await training.page(query, worker: peer.name, maxBytes: config.connectionSettings.maxFrameBytes / 2))
        case .workProgress(let report):
            return .workLease(try await training.progress(report, worker: peer.name))
        case .workResult(let piece):
            return try await training.result(piece, worker: peer.name, connection: connection)
        default:
            throw WireError.refused(code: .unimplemented, message: "\(body.name) is not served by this manager version")
        }
    }
}

/// Which role may send which message to the manager.
enum Permissions {
    static func check(_ body: Envelope.OneOf_Body, role: FleetRole) throws {
        let allowed: Bool
        switch body {
        case .echo:
            allowed = true
        case .trainingStart, .trainingCancel:
            allowed = role == .agent || role == .operator
        case .roiUpload, .agentStatus, .modelInstalled:
            allowed = role == .agent
        case .modelChunkRequest:
            // Operators fetch a version's file too (`loupe model export-onnx VERSION`).
            allowed = role == .agent || role == .operator
        case .fleetStatusQuery, .modelListQuery, .modelPush, .modelRollback, .rolloutDecision, .trainingStatusQuery,
            .datasetStatsQuery, .cameraGroupSet, .cameraGroupList:
            allowed = role == .operator
        case .workClaim, .datasetPageQuery, .workProgress, .workResult:
            allowed = role == .worker
        default:
            allowed = false
        }
        guard allowed else {
            throw WireError.refused(
                code: .permissionDenied, message: "\(role.rawValue.withIndefiniteArticle) certificate may not send \(body.name)")
        }
    }
}

extension FleetRole {
    /// The protocol's enum value for this role.
    public var wire: Loupe_V1_Role {
        switch self {
        case .agent: return .agent
        case .operator: return .operator
        case .manager: return .manager
        case .worker: return .worker
        }
    }
}
