import Crypto
import Foundation
import Hummingbird
import Prometheus
import Logging
import LoupePKI
import LoupeProto
import LoupeSegmentation
import LoupeWire
import NIOCore
import ServiceLifecycle
import Synchronization
import LoupeStorage

/// The plant's fleet manager: accepts agents and operators over mutual TLS,
/// checks their certificates' roles and the revocation list, and serves the
/// protocol. Runs under swift-service-lifecycle; on SIGTERM it stops
/// accepting, says Goodbye to every peer and exits.
public final class ManagerService: Service, Sendable {
    public let config: ManagerConfig
    public let registry = CameraRegistry()
    public let metrics = ManagerMetrics()
    private let onMetricsListening: @Sendable (Int) -> Void
    let logger: Logger
    private let onListening: @Sendable (SocketAddress) -> Void
    let trainingData = Mutex<(any TrainingDataStoring)?>(nil)
    let models = Mutex<(any ModelRegistryStoring)?>(nil)
    let training = Mutex<TrainingQueue?>(nil)
    /// Per live agent connection: the decision (assignment) already offered on it.
    private let offered = Mutex<[ObjectIdentifier: String]>([:])
    /// What camera certificates may upload, train and cancel.
    let permissions: CameraPermissions
    public init(config: ManagerConfig, logger: Logger, onListening: @escaping @Sendable (SocketAddress) -> Void = { _ in },
                onMetricsListening: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.config = config
        self.logger = logger
        self.onListening = onListening
        self.onMetricsListening = onMetricsListening
        permissions = CameraPermissions(assigned: config.cameraInspectionTypes ?? [:], limits: config.cameraLimits)
    }

    public func run() async throws {
        let storage = try ManagerStorage.open(config)
        let trainingData = storage.trainingData
        self.trainingData.withLock { $0 = trainingData }
        try registry.attach(storage.fleet)
        let held = try trainingData.count()
        let registry = storage.models
        self.models.withLock { $0 = registry }
        if let published = config.publishPublicKey {
            // Only the public half leaves the data folder.
            try SigningKeyFile.write(registry.signingKey.publicKey.rawRepresentation, to: published, secret: false)
        }
        let queue = TrainingQueue(data: trainingData, registry: registry, concurrency: config.trainingConcurrency ?? 1,
                                  threads: config.trainingThreads ?? ProcessInfo.processInfo.activeProcessorCount, metrics: metrics, logger: logger)
        self.training.withLock { $0 = queue }
        let versions = try registry.versions().count
        logger.info("training data and model registry open", metadata: [
            "rois": "\(held)", "models": "\(versions)",
            "signing-key": "\(registry.signingKey.publicKey.rawRepresentation.hexString.prefix(16))…",
        ])
        let (host, port) = try parseAddress(config.listen)
        let server = try await WireServer.bind(
            WireServerConfiguration(host: host, port: port, tls: config.tls, connection: config.connectionSettings,
                                    maxConnections: config.maxConnections ?? WireServerConfiguration.defaultMaxConnections,
                                    maxConnectionsPerPeer: config.maxConnectionsPerCertificate ?? WireServerConfiguration.defaultMaxConnectionsPerPeer),
            logger: logger
        )
        let logger = self.logger
        let revocations = try RevocationWatcher(path: config.revocationList, logger: logger) { list in
            // Also drop live connections whose certificate was just revoked.
            for connection in server.activeConnections {
                if let peer = connection.peer, list.isRevoked(serial: peer.serial) {
                    logger.warning("closing connection of revoked certificate", metadata: ["peer": "\(peer)"])
                    connection.closeWithError(WireError.refused(code: .certificateRevoked, message: "certificate serial \(peer.serial) of \(peer.role.rawValue) \(peer.name) has been revoked"))
                }
            }
        }
        logger.info("manager listening", metadata: [
            "address": "\(server.localAddress)", "manager": "\(config.managerId)",
            "revocations": "\(revocations.list.entries.count)",
        ])
        onListening(server.localAddress)

        try await withGracefulShutdownHandler {
            try await withThrowingTaskGroup(of: Void.self) { group in
                let poll = self.config.revocationPollSeconds ?? 1
                group.addTask { await revocations.run(pollInterval: poll > 0 ? .seconds(fraction: poll) : nil) }
                group.addTask { await self.offerModels(server: server, registry: registry, queue: queue) }
                if let address = self.config.metricsAddress {
                    let app = try self.metricsServer(address)
                    group.addTask { try await app.run() }
                }
                try await server.run(
                    handshake: { connection, hello in try self.welcome(connection, hello, revocations: revocations) },
                    handler: { connection, envelope in try await self.handle(connection, envelope) },
                    closed: { connection in
                        _ = self.offered.withLock { $0.removeValue(forKey: ObjectIdentifier(connection)) }
                        if let peer = connection.peer, peer.role == .agent, connection.wasWelcomed {
                            self.registry.disconnected(cameraId: peer.name)
                            logger.info("agent disconnected", metadata: ["camera": "\(peer.name)"])
                        }
                    }
                )
                group.cancelAll()
            }
            await queue.shutdown()
        } onGracefulShutdown: {
            logger.info("manager shutting down gracefully")
            Task { await server.shutdown(reason: "manager shutting down") }
        }
        logger.info("manager stopped")
    }

