import Foundation
import GRDB
public import LoupeProto
import SwiftProtobuf
import LoupeStorage

/// The cameras the manager has seen, kept across restarts (`fleet.sqlite`,
/// WAL): first and last seen, address, software, inspection type, model and
/// recipe, and the latest status report. A restarted manager lists every
/// camera it knew, offline until it reconnects. Reads and writes run off the
/// task pool (`BlockingIO`): with thousands of cameras a status write every
/// few seconds each would otherwise hold the pool's threads, and with them
/// every connection's heartbeats.
public final class FleetStore: Sendable {
    struct Row: Codable, FetchableRecord, PersistableRecord {
        static let databaseTableName = "camera"
        var cameraId: String
        var firstSeenUnixMs: Int64
        var lastSeenUnixMs: Int64
        var address: String
        var softwareVersion: String
        var inspectionType: String
        var modelVersion: String
        var recipeVersion: String
        /// The latest AgentStatus, serialized.
        var status: Data
    }

    private let pool: DatabasePool

    public init(path: String) throws {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("1 cameras") { db in
            try db.create(table: "camera") { t in
                t.primaryKey("cameraId", .text)
                t.column("firstSeenUnixMs", .integer).notNull()
                t.column("lastSeenUnixMs", .integer).notNull()
                t.column("address", .text).notNull()
                t.column("softwareVersion", .text).notNull()
                t.column("inspectionType", .text).notNull().indexed()
                t.column("modelVersion", .text).notNull()
                t.column("recipeVersion", .text).notNull()
                t.column("status", .blob).notNull()
            }
        }
        // Status is rewritten every few seconds: a lost last report on power loss is acceptable.
        pool = try SQLiteDatabase.open(path, durability: .normal, migrator: migrator)
    }

    /// Writes one camera's record.
    public func save(_ camera: Loupe_V1_CameraStatus) async throws {
        let row = Row(
            cameraId: camera.cameraID, firstSeenUnixMs: Int64(camera.firstSeenUnixMs), lastSeenUnixMs: Int64(camera.lastSeenUnixMs),
            address: camera.address, softwareVersion: camera.softwareVersion, inspectionType: camera.status.inspectionType,
            modelVersion: camera.status.modelVersion, recipeVersion: camera.status.recipeVersion,
            status: try camera.status.serializedData())
        let pool = self.pool
        try await BlockingIO.run { () throws in try pool.write { db in try row.save(db) } }
    }

    /// Every camera known, offline, as a restarted manager first sees them.
    public func load() async throws -> [Loupe_V1_CameraStatus] {
        let pool = self.pool
        return try await BlockingIO.run { () throws in try pool.read { db in try Row.fetchAll(db) } }.map { row in
            var camera = Loupe_V1_CameraStatus()
            camera.cameraID = row.cameraId
            camera.online = false
            camera.firstSeenUnixMs = UInt64(row.firstSeenUnixMs)
            camera.lastSeenUnixMs = UInt64(row.lastSeenUnixMs)
            camera.address = row.address
            camera.softwareVersion = row.softwareVersion
            camera.status = (try? Loupe_V1_AgentStatus(serializedBytes: row.status)) ?? Loupe_V1_AgentStatus()
            return camera
        }
    }

    /// Only this manager writes these files: what it stored is what it had in memory, offline.
    public func latest() async throws -> [Loupe_V1_CameraStatus] { try await load() }
}
