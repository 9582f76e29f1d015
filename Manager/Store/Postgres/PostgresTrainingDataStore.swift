import Foundation
import Logging
public import LoupeProto
import LoupeSegmentation
import PostgresNIO

/// The labelled ROIs every camera sent (`TrainingDataStoring`) in PostgreSQL:
/// one row per content hash with its image and mask PNGs in the row
/// (`bytea`), so the database holds everything a manager needs and any
/// manager of the plant may take an upload. The same checks as the SQLite
/// store (`TrainingDataStore.validate`); an upload is acknowledged only
/// after its transaction has committed (`synchronous_commit` on, the
/// server's default), and a repeat, from any manager, is stored once.
public final class PostgresTrainingDataStore: Sendable {
    private let database: PostgresDatabase

    public init(database: PostgresDatabase) async throws {
        self.database = database
        try await database.migrate(
            "training-data",
            [
                (
                    "1 rois",
                    [
                        """
                        CREATE TABLE roi (
                            content_sha256 text PRIMARY KEY, camera_id text NOT NULL, inspection_type text NOT NULL,
                            roi_name text NOT NULL, captured_at timestamptz NOT NULL, recipe_version text NOT NULL,
                            template_sha256 text NOT NULL, width bigint NOT NULL, height bigint NOT NULL,
                            labelled_pixels bigint NOT NULL, class_names text NOT NULL, class_pixels text NOT NULL,
                            received_at timestamptz NOT NULL, image_png bytea NOT NULL, mask_png bytea NOT NULL)
                        """,
                        "CREATE INDEX roi_camera ON roi (camera_id)",
                        "CREATE INDEX roi_inspection_type ON roi (inspection_type)",
                    ]
                )
            ])
    }

    /// Runs `body` on the pool within `limit`, every failure as a `TrainingDataError` naming the database.
    private func run<T: Sendable>(
        within limit: Duration? = nil,
        _ body: @escaping @Sendable (PostgresClient, Logger) async throws -> T
    ) async throws(TrainingDataError) -> T {
        let logger = database.logger
        do {
            return try await database.run(within: limit) { client in try await body(client, logger) }
        } catch let error as TrainingDataError {
            throw error
        } catch {
            if PostgresDatabase.isDiskFull(error) { throw .diskFull(database.description) }
            throw .database("\(database.description): \(PostgresDatabase.describe(error))")
        }
    }

    /// One row's insert, kept when its content hash is new: the upload path and the migration both write rows so.
    private static func insert(_ row: StoredROI) throws -> PostgresQuery {
        try """
        INSERT INTO roi (content_sha256, camera_id, inspection_type, roi_name, captured_at, recipe_version, template_sha256,
                         width, height, labelled_pixels, class_names, class_pixels, received_at, image_png, mask_png)
        VALUES (\(row.contentSHA256), \(row.cameraId), \(row.inspectionType), \(row.roiName), \(row.capturedAt),
                \(row.recipeVersion), \(row.templateSHA256), \(row.width), \(row.height), \(row.labelledPixels),
                \(row.classNames), \(row.classPixels ?? "[]"), \(row.receivedAt), \(row.imagePNG), \(row.maskPNG))
        ON CONFLICT (content_sha256) DO NOTHING
        RETURNING content_sha256
        """
    }

    public func store(_ upload: Loupe_V1_RoiUpload, from cameraId: String) async throws(TrainingDataError) -> Bool {
        let row = try TrainingDataStore.validate(upload, from: cameraId)
        return try await run { client, logger in
            let inserted = try await client.query(try Self.insert(row), logger: logger)
            var stored = false
            for try await _ in inserted.decode(String.self) { stored = true }
            return stored
        }
    }

    public func count(cameraId: String?, inspectionType: String?) async throws(TrainingDataError) -> Int {
        try await run { client, logger in
            let rows = try await client.query(
                """
                SELECT count(*) FROM roi
                WHERE (\(cameraId)::text IS NULL OR camera_id = \(cameraId)) AND (\(inspectionType)::text IS NULL OR inspection_type =
                  \(inspectionType))
                """, logger: logger)
            var count = 0
            for try await value in rows.decode(Int.self) { count = value }
            return count
        }
    }

    public func inspectionTypes(cameraId: String) async throws(TrainingDataError) -> Set<String> {
        try await run { client, logger in
            var types = Set<String>()
            let rows = try await client.query("SELECT DISTINCT inspection_type FROM roi WHERE camera_id = \(cameraId)", logger: logger)
            for try await type in rows.decode(String.self) { types.insert(type) }
            return types
        }
    }

