import Crypto
public import Foundation
public import GRDB
import LoupeImaging
public import LoupeProto
import LoupeSegmentation
import LoupeStorage
import Synchronization

/// Why the manager refused or failed to store an upload.
public enum TrainingDataError: Error, Equatable, CustomStringConvertible {
    case invalid(String)
    case database(String)
    case diskFull(String)

    public var description: String {
        switch self {
        case .invalid(let why): "invalid upload: \(why)"
        case .database(let why): "training-data database: \(why)"
        case .diskFull(let path): "disk full while writing \(path)"
        }
    }
}

/// One labelled ROI as the manager holds it.
public struct StoredROI: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "roi"
    public var contentSHA256: String
    public var cameraId: String
    public var inspectionType: String
    public var roiName: String
    public var capturedAt: Date
    public var recipeVersion: String
    public var templateSHA256: String
    public var width: Int
    public var height: Int
    public var labelledPixels: Int
    /// JSON array of class names, index = mask value.
    public var classNames: String
    /// The PNG bytes while an upload is being stored; empty in rows written
    /// since migration 3, whose image and mask are blob files named by
    /// `imageSHA256` and `maskSHA256`.
    public var imagePNG: Data
    public var maskPNG: Data
    public var receivedAt: Date
    /// Labelled pixels per class index (JSON array); nil for rows stored
    /// before migration 2, counted from the mask when asked.
    public var classPixels: String?
    /// SHA-256 (hex) of the image and mask blob files under `blobs/`.
    public var imageSHA256: String?
    public var maskSHA256: String?
}

/// The labelled ROIs every camera sent: SQLite (WAL, synchronous=FULL), one
/// row per content hash, so a repeated upload is stored once, with the image
/// and mask PNGs as content-addressed blob files (`blobs/`, beside the
/// database) written durably before the row that names them. An upload is
/// acknowledged only after its transaction commits.
public final class TrainingDataStore: Sendable {
    public let path: String
    private let pool: DatabasePool
    private let blobs: BlobStore

    public init(path: String) throws(TrainingDataError) {
        self.path = path
        do {
            blobs = try BlobStore(root: (path as NSString).deletingLastPathComponent + "/blobs")
            pool = try SQLiteDatabase.open(path, durability: .full, migrator: Self.migrator(blobs: blobs))
        } catch {
            throw .database("\(path): \(error)")
        }
    }

