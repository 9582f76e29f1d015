import Foundation
import LoupeProto
import LoupeWire
import Synchronization

/// What the manager knows about each camera, keyed by the camera id in its
/// certificate. Kept in memory; the persistent fleet store comes with the
/// aggregation work (issue "Fleet manager").
public final class CameraRegistry: Sendable {
    private struct Entry {
        var status = Loupe_V1_CameraStatus()
        var connections = 0
    }

    private let entries = Mutex<[String: Entry]>([:])

    public init() {}

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
    }

    /// A camera sent its periodic report.
    public func report(cameraId: String, status: Loupe_V1_AgentStatus) {
        entries.withLock { entries in
            guard var entry = entries[cameraId] else { return }
            entry.status.status = status
            entry.status.lastSeenUnixMs = Date.unixMilliseconds
            entries[cameraId] = entry
        }
    }

    /// Every known camera, sorted by id.
    public func snapshot() -> [Loupe_V1_CameraStatus] {
        entries.withLock { $0.values.map(\.status) }.sorted { $0.cameraID < $1.cameraID }
    }
}