    public func datasetHead(inspectionType: String) async throws(TrainingDataError) -> DatasetHead? {
        try await run { client, logger in
            var head: DatasetHead?
            let found = try await client.query(
                """
                SELECT (SELECT count(*) FROM roi WHERE inspection_type = \(inspectionType)), class_names FROM roi
                WHERE inspection_type = \(inspectionType) ORDER BY received_at DESC, content_sha256 COLLATE "C" LIMIT 1
                """, logger: logger)
            for try await (count, names) in found.decode((Int, String).self) { head = DatasetHead(rois: count, classNamesJSON: names) }
            return head
        }
    }

    /// One page; a page of 64 ROIs is a few MB, and a large set takes as many pages as it needs.
    public func datasetPage(inspectionType: String, after: String?, limit: Int) async throws(TrainingDataError) -> [DatasetPiece] {
        try await run(within: .seconds(120)) { client, logger in
            var pieces: [DatasetPiece] = []
            let found = try await client.query(
                """
                SELECT content_sha256, camera_id, image_png, mask_png FROM roi
                WHERE inspection_type = \(inspectionType) AND content_sha256 COLLATE "C" > \(after ?? "")
                ORDER BY content_sha256 COLLATE "C" LIMIT \(limit)
                """, logger: logger)
            for try await (hash, camera, image, mask) in found.decode((String, String, Data, Data).self) {
                pieces.append(DatasetPiece(contentSHA256: hash, cameraId: camera, imagePNG: image, maskPNG: mask))
            }
            return pieces
        }
    }

    public func statistics(inspectionType: String?, validationFraction: Double) async throws(TrainingDataError) -> [Loupe_V1_DatasetStats] {
        let rows = try await run(within: .seconds(60)) { client, logger in
            var rows: [TrainingDataStore.StatisticsRow] = []
            let found = try await client.query(
                """
                SELECT content_sha256, camera_id, inspection_type, class_names, received_at, class_pixels FROM roi
                WHERE \(inspectionType)::text IS NULL OR inspection_type = \(inspectionType) ORDER BY content_sha256 COLLATE "C"
                """, logger: logger)
            for try await (hash, camera, type, names, received, pixels) in found.decode((String, String, String, String, Date, String).self)
            {
                rows.append(
                    .init(
                        contentSHA256: hash, cameraId: camera, inspectionType: type, classNames: names, receivedAt: received,
                        classPixels: pixels))
            }
            return rows
        }
        return try TrainingDataStore.summarise(rows, validationFraction: validationFraction) { (hash) throws(TrainingDataError) in
            throw .database("ROI \(hash.prefix(12)) has no class pixel counts")
        }
    }

    /// Copies rows as they are (their received time and counts kept), in one transaction; rows already held are
    /// left alone. Returns how many were new. For `loupe manager migrate`.
    public func importRows(_ rows: [StoredROI]) async throws(TrainingDataError) -> Int {
        try await run(within: .seconds(120)) { client, logger in
            try await client.withTransaction(logger: logger) { connection in
                var inserted = 0
                for row in rows {
                    let result = try await connection.query(try Self.insert(row), logger: logger)
                    for try await _ in result.decode(String.self) { inserted += 1 }
                }
                return inserted
            }
        }
    }

    /// Up to `limit` content hashes after `after`, each with the SHA-256 of its stored image and mask bytes
    /// (computed by the server): a row whose two differ was damaged on the way.
    public func checkHashes(after: String?, limit: Int) async throws(TrainingDataError) -> [(held: String, computed: String)] {
        try await run(within: .seconds(120)) { client, logger in
            var found: [(String, String)] = []
            let rows = try await client.query(
                """
                SELECT content_sha256, encode(sha256(image_png || mask_png), 'hex') FROM roi
                WHERE content_sha256 COLLATE "C" > \(after ?? "") ORDER BY content_sha256 COLLATE "C" LIMIT \(limit)
                """, logger: logger)
            for try await row in rows.decode((String, String).self) { found.append(row) }
            return found
        }
    }

    /// Content hashes held (for tests and audits).
    public func contentHashes() async throws(TrainingDataError) -> [String] {
        try await run(within: .seconds(60)) { client, logger in
            var hashes: [String] = []
            for try await hash in try await client.query(
                "SELECT content_sha256 FROM roi ORDER BY content_sha256 COLLATE \"C\"", logger: logger
            ).decode(String.self) {
                hashes.append(hash)
            }
            return hashes
        }
    }
}
