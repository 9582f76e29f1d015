import Foundation
import Logging
public import LoupeProto
import LoupeWire
import PostgresNIO
import SwiftProtobuf

/// The cameras the manager has seen (`FleetStoring`) in PostgreSQL: the same
/// record as `FleetStore`'s SQLite row, one per camera id, written by
/// whichever manager the camera is connected to.
public final class PostgresFleetStore: Sendable {
    private let database: PostgresDatabase

    public init(database: PostgresDatabase) async throws {
        self.database = database
        try await database.migrate(
            "fleet",
            [
                (
                    "1 cameras",
                    [
                        """
                        CREATE TABLE camera (
                            camera_id text PRIMARY KEY, first_seen_unix_ms bigint NOT NULL, last_seen_unix_ms bigint NOT NULL,
                            address text NOT NULL, software_version text NOT NULL, inspection_type text NOT NULL,
                            model_version text NOT NULL, recipe_version text NOT NULL, status bytea NOT NULL)
                        """,
                        "CREATE INDEX camera_inspection_type ON camera (inspection_type)",
                    ]
                ),
                (
                    "2 whether a manager holds the camera's connection",
                    [
                        "ALTER TABLE camera ADD COLUMN online boolean NOT NULL DEFAULT false"
                    ]
                ),
            ])
    }

    /// Writes one camera's record, as given (the registry decides first and last seen).
    public func save(_ camera: Loupe_V1_CameraStatus) async throws {
        let status: Data = try camera.status.serializedData()
        let logger = database.logger
        _ = try await database.run { client in
            try await client.query(
                """
                INSERT INTO camera (camera_id, first_seen_unix_ms, last_seen_unix_ms, address, software_version, inspection_type,
                                    model_version, recipe_version, status, online)
                VALUES (\(camera.cameraID), \(Int64(camera.firstSeenUnixMs)), \(Int64(camera.lastSeenUnixMs)), \(camera.address),
                        \(camera.softwareVersion), \(camera.status.inspectionType), \(camera.status.modelVersion),
                        \(camera.status.recipeVersion), \(status), \(camera.online))
                ON CONFLICT (camera_id) DO UPDATE SET
                    first_seen_unix_ms = EXCLUDED.first_seen_unix_ms, last_seen_unix_ms = EXCLUDED.last_seen_unix_ms,
                    address = EXCLUDED.address, software_version = EXCLUDED.software_version, inspection_type = EXCLUDED.inspection_type,
                    model_version = EXCLUDED.model_version, recipe_version = EXCLUDED.recipe_version, status = EXCLUDED.status,
                    online = EXCLUDED.online
                """, logger: logger)
        }
    }

    /// Every camera known, offline, as a restarted manager first sees them.
    public func load() async throws -> [Loupe_V1_CameraStatus] {
        try await cameras(online: false)
    }

    /// Every camera as last stored; online when its manager said so and stored it within `CameraRegistry.sharedOnlineWithin`
    /// (a manager that died holding a connection cannot say otherwise, so an old "online" is not believed).
    public func latest() async throws -> [Loupe_V1_CameraStatus] {
        try await cameras(online: true)
    }

    private func cameras(online asStored: Bool) async throws -> [Loupe_V1_CameraStatus] {
        let logger = database.logger
        let rows = try await database.run(within: .seconds(60)) { client in
            var rows: [(String, Int64, Int64, String, String, Data, Bool)] = []
            for try await row in try await client.query(
                """
                SELECT camera_id, first_seen_unix_ms, last_seen_unix_ms, address, software_version, status, online
                FROM camera ORDER BY camera_id
                """, logger: logger
            ).decode((String, Int64, Int64, String, String, Data, Bool).self) {
                rows.append(row)
            }
            return rows
        }
        let now = Date.unixMilliseconds
        let fresh = UInt64(CameraRegistry.sharedOnlineWithin.seconds * 1000)
        var cameras: [Loupe_V1_CameraStatus] = []
        for (id, first, last, address, software, status, online) in rows {
            var camera = Loupe_V1_CameraStatus()
            camera.cameraID = id
            camera.online = asStored && online && now <= UInt64(max(0, last)) + fresh
            camera.firstSeenUnixMs = UInt64(max(0, first))
            camera.lastSeenUnixMs = UInt64(max(0, last))
            camera.address = address
            camera.softwareVersion = software
            camera.status = (try? Loupe_V1_AgentStatus(serializedBytes: status)) ?? Loupe_V1_AgentStatus()
            cameras.append(camera)
        }
        return cameras
    }
}