    /// Offers each connected camera the model it should run, once per
    /// connection, until it reports that version installed. Pushes,
    /// rollbacks and rollout decisions are written to the registry; this
    /// loop delivers them, also to cameras that were offline. It also steps
    /// the canary rollouts and sets the fleet gauges.
    func offerModels(server: WireServer, registry: any ModelRegistryStoring, queue: TrainingQueue) async {
        while !Task.isCancelled {
            // The gauges that describe the fleet as it is now.
            let peers = server.activeConnections.filter { $0.wasWelcomed && !$0.isClosed }.compactMap(\.peer)
            metrics.camerasConnected.set(to: Double(peers.filter { $0.role == .agent }.count))
            metrics.operatorsConnected.set(to: Double(peers.filter { $0.role == .operator }.count))
            // Rollout decisions first, so a promotion is offered in this same pass.
            let inCanary = RolloutSupervisor(models: registry, cameras: self.registry, logger: logger, metrics: metrics).step()
            metrics.rolloutsCanary.set(to: Double(inCanary))
            // One read of every camera's desired and installed version serves the gauge and the offers.
            let cameras = Dictionary(((try? registry.cameras()) ?? []).map { ($0.cameraId, $0) }) { $1 }
            let pending = cameras.values.filter { $0.desiredVersion != nil && $0.desiredVersion != $0.installedVersion }
            metrics.pushPending.set(to: Double(pending.count))
            let (queued, running) = queue.counts
            metrics.trainingQueued.set(to: Double(queued))
            metrics.trainingRunning.set(to: Double(running))
            for connection in server.activeConnections {
                guard let peer = connection.peer, peer.role == .agent, connection.wasWelcomed, !connection.isClosed,
                      let camera = cameras[peer.name], let desired = camera.desiredVersion else { continue }
                let key = ObjectIdentifier(connection)
                guard desired != camera.installedVersion else {
                    // Settled: a later decision, even for a version offered before, is offered again.
                    _ = offered.withLock { $0.removeValue(forKey: key) }
                    continue
                }
                // One offer per decision: a new assignment (a push, a rollback) is offered even for the same version.
                let decision = camera.assignment ?? desired
                guard offered.withLock({ $0[key] }) != decision, let version = try? registry.version(desired) else { continue }
                offered.withLock { $0[key] = decision }
                var offer = Loupe_V1_ModelOffer()
                offer.modelVersion = version.version
                offer.inspectionType = version.inspectionType
                offer.sizeBytes = UInt64(version.bytes)
                offer.sha256 = Data(hexString: version.sha256) ?? Data()
                offer.signature = Data(hexString: version.offerSignature) ?? Data()
                offer.chunkBytes = ModelChunks.suggestedBytes
                if let assignment = camera.assignment, let signature = camera.assignmentSignature {
                    offer.assignment = Data(hexString: assignment) ?? Data()
                    offer.assignmentSignature = Data(hexString: signature) ?? Data()
                }
                logger.info("offering model", metadata: ["camera": "\(peer.name)", "version": "\(version.version)"])
                try? await connection.send(event: .modelOffer(offer))
                metrics.offers.increment()
            }
            try? await Task.sleep(for: .milliseconds(500))
        }
    }

