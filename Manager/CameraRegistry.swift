import Foundation
public import Logging
public import LoupeProto
import LoupeWire
import Synchronization

/// What the manager knows about each camera, keyed by the camera id in its
/// certificate: in memory for the fleet query, and written through to the
/// fleet store (on connect and disconnect, and a camera's status at most
/// every `statusPersistInterval`), which seeds it after a restart.
public final class CameraRegistry: Sendable {
    private struct Entry {
        var status = Loupe_V1_CameraStatus()
        var connections = 0
        var persistedAt = ContinuousClock.Instant.now - .seconds(3600)
    }

    private let entries = Mutex<[String: Entry]>([:])
    /// Records to write, in the order they were made; one task writes them, so a handler never waits on the store.
    private let writes = Mutex<(queue: AsyncStream<Loupe_V1_CameraStatus>.Continuation, writer: Task<Void, Never>)?>(nil)
    public static let statusPersistInterval = Duration.seconds(10)
    /// How fresh a camera's stored "online" must be to be believed by another manager of a shared database:
    /// three status writes (a camera that reports stores at least every `statusPersistInterval`).
    public static let sharedOnlineWithin = statusPersistInterval * 3

    public init() {}

    /// Loads the cameras known before a restart (all offline) and writes through from now on.
    public func attach(_ fleet: any FleetStoring, logger: Logger) async throws {
        let known = try await fleet.load()
        entries.withLock { entries in
            for camera in known where entries[camera.cameraID] == nil { entries[camera.cameraID] = Entry(status: camera) }
        }
        let (records, queue) = AsyncStream.makeStream(of: Loupe_V1_CameraStatus.self)
        let writer = Task {
            for await record in records {
                do { try await fleet.save(record) } catch {
                    logger.warning("cannot store a camera's status", metadata: ["camera": "\(record.cameraID)", "error": "\(error)"])
                }
            }
        }
        writes.withLock { $0 = (queue, writer) }
    }

    /// Writes what is still queued and stops writing through.
    public func detach() async {
        guard
            let (queue, writer) = writes.withLock({ state in
                defer { state = nil }; return state
            })
        else { return }
        queue.finish()
        await writer.value
    }

    private func persist(_ cameraId: String, force: Bool) {
        guard let queue = writes.withLock({ $0?.queue }) else { return }
        let snapshot = entries.withLock { entries -> Loupe_V1_CameraStatus? in
            guard var entry = entries[cameraId] else { return nil }
            guard force || ContinuousClock.now - entry.persistedAt >= Self.statusPersistInterval else { return nil }
            entry.persistedAt = .now
            entries[cameraId] = entry
            return entry.status
        }
        if let snapshot { queue.yield(snapshot) }
    }

    /// A camera completed its handshake.
    public func connected(cameraId: String, address: String, softwareVersion: String) {
        let now = Date.unixMilliseconds
        entries.withLock { entries in
            var entry = entries[cameraId] ?? Entry()
            if entry.status.firstSeenUnixMs == 0 { entry.status.firstSeenUnixMs = now }
            entry.status.cameraID = cameraId
            entry.status.lastSeenUnixMs = now
            entry.status.address = address
            entry.status.softwareVersion = softwareVersion
            entry.connections += 1
            entry.status.online = true
            entries[cameraId] = entry
        }
        persist(cameraId, force: true)
    }

    /// A camera's connection ended.
    public func disconnected(cameraId: String) {
        entries.withLock { entries in
            guard var entry = entries[cameraId] else { return }
            entry.connections = max(0, entry.connections - 1)
            entry.status.online = entry.connections > 0
            entry.status.lastSeenUnixMs = Date.unixMilliseconds
            entries[cameraId] = entry
        }
        persist(cameraId, force: true)
    }

    /// A camera sent its periodic report.
    public func report(cameraId: String, status: Loupe_V1_AgentStatus) {
        entries.withLock { entries in
            guard var entry = entries[cameraId] else { return }
            // A new inspection type, model or recipe is written at once; plain reports every few seconds.
            let old = entry.status.status
            if old.inspectionType != status.inspectionType || old.modelVersion != status.modelVersion
                || old.recipeVersion != status.recipeVersion
            {
                entry.persistedAt = .now - .seconds(3600)
            }
            entry.status.status = status
            entry.status.lastSeenUnixMs = Date.unixMilliseconds
            entries[cameraId] = entry
        }
        persist(cameraId, force: false)
    }

    /// Every known camera, sorted by id.
    public func snapshot() -> [Loupe_V1_CameraStatus] {
        entries.withLock { $0.values.map(\.status) }.sorted { $0.cameraID < $1.cameraID }
    }

    /// The fleet as this manager should answer for it: its own cameras, and, with a store other managers share,
    /// every camera not connected here as the store last had it (online on another manager, or offline). The one
    /// view behind fleet queries, push targets and rollout judgements.
    public func view(sharedWith fleet: (any FleetStoring)?) async throws -> [Loupe_V1_CameraStatus] {
        let here = snapshot()
        guard let fleet else { return here }
        var merged = Dictionary(uniqueKeysWithValues: here.map { ($0.cameraID, $0) })
        for camera in try await fleet.latest() where merged[camera.cameraID]?.online != true {
            merged[camera.cameraID] = camera
        }
        return merged.values.sorted { $0.cameraID < $1.cameraID }
    }
}
