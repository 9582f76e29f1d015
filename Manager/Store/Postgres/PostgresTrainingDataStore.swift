import Foundation
import LoupeProto
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
        try await database.migrate("training-data", [
            ("1 rois", [
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
            ]),
        ])
    }

    private func failure(_ error: any Error) -> TrainingDataError {
        if let error = error as? TrainingDataError { return error }
        if PostgresDatabase.isDiskFull(error) { return .diskFull(database.description) }
        return .database("\(database.description): \(PostgresDatabase.describe(error))")
    }

    public func store(_ upload: Loupe_V1_RoiUpload, from cameraId: String) async throws(TrainingDataError) -> Bool {
        let row = try TrainingDataStore.validate(upload, from: cameraId)
        do {
            let inserted = try await database.client.query("""
                INSERT INTO roi (content_sha256, camera_id, inspection_type, roi_name, captured_at, recipe_version, template_sha256,
                                 width, height, labelled_pixels, class_names, class_pixels, received_at, image_png, mask_png)
                VALUES (\(row.contentSHA256), \(row.cameraId), \(row.inspectionType), \(row.roiName), \(row.capturedAt),
                        \(row.recipeVersion), \(row.templateSHA256), \(row.width), \(row.height), \(row.labelledPixels),
                        \(row.classNames), \(row.classPixels ?? "[]"), \(row.receivedAt), \(row.imagePNG), \(row.maskPNG))
                ON CONFLICT (content_sha256) DO NOTHING
                RETURNING content_sha256
                """, logger: database.logger)
            var stored = false
            for try await _ in inserted.decode(String.self) { stored = true }
            return stored
        } catch {
            throw failure(error)
        }
    }

    public func count(cameraId: String?, inspectionType: String?) async throws(TrainingDataError) -> Int {
        do {
            let rows = try await database.client.query("""
                SELECT count(*) FROM roi
                WHERE (\(cameraId)::text IS NULL OR camera_id = \(cameraId)) AND (\(inspectionType)::text IS NULL OR inspection_type = \(inspectionType))
                """, logger: database.logger)
            var count = 0
            for try await value in rows.decode(Int.self) { count = value }
            return count
        } catch {
            throw failure(error)
        }
    }

    public func inspectionTypes(cameraId: String) async throws(TrainingDataError) -> Set<String> {
        do {
            var types = Set<String>()
            let rows = try await database.client.query("SELECT DISTINCT inspection_type FROM roi WHERE camera_id = \(cameraId)", logger: database.logger)
            for try await type in rows.decode(String.self) { types.insert(type) }
            return types
        } catch {
            throw failure(error)
        }
    }

    public func dataset(inspectionType: String) async throws(TrainingDataError) -> (dataset: SegmentationDataset, classNames: [String], sha256: String) {
        var rows: [TrainingDataStore.DatasetRow] = []
        do {
            let found = try await database.client.query("""
                SELECT content_sha256, camera_id, class_names, received_at, image_png, mask_png FROM roi
                WHERE inspection_type = \(inspectionType) ORDER BY content_sha256
                """, logger: database.logger)
            for try await (hash, camera, names, received, image, mask) in found.decode((String, String, String, Date, Data, Data).self) {
                rows.append(.init(contentSHA256: hash, cameraId: camera, classNames: names, receivedAt: received) { (image, mask) })
            }
        } catch {
            throw failure(error)
        }
        return try TrainingDataStore.assemble(inspectionType: inspectionType, rows)
    }

    public func statistics(inspectionType: String?, validationFraction: Double) async throws(TrainingDataError) -> [Loupe_V1_DatasetStats] {
        var rows: [TrainingDataStore.StatisticsRow] = []
        do {
            let found = try await database.client.query("""
                SELECT content_sha256, camera_id, inspection_type, class_names, received_at, class_pixels FROM roi
                WHERE \(inspectionType)::text IS NULL OR inspection_type = \(inspectionType) ORDER BY content_sha256
                """, logger: database.logger)
            for try await (hash, camera, type, names, received, pixels) in found.decode((String, String, String, String, Date, String).self) {
                rows.append(.init(contentSHA256: hash, cameraId: camera, inspectionType: type, classNames: names, receivedAt: received, classPixels: pixels))
            }
        } catch {
            throw failure(error)
        }
        return try TrainingDataStore.summarise(rows, validationFraction: validationFraction) { (hash) throws(TrainingDataError) in
            throw .database("ROI \(hash.prefix(12)) has no class pixel counts")
        }
    }

    /// Content hashes held (for tests and audits).
    public func contentHashes() async throws(TrainingDataError) -> [String] {
        do {
            var hashes: [String] = []
            for try await hash in try await database.client.query("SELECT content_sha256 FROM roi ORDER BY content_sha256", logger: database.logger)
                .decode(String.self) {
                hashes.append(hash)
            }
            return hashes
        } catch {
            throw failure(error)
        }
    }
}
