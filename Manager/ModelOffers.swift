import Foundation
public import Logging
import LoupePKI
import LoupeProto
import LoupeStorage
import LoupeWire
import Prometheus
import Synchronization

/// Delivers the registry's decisions to the cameras: offers each connected
/// camera the model it should run, once per decision, until it reports that
/// version installed. It runs when woken (`wake()`: a camera connected or
/// reported an install, an operator pushed, rolled back or decided a
/// rollout, training published a version, another manager on the same
/// database changed the registry) and on a slow tick, which steps canary
/// rollouts (their windows are measured in time), sets the fleet gauges and
/// picks up registry changes made outside this process. Rollouts are stepped
/// only by the manager that leads (`ModelRegistryStoring.watch`): on SQLite
/// always this one, on a shared database one manager at a time, judging
/// cameras connected elsewhere by the status other managers stored.
public final class ModelOffers: Sendable {
    let models: any ModelRegistryStoring
    let cameras: CameraRegistry
    /// The fleet store other managers write to, when the registry is shared; nil when only this manager writes.
    let sharedFleet: (any FleetStoring)?
    private let leading = Mutex(false)
    let training: TrainingQueue
    let metrics: ManagerMetrics
    let logger: Logger
    /// How often it runs without being woken.
    let tick: Duration
    private let wakeups: AsyncStream<Void>
    private let wakeup: AsyncStream<Void>.Continuation
    /// Per live agent connection: the decision (assignment) already offered on it.
    private let offered = Mutex<[ObjectIdentifier: String]>([:])

    /// Wake-ups for `ModelOffers`: made before it, so that what it needs (the training queue) can wake it.
    /// Those that arrive during a pass fold into one more pass.
    public static func makeWakeups() -> (AsyncStream<Void>, AsyncStream<Void>.Continuation) {
        AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    public init(
        models: any ModelRegistryStoring, cameras: CameraRegistry, training: TrainingQueue, metrics: ManagerMetrics, logger: Logger,
        wakeups: (AsyncStream<Void>, AsyncStream<Void>.Continuation) = makeWakeups(), tick: Duration = .seconds(1),
        sharedFleet: (any FleetStoring)? = nil
    ) {
        (self.models, self.cameras, self.training, self.metrics, self.logger, self.tick) = (
            models, cameras, training, metrics, logger, tick
        )
        (self.wakeups, wakeup) = wakeups
        self.sharedFleet = sharedFleet
    }

    /// Whether this manager steps the rollouts now.
    public var isLeading: Bool { leading.withLock { $0 } }

    /// Asks for a pass now (a decision or a camera's state changed).
    public func wake() { wakeup.yield() }

    /// A connection closed: what was offered on it is forgotten.
    func forget(_ connection: WireConnection) {
        _ = offered.withLock { $0.removeValue(forKey: ObjectIdentifier(connection)) }
    }

    /// Runs passes until cancelled.
    func run(server: WireServer) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [tick, wakeup] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: tick)
                    wakeup.yield()
                }
            }
            group.addTask { [self, wakeup] in
                await models.watch { event in
                    if case .leading(let now) = event {
                        self.leading.withLock { $0 = now }
                        self.logger.info(now ? "this manager now steps the rollouts" : "this manager no longer steps the rollouts")
                    }
                    wakeup.yield()
                }
            }
            for await _ in wakeups {
                if Task.isCancelled { break }
                await pass(server: server)
            }
            group.cancelAll()
        }
    }

    /// One pass: gauges, rollout steps, then the offers the decisions call for.
    func pass(server: WireServer) async {
        let peers = server.activeConnections.filter { $0.wasWelcomed && !$0.isClosed }.compactMap(\.peer)
        metrics.camerasConnected.set(to: Double(peers.filter { $0.role == .agent }.count))
        metrics.operatorsConnected.set(to: Double(peers.filter { $0.role == .operator }.count))
        // Rollout decisions first, so a promotion is offered in this same pass.
        if isLeading {
            let supervisor = RolloutSupervisor(models: models, cameras: cameras, logger: logger, metrics: metrics, sharedFleet: sharedFleet)
            let inCanary = await supervisor.step()
            metrics.rolloutsCanary.set(to: Double(inCanary))
        } else if let open = try? await models.rollouts(state: .canary) {
            metrics.rolloutsCanary.set(to: Double(open.count))
        }
        // One read of every camera's desired and installed version serves the gauge and the offers.
        let rows: [CameraModelRecord]
        do {
            rows = try await models.cameras()
        } catch {
            logger.error("cannot read the cameras' model assignments; no offers this pass", metadata: ["error": "\(error)"])
            return
        }
        let byCamera = Dictionary(rows.map { ($0.cameraId, $0) }) { $1 }
        metrics.pushPending.set(
            to: Double(byCamera.values.filter { $0.desiredVersion != nil && $0.desiredVersion != $0.installedVersion }.count))
        let (queued, running) = await training.counts()
        metrics.trainingQueued.set(to: Double(queued))
        metrics.trainingRunning.set(to: Double(running))
        for connection in server.activeConnections {
            guard let peer = connection.peer, peer.role == .agent, connection.wasWelcomed, !connection.isClosed,
                let camera = byCamera[peer.name], let desired = camera.desiredVersion
            else { continue }
            let key = ObjectIdentifier(connection)
            guard desired != camera.installedVersion else {
                // Settled: a later decision, even for a version offered before, is offered again.
                _ = offered.withLock { $0.removeValue(forKey: key) }
                continue
            }
            // One offer per decision: a new assignment (a push, a rollback) is offered even for the same version.
            let decision = camera.assignment ?? desired
            guard offered.withLock({ $0[key] }) != decision else { continue }
            let offer: Loupe_V1_ModelOffer
            do {
                offer = Self.offer(try await models.version(desired), camera: camera)
            } catch {
                logger.error("cannot offer a model", metadata: ["camera": "\(peer.name)", "version": "\(desired)", "error": "\(error)"])
                continue
            }
            offered.withLock { $0[key] = decision }
            logger.info("offering model", metadata: ["camera": "\(peer.name)", "version": "\(desired)"])
            do {
                try await connection.send(event: .modelOffer(offer))
                metrics.offers.increment()
            } catch {
                // The connection is going; the camera is offered again when it is back.
                forget(connection)
            }
        }
    }

    /// The offer of `version` to `camera`, with the camera's signed assignment.
    static func offer(_ version: ModelVersionRecord, camera: CameraModelRecord) -> Loupe_V1_ModelOffer {
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
        return offer
    }
}