    /// GET /metrics in Prometheus' text format, on its own port.
    func metricsServer(_ address: String) throws -> some ApplicationProtocol {
        let (host, port) = try parseAddress(address)
        let router = Router()
        let metrics = self.metrics
        router.get("metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: ResponseBody(byteBuffer: ByteBuffer(string: metrics.text)))
        }
        let logger = self.logger, onMetricsListening = self.onMetricsListening
        return Application(router: router, configuration: .init(address: .hostname(host, port: port), serverName: "loupe-manager-metrics"),
                           onServerRunning: { channel in
                               let bound = channel.localAddress?.port ?? port
                               logger.info("metrics listening", metadata: ["address": "\(host):\(bound)"])
                               onMetricsListening(bound)
                           }, logger: logger)
    }

    /// Checks a client's Hello: revocation, role, protocol version.
    func welcome(_ connection: WireConnection, _ hello: Loupe_V1_Hello, revocations: RevocationWatcher) throws -> Loupe_V1_Welcome {
        guard let peer = connection.peer else {
            throw WireError.refused(code: .permissionDenied, message: "no client certificate identity")
        }
        do {
            try revocations.admit(serial: peer.serial, name: peer.name, role: peer.role.rawValue)
        } catch {
            logger.warning("refused certificate", metadata: ["peer": "\(peer)", "address": "\(connection.remoteAddress)", "why": "\(error)"])
            throw error
        }
        guard peer.role == .agent || peer.role == .operator else {
            throw WireError.refused(code: .permissionDenied, message: "a \(peer.role.rawValue) certificate cannot connect to the manager; use an agent or operator certificate")
        }
        guard hello.protocolVersion == WireProtocol.version else {
            throw WireError.refused(code: .protocolVersionMismatch, message: "client speaks protocol version \(hello.protocolVersion); this manager speaks version \(WireProtocol.version)")
        }
        if peer.role == .agent {
            registry.connected(cameraId: peer.name, address: connection.remoteAddress, softwareVersion: hello.softwareVersion)
        }
        logger.info("\(peer.role.rawValue) connected", metadata: [
            "peer": "\(peer.name)", "address": "\(connection.remoteAddress)", "software": "\(hello.softwareVersion)",
        ])
        var welcome = Loupe_V1_Welcome()
        welcome.protocolVersion = WireProtocol.version
        welcome.softwareVersion = WireProtocol.softwareVersion
        welcome.capabilities = ["echo", "fleet-status", "agent-status", "roi-upload", "model-chunks", "training", "operator-commands", "rollouts"]
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
            return nil
        case .roiUpload(let upload):
            guard let store = trainingData.withLock({ $0 }) else {
                throw WireError.refused(code: .unavailable, message: "the manager's training data is not open yet")
            }
            do {
                try permissions.checkInspectionType(upload.inspectionType, camera: peer.name) { try store.inspectionTypes(cameraId: peer.name) }
            } catch {
                metrics.uploadsRefused.increment()
                logger.warning("upload refused", metadata: ["camera": "\(peer.name)", "type": "\(upload.inspectionType)", "why": "\(error)"])
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
            let registry = try openRegistry()
            guard request.length > 0, request.length <= ModelChunks.maximumBytes else {
                throw WireError.refused(code: .invalidArgument, message: "chunk length \(request.length) must be 1…\(ModelChunks.maximumBytes)")
            }
            let (data, last) = try mapped { try registry.chunk(request.modelVersion, offset: request.offset, length: Int(request.length)) }
            var chunk = Loupe_V1_ModelChunk()
            chunk.modelVersion = request.modelVersion
            chunk.offset = request.offset
            chunk.data = data
            chunk.last = last
            metrics.chunkBytes.increment(by: Int64(data.count))
            return .modelChunk(chunk)
        case .trainingStart(var request):
            guard let queue = training.withLock({ $0 }) else { throw WireError.refused(code: .unavailable, message: "training is not ready yet") }
            if peer.role == .agent {
                // A camera trains only its own type, within its quota and budget.
                var budget = CameraPermissions.TrainingBudget(inspectionType: request.inspectionType, timeBudgetSeconds: Double(request.timeBudgetSeconds),
                                                              passes: Int(request.iterations))
                let held = { () throws -> Set<String> in try self.trainingData.withLock { $0 }?.inspectionTypes(cameraId: peer.name) ?? [] }
                try permissions.admitTraining(&budget, camera: peer.name, queuedByCamera: queue.activeJobs(requestedBy: peer.name), typesHeld: held)
                request.timeBudgetSeconds = UInt32(budget.timeBudgetSeconds)
            }
            return .trainingProgress(try queue.submit(request, requester: peer.name, isCamera: peer.role == .agent, connection: connection))
        case .trainingCancel(let cancel):
            guard let queue = training.withLock({ $0 }) else { throw WireError.refused(code: .unavailable, message: "training is not ready yet") }
            // A camera cancels only the jobs it asked for; an operator any.
            try queue.cancel(jobId: cancel.jobID, onlyIfRequestedBy: peer.role == .agent ? peer.name : nil)
            var progress = Loupe_V1_TrainingProgress()
            progress.jobID = cancel.jobID
            progress.state = .cancelled
            return .trainingProgress(progress)
        case .modelInstalled(let report):
            try? models.withLock({ $0 })?.recordInstall(cameraId: peer.name, version: report.modelVersion, ok: report.ok, error: report.error)
            (report.ok ? metrics.installsOK : metrics.installsRefused).increment()
            if report.ok {
                logger.info("camera installed model", metadata: ["camera": "\(peer.name)", "version": "\(report.modelVersion)"])
            } else {
                logger.error("camera refused model", metadata: ["camera": "\(peer.name)", "version": "\(report.modelVersion)", "error": "\(report.error)"])
            }
            return nil
        case .fleetStatusQuery(let query):
            var reply = Loupe_V1_FleetStatusReply()
            reply.cameras = registry.snapshot().filter { query.inspectionType.isEmpty || $0.status.inspectionType == query.inspectionType }
            return .fleetStatusReply(reply)
        case .modelListQuery, .modelPush, .modelRollback, .rolloutDecision, .trainingStatusQuery, .datasetStatsQuery, .cameraGroupSet, .cameraGroupList:
            return try await handleOperator(body, connection: connection, peer: peer)
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
        case .echo, .trainingStart, .trainingCancel:
            allowed = role == .agent || role == .operator
        case .roiUpload, .agentStatus, .modelInstalled:
            allowed = role == .agent
        case .modelChunkRequest:
            // Operators fetch a version's file too (`loupe model export-onnx VERSION`).
            allowed = role == .agent || role == .operator
        case .fleetStatusQuery, .modelListQuery, .modelPush, .modelRollback, .rolloutDecision, .trainingStatusQuery,
             .datasetStatsQuery, .cameraGroupSet, .cameraGroupList:
            allowed = role == .operator
        default:
            allowed = false
        }
        guard allowed else {
            throw WireError.refused(code: .permissionDenied, message: "a \(role.rawValue) certificate may not send \(body.name)")
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
        }
    }
}
