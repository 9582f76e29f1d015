import Crypto
import Foundation
import GRDB
import LoupeImaging
import LoupeProto
import LoupeSegmentation

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
    public var imagePNG: Data
    public var maskPNG: Data
    public var receivedAt: Date
}

/// The labelled ROIs every camera sent: SQLite (WAL, synchronous=FULL), one
/// row per content hash, so a repeated upload is stored once. An upload is
/// acknowledged only after its transaction commits.
public final class TrainingDataStore: Sendable {
    public let path: String
    private let pool: DatabasePool

    public init(path: String) throws(TrainingDataError) {
        self.path = path
        do {
            pool = try ManagerDatabase.open(path, durability: .full, migrator: Self.migrator)
        } catch {
            throw .database("\(path): \(error)")
        }
    }

    /// Numbered migrations. Released ones are never edited; changes get a new one.
    static var migrator: DatabaseMigrator {
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
        return migrator
    }

    /// Checks and stores an upload. Returns false when it was already held.
    public func store(_ upload: Loupe_V1_RoiUpload, from cameraId: String) throws(TrainingDataError) -> Bool {
        let row = try Self.validate(upload, from: cameraId)
        do {
            return try pool.write { db in
                if try StoredROI.exists(db, key: row.contentSHA256) { return false }
                try row.insert(db)
                return true
            }
        } catch let error as DatabaseError where error.resultCode == .SQLITE_FULL {
            throw .diskFull(path)
        } catch {
            throw .database("\(error)")
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
            guard !value.isEmpty, value.count <= 64, value.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "._-".unicodeScalars.contains($0)) }) else {
                throw .invalid("\(field) \"\(value.prefix(80))\" must be 1–64 letters, digits, '.', '_' or '-'")
            }
        }
        guard upload.classNames.count >= 2, upload.classNames.count <= 255 else {
            throw .invalid("class_names must name background and at least one defect class (2…255 names), not \(upload.classNames.count)")
        }
        let image: DecodedImage, mask: DecodedImage
        do { image = try PNGCodec.decode(upload.imagePng) } catch { throw .invalid("image_png: \(error)") }
        do { mask = try PNGCodec.decode(upload.maskPng) } catch { throw .invalid("mask_png: \(error)") }
        guard case .gray8(let classes) = mask else { throw .invalid("mask_png must be 8-bit grey (one class index per pixel)") }
        guard classes.width == image.width, classes.height == image.height else {
            throw .invalid("mask is \(classes.width)x\(classes.height), image is \(image.width)x\(image.height)")
        }
        if let worst = classes.samples.max(), Int(worst) >= upload.classNames.count {
            throw .invalid("mask value \(worst) has no class name (\(upload.classNames.count) names)")
        }
        let names = String(decoding: (try? JSONEncoder().encode(upload.classNames)) ?? Data("[]".utf8), as: UTF8.self)
        return StoredROI(
            contentSHA256: actual.map { String(format: "%02x", $0) }.joined(), cameraId: cameraId, inspectionType: upload.inspectionType,
            roiName: upload.roiName, capturedAt: Date(timeIntervalSince1970: Double(upload.capturedAtUnixMs) / 1000),
            recipeVersion: upload.recipeVersion, templateSHA256: upload.templateSha256.map { String(format: "%02x", $0) }.joined(),
            width: image.width, height: image.height, labelledPixels: classes.samples.reduce(0) { $0 + ($1 == 0 ? 0 : 1) },
            classNames: names, imagePNG: upload.imagePng, maskPNG: upload.maskPng, receivedAt: Date())
    }

    /// How many ROIs are held, in all or per camera.
    public func count(cameraId: String? = nil) throws(TrainingDataError) -> Int {
        do {
            return try pool.read { db in
                var request = StoredROI.all()
                if let cameraId { request = request.filter(Column("cameraId") == cameraId) }
                return try request.fetchCount(db)
            }
        } catch {
            throw .database("\(error)")
        }
    }

    /// Every ROI of an inspection type as training images, named by content
    /// hash (so the train/validation split, made by name hash, stays put as
    /// data grows), with the class names of the newest upload.
    public func dataset(inspectionType: String) throws(TrainingDataError) -> (dataset: SegmentationDataset, classNames: [String], sha256: String) {
        let rows: [StoredROI]
        do {
            rows = try pool.read { db in
                try StoredROI.filter(Column("inspectionType") == inspectionType).order(Column("contentSHA256")).fetchAll(db)
            }
        } catch {
            throw .database("\(error)")
        }
        guard let newest = rows.max(by: { $0.receivedAt < $1.receivedAt }) else {
            throw .invalid("no labelled ROIs of inspection type \(inspectionType) have been uploaded")
        }
        let classNames = (try? JSONDecoder().decode([String].self, from: Data(newest.classNames.utf8))) ?? []
        var items: [LabelledImage] = []
        var hasher = SHA256()
        for row in rows {
            do {
                let image = try PNGCodec.decode(row.imagePNG).gray8
                let mask = try PNGCodec.decode(row.maskPNG).gray8
                items.append(try LabelledImage(name: row.contentSHA256, image: image, mask: mask, classes: classNames.count))
                hasher.update(data: Data(row.contentSHA256.utf8))
            } catch {
                throw .invalid("stored ROI \(row.contentSHA256.prefix(12)) from \(row.cameraId): \(error)")
            }
        }
        let digest = hasher.finalize().map { String(format: "%02x", $0) }.joined()
        return (SegmentationDataset(items: items, classes: classNames.count), classNames, digest)
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