    /// Numbered migrations. Released ones are never edited; changes get a new one.
    static func migrator(blobs: BlobStore) -> DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("1 rois") { db in
            try db.create(table: "roi") { t in
                t.primaryKey("contentSHA256", .text)
                t.column("cameraId", .text).notNull().indexed()
                t.column("inspectionType", .text).notNull().indexed()
                t.column("roiName", .text).notNull()
                t.column("capturedAt", .datetime).notNull()
                t.column("recipeVersion", .text).notNull()
                t.column("templateSHA256", .text).notNull()
                t.column("width", .integer).notNull()
                t.column("height", .integer).notNull()
                t.column("labelledPixels", .integer).notNull()
                t.column("classNames", .text).notNull()
                t.column("imagePNG", .blob).notNull()
                t.column("maskPNG", .blob).notNull()
                t.column("receivedAt", .datetime).notNull()
            }
        }
        migrator.registerMigration("2 class pixel counts") { db in
            try db.alter(table: "roi") { t in t.add(column: "classPixels", .text) }
        }
        migrator.registerMigration("3 blob files") { db in
            try db.alter(table: "roi") { t in
                t.add(column: "imageSHA256", .text)
                t.add(column: "maskSHA256", .text)
            }
            // Earlier rows held the PNGs inline: write them out (durably, before this commits) and empty the columns.
            let rows = try Row.fetchCursor(db, sql: "SELECT contentSHA256, imagePNG, maskPNG FROM roi")
            var moved: [(String, String, String)] = []
            while let row = try rows.next() {
                let image: Data = row["imagePNG"], mask: Data = row["maskPNG"]
                moved.append((row["contentSHA256"], try blobs.put(image), try blobs.put(mask)))
            }
            for (content, image, mask) in moved {
                try db.execute(
                    sql: "UPDATE roi SET imageSHA256 = ?, maskSHA256 = ?, imagePNG = X'', maskPNG = X'' WHERE contentSHA256 = ?",
                    arguments: [image, mask, content])
            }
        }
        return migrator
    }

    /// Uploads waiting for the next commit, and whether a caller is writing.
    private struct Committer {
        var queue: [(row: StoredROI, done: CheckedContinuation<Result<Bool, TrainingDataError>, Never>)] = []
        var writing = false
    }
    private let committer = Mutex(Committer())
    private let writer = DispatchQueue(label: "loupe.training-data.commit")

    /// Checks and stores an upload; returns false when it was already held.
    /// It returns only after the transaction holding it has committed.
    /// Uploads that arrive while a commit is under way are written together
    /// in the next transaction (group commit: one fsync for many ROIs).
    public func store(_ upload: Loupe_V1_RoiUpload, from cameraId: String) async throws(TrainingDataError) -> Bool {
        let row = try Self.validate(upload, from: cameraId)
        let result = await withCheckedContinuation { (done: CheckedContinuation<Result<Bool, TrainingDataError>, Never>) in
            let leads = committer.withLock { state in
                state.queue.append((row, done))
                if state.writing { return false }
                state.writing = true
                return true
            }
            // The commit (and its fsync) runs on the store's own queue, not on a task's thread.
            if leads { writer.async { self.commitQueued() } }
        }
        return try result.get()
    }

    /// Writes queued uploads, a transaction per batch, until none are left.
    private func commitQueued() {
        while true {
            let batch = committer.withLock { state in
                let batch = state.queue
                state.queue = []
                if batch.isEmpty { state.writing = false }
                return batch
            }
            if batch.isEmpty { return }
            // Blob files first, each durable before the transaction that names it.
            var rows: [StoredROI?] = []
            var failures: [Int: TrainingDataError] = [:]
            for (index, entry) in batch.enumerated() {
                do {
                    var row = entry.row
                    row.imageSHA256 = try blobs.put(row.imagePNG)
                    row.maskSHA256 = try blobs.put(row.maskPNG)
                    row.imagePNG = Data()
                    row.maskPNG = Data()
                    rows.append(row)
                } catch {
                    failures[index] = if case .diskFull(let path) = error { .diskFull(path) } else { .database("\(error)") }
                    rows.append(nil)
                }
            }
            let outcome: Result<[Bool], TrainingDataError>
            do {
                outcome = .success(
                    try pool.write { db in
                        try rows.map { row in
                            guard let row else { return false }
                            if try StoredROI.exists(db, key: row.contentSHA256) { return false }
                            try row.insert(db)
                            return true
                        }
                    })
            } catch {
                let failure: TrainingDataError =
                    if case .diskFull = SQLiteDatabase.failure(error, path: path) { .diskFull(path) } else { .database("\(error)") }
                outcome = .failure(failure)
            }
            for (index, entry) in batch.enumerated() {
                if let failure = failures[index] {
                    entry.done.resume(returning: .failure(failure))
                } else {
                    entry.done.resume(returning: outcome.map { $0[index] })
                }
            }
        }
    }

    static func validate(_ upload: Loupe_V1_RoiUpload, from cameraId: String) throws(TrainingDataError) -> StoredROI {
        guard upload.contentSha256.count == 32 else { throw .invalid("content_sha256 must be 32 bytes, not \(upload.contentSha256.count)") }
        var hasher = SHA256()
        hasher.update(data: upload.imagePng)
        hasher.update(data: upload.maskPng)
        let actual = Data(hasher.finalize())
        guard actual == upload.contentSha256 else {
            throw .invalid("content_sha256 does not match the image and mask bytes (corrupted in transit?)")
        }
        for (field, value) in [("inspection_type", upload.inspectionType), ("roi_name", upload.roiName)] {
            guard FleetName.isValid(value) else {
                throw .invalid(FleetName.refusal(field, value))
            }
        }
        guard upload.classNames.count >= 2, upload.classNames.count <= 255 else {
            throw .invalid("class_names must name background and at least one defect class (2…255 names), not \(upload.classNames.count)")
        }
        if let problem = ClassNames.problem(with: upload.classNames) { throw .invalid("class_names: \(problem)") }
        let image: DecodedImage, mask: DecodedImage
        // An ROI and its mask: at most 4096 on a side, not a whole frame's 100 Mpx.
        do { image = try PNGCodec.decode(upload.imagePng, limits: .roi) } catch { throw .invalid("image_png: \(error)") }
        do { mask = try PNGCodec.decode(upload.maskPng, limits: .roi) } catch { throw .invalid("mask_png: \(error)") }
        guard case .gray8(let classes) = mask else { throw .invalid("mask_png must be 8-bit grey (one class index per pixel)") }
        guard classes.width == image.width, classes.height == image.height else {
            throw .invalid("mask is \(classes.width)x\(classes.height), image is \(image.width)x\(image.height)")
        }
        if let worst = classes.samples.max(), Int(worst) >= upload.classNames.count {
            throw .invalid("mask value \(worst) has no class name (\(upload.classNames.count) names)")
        }
        let names = String(decoding: (try? JSONEncoder().encode(upload.classNames)) ?? Data("[]".utf8), as: UTF8.self)
        return StoredROI(
            contentSHA256: actual.hexString, cameraId: cameraId, inspectionType: upload.inspectionType,
            roiName: upload.roiName, capturedAt: Date(timeIntervalSince1970: Double(upload.capturedAtUnixMs) / 1000),
            recipeVersion: upload.recipeVersion, templateSHA256: upload.templateSha256.hexString,
            width: image.width, height: image.height, labelledPixels: classes.samples.reduce(0) { $0 + ($1 == 0 ? 0 : 1) },
            classNames: names, imagePNG: upload.imagePng, maskPNG: upload.maskPng, receivedAt: Date(),
            classPixels: Self.classPixelsJSON(classes.samples, classes: upload.classNames.count))
    }

    static func classPixelsJSON(_ mask: [UInt8], classes: Int) -> String {
        var counts = [Int](repeating: 0, count: max(classes, Int(mask.max() ?? 0) + 1))
        for value in mask { counts[Int(value)] += 1 }
        return String(decoding: (try? JSONEncoder().encode(counts)) ?? Data("[]".utf8), as: UTF8.self)
    }

    /// The inspection types a camera has sent ROIs for.
    public func inspectionTypes(cameraId: String) async throws(TrainingDataError) -> Set<String> {
        try await BlockingIO.run { () throws(TrainingDataError) in
            do {
                return Set(
                    try self.pool.read { db in
                        try String.fetchAll(db, sql: "SELECT DISTINCT inspectionType FROM roi WHERE cameraId = ?", arguments: [cameraId])
                    })
            } catch {
                throw .database("\(error)")
            }
        }
    }

    /// How many ROIs are held: in all, per camera, per inspection type.
    public func count(cameraId: String?, inspectionType: String?) async throws(TrainingDataError) -> Int {
        try await BlockingIO.run { () throws(TrainingDataError) in
            do {
                return try self.pool.read { db in
                    var request = StoredROI.all()
                    if let cameraId { request = request.filter(Column("cameraId") == cameraId) }
                    if let inspectionType { request = request.filter(Column("inspectionType") == inspectionType) }
                    return try request.fetchCount(db)
                }
            } catch {
                throw .database("\(error)")
            }
        }
    }

    public func datasetHead(inspectionType: String) async throws(TrainingDataError) -> DatasetHead? {
        try await BlockingIO.run { () throws(TrainingDataError) in
            do {
                return try self.pool.read { db -> DatasetHead? in
                    let count = try StoredROI.filter(Column("inspectionType") == inspectionType).fetchCount(db)
                    guard count > 0,
                        let names = try String.fetchOne(
                            db,
                            sql: """
                                SELECT classNames FROM roi WHERE inspectionType = ? ORDER BY receivedAt DESC, contentSHA256 LIMIT 1
                                """, arguments: [inspectionType])
                    else { return nil }
                    return DatasetHead(rois: count, classNamesJSON: names)
                }
            } catch {
                throw .database("\(error)")
            }
        }
    }

    public func datasetPage(inspectionType: String, after: String?, limit: Int) async throws(TrainingDataError) -> [DatasetPiece] {
        let (pool, blobs) = (self.pool, self.blobs)
        return try await BlockingIO.run { () throws(TrainingDataError) in
            let rows: [StoredROI]
            do {
                rows = try pool.read { db in
                    try StoredROI.filter(Column("inspectionType") == inspectionType && Column("contentSHA256") > (after ?? ""))
                        .order(Column("contentSHA256")).limit(limit).fetchAll(db)
                }
            } catch {
                throw .database("\(error)")
            }
            return try rows.map { (row) throws(TrainingDataError) -> DatasetPiece in
                do {
                    return DatasetPiece(
                        contentSHA256: row.contentSHA256, cameraId: row.cameraId,
                        imagePNG: try row.imageSHA256.map { try blobs.get($0) } ?? row.imagePNG,
                        maskPNG: try row.maskSHA256.map { try blobs.get($0) } ?? row.maskPNG)
                } catch {
                    throw .database("ROI \(row.contentSHA256.prefix(12)): its PNG blob cannot be read: \(error)")
                }
            }
        }
    }

    /// What is held per inspection type: ROIs, the split, per-class ROIs
    /// and pixels, ROIs per camera. Reads no image bytes; masks only of rows
    /// stored before per-class counts were kept.
    public func statistics(inspectionType: String?, validationFraction: Double) async throws(TrainingDataError) -> [Loupe_V1_DatasetStats] {
        try await BlockingIO.run { () throws(TrainingDataError) in
            let rows: [StatisticsRow]
            do {
                rows = try self.pool.read { db in
                    var sql = "SELECT contentSHA256, cameraId, inspectionType, classNames, receivedAt, classPixels FROM roi"
                    var arguments: StatementArguments = []
                    if let inspectionType { sql += " WHERE inspectionType = ?"; arguments = [inspectionType] }
                    return try StatisticsRow.fetchAll(db, sql: sql + " ORDER BY contentSHA256", arguments: arguments)
                }
            } catch {
                throw .database("\(error)")
            }
            return try Self.summarise(rows, validationFraction: validationFraction) { (hash) throws(TrainingDataError) in
                try self.maskClassPixels(hash)
            }
        }
    }

    /// What the statistics read of one ROI (no image bytes).
    struct StatisticsRow: Decodable, FetchableRecord {
        var contentSHA256: String, cameraId: String, inspectionType: String, classNames: String, receivedAt: Date, classPixels: String?
    }

    /// Per inspection type: ROIs, the split, per-class ROIs and pixels, ROIs per camera, class names and the dataset
    /// hash, from rows sorted by content hash, whichever database they came from. `counted` gives the per-class
    /// pixel counts of a row stored before they were kept.
    static func summarise(
        _ rows: [StatisticsRow], validationFraction: Double,
        counted: (String) throws(TrainingDataError) -> String
    ) throws(TrainingDataError) -> [Loupe_V1_DatasetStats] {
        var byType: [String: Loupe_V1_DatasetStats] = [:]
        var newestNames: [String: (Date, String)] = [:]
        var hashers: [String: SHA256] = [:]
        var perType: [String: Int] = [:]
        for row in rows { perType[row.inspectionType, default: 0] += 1 }
        for row in rows {
            var stats = byType[row.inspectionType] ?? Loupe_V1_DatasetStats()
            stats.inspectionType = row.inspectionType
            stats.rois += 1
            if SegmentationDataset.isValidation(
                name: row.contentSHA256, fraction: perType[row.inspectionType, default: 0] >= 10 ? validationFraction : 0)
            {
                stats.validationRois += 1
            } else {
                stats.trainingRois += 1
            }
            stats.cameraRois[row.cameraId, default: 0] += 1
            let json: String
            if let known = row.classPixels { json = known } else { json = try counted(row.contentSHA256) }
            let pixels = (try? JSONDecoder().decode([Int].self, from: Data(json.utf8))) ?? []
            if stats.classPixels.count < pixels.count {
                stats.classPixels += [UInt64](repeating: 0, count: pixels.count - stats.classPixels.count)
                stats.classRois += [UInt64](repeating: 0, count: pixels.count - stats.classRois.count)
            }
            for (index, count) in pixels.enumerated() where count > 0 {
                stats.classPixels[index] += UInt64(count)
                stats.classRois[index] += 1
            }
            let received = UInt64(max(0, row.receivedAt.timeIntervalSince1970 * 1000))
            stats.newestUploadUnixMs = max(stats.newestUploadUnixMs, received)
            if (newestNames[row.inspectionType]?.0 ?? .distantPast) <= row.receivedAt {
                newestNames[row.inspectionType] = (row.receivedAt, row.classNames)
            }
            hashers[row.inspectionType, default: SHA256()].update(data: Data(row.contentSHA256.utf8))
            byType[row.inspectionType] = stats
        }
        return byType.sorted { $0.key < $1.key }.map { type, summary in
            var stats = summary
            stats.classNames = newestNames[type].flatMap { try? JSONDecoder().decode([String].self, from: Data($0.1.utf8)) } ?? []
            if let hasher = hashers[type] { stats.datasetSha256 = Data(hasher.finalize()) }
            return stats
        }
    }

    private func maskClassPixels(_ contentSHA256: String) throws(TrainingDataError) -> String {
        do {
            guard
                let row = try pool.read({ db in
                    try Row.fetchOne(db, sql: "SELECT maskSHA256, maskPNG FROM roi WHERE contentSHA256 = ?", arguments: [contentSHA256])
                })
            else { return "[]" }
            let hash: String? = row["maskSHA256"]
            let png: Data = try hash.map { try blobs.get($0) } ?? row["maskPNG"]
            return Self.classPixelsJSON(try PNGCodec.decode(png).gray8.samples, classes: 0)
        } catch {
            throw .database("ROI \(contentSHA256.prefix(12)): \(error)")
        }
    }

    /// Up to `limit` rows after content hash `after` (in hash order), each with its PNG bytes and class pixel
    /// counts filled in: what `loupe manager migrate` copies.
    public func export(after: String?, limit: Int) async throws(TrainingDataError) -> [StoredROI] {
        try await BlockingIO.run { () throws(TrainingDataError) in
            let rows: [StoredROI]
            do {
                rows = try self.pool.read { db in
                    try StoredROI.filter(Column("contentSHA256") > (after ?? "")).order(Column("contentSHA256")).limit(limit).fetchAll(db)
                }
            } catch {
                throw .database("\(error)")
            }
            return try rows.map { (row) throws(TrainingDataError) -> StoredROI in
                var full = row
                do {
                    if let hash = row.imageSHA256 { full.imagePNG = try self.blobs.get(hash) }
                    if let hash = row.maskSHA256 { full.maskPNG = try self.blobs.get(hash) }
                } catch {
                    throw .database("ROI \(row.contentSHA256.prefix(12)): its PNG blob cannot be read: \(error)")
                }
                if full.classPixels == nil { full.classPixels = try self.maskClassPixels(row.contentSHA256) }
                return full
            }
        }
    }

    /// Content hashes held (for tests and audits).
    public func contentHashes() throws(TrainingDataError) -> [String] {
        do {
            return try pool.read { db in try String.fetchAll(db, sql: "SELECT contentSHA256 FROM roi ORDER BY contentSHA256") }
        } catch {
            throw .database("\(error)")
        }
    }
}
