import Crypto
public import Foundation
public import GRDB
public import LoupeImaging
public import LoupeStorage
import Synchronization

/// A record whose row id SQLite assigns at insertion: nil only before it is stored.
public protocol StoredRecord {
    static var databaseTableName: String { get }
    var id: Int64? { get }
}

extension StoredRecord {
    /// The row id of a record read from (or inserted into) the store.
    public func rowID() throws(StoreError) -> Int64 {
        guard let id else { throw .invalid("a \(Self.databaseTableName) record that was never stored") }
        return id
    }
}

public struct CaptureRecord: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord, StoredRecord {
    public static let databaseTableName = "capture"
    public var id: Int64?
    /// 1, 2, 3… in capture order: what the page's "go to capture" box takes.
    public var number: Int
    public var imageHash: String
    public var width: Int
    public var height: Int
    public var channels: Int
    /// "camera", "import:<file name>", "synthetic", …
    public var source: String
    public var capturedAt: Date
    public var inspectionType: String
    public var recipeVersion: Int

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

public struct ClassRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "defectClass"
    /// 1… (0 is background and is not stored).
    public var index: Int
    public var name: String
    public var color: UInt32

    public init(index: Int, name: String, color: UInt32) {
        self.index = index
        self.name = name
        self.color = color
    }
}

/// A labelled ROI of one capture: its mask and whether it goes into training.
public struct LabelRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "label"
    public var captureID: Int64
    public var roiName: String
    /// The ROI in template coordinates, as it was when labelled.
    public var roiX: Int
    public var roiY: Int
    public var roiWidth: Int
    public var roiHeight: Int
    /// PNG of class indices, in the blob store.
    public var maskHash: String
    public var labelledPixels: Int
    public var includeInTraining: Bool
    public var updatedAt: Date
    public var updatedBy: String
}

/// One change, for "who edited what and when".
public struct EditRecord: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "edit"
    public var id: Int64?
    public var at: Date
    public var user: String
    public var action: String
    public var captureID: Int64?
    public var roiName: String?
    public var detail: String

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// A labelled ROI the manager has not acknowledged yet, frozen when it was
/// queued: its crop and mask (PNG blobs), the class names, recipe and
/// template it was labelled under. Later edits of the recipe or the classes
/// do not change what is sent. Its content hash is the wire's
/// `content_sha256` (SHA-256 of the crop PNG then the mask PNG), the one
/// identity of a labelled ROI on both sides, so sending it twice is harmless.
public struct OutboxRecord: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord, StoredRecord {
    public static let databaseTableName = "outbox"
    public var id: Int64?
    /// Hex SHA-256 of `cropHash`'s bytes then `maskHash`'s bytes.
    public var contentHash: String
    public var captureID: Int64
    public var roiName: String
    public var enqueuedAt: Date
    public var attempts: Int
    public var lastError: String?
    /// Blob of the ROI's crop of the capture, PNG.
    public var cropHash: String
    /// Blob of the mask, PNG.
    public var maskHash: String
    public var inspectionType: String
    public var recipeVersion: Int
    public var capturedAt: Date
    /// "background" then the defect classes, as labelled.
    public var classNames: [String]
    /// Hex SHA-256 of the recipe's alignment template image; empty when it has none.
    public var templateSHA256: String

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// The agent's local store: SQLite through GRDB in WAL mode with
/// `synchronous=FULL`, plus content-addressed files for images and masks.
/// A call that returns has committed: a `kill -9` or power cut afterwards
/// loses nothing it reported.
public final class LabelStore: Sendable {
    public let directory: String
    public let blobs: BlobStore
    /// Tells open streams that their session ended (sign-out, new password, user removed).
    public let sessionEvents = SessionEvents()
    private let pool: DatabasePool
    /// Crop blobs already cut, by capture image and rectangle. A stroke on a ticked ROI queues it again
    /// with the same crop; blobs are never deleted, so a hash here stays good. Bounded: cleared when full.
    private let crops = Mutex<[String: String]>([:])
    /// The current recipe as last read or saved: every stroke and ROI request needs it, and only this store writes it
    /// (one agent process per data folder), so it is read from SQLite once.
    private let currentRecipe = Mutex<Recipe?>(nil)
    /// The defect classes as last read or set, for the same reason.
    private let currentClasses = Mutex<[ClassRecord]?>(nil)

    public init(directory: String) throws(StoreError) {
        self.directory = directory
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            blobs = try BlobStore(root: directory + "/blobs")
            pool = try SQLiteDatabase.open(directory + "/labels.sqlite", durability: .full, migrator: Self.migrator)
            try freezeOutbox()
        } catch let error as StoreError {
            throw error
        } catch {
            throw .database("\(error)")
        }
    }

    /// Numbered migrations. Released ones are never edited; changes get a new one.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("1 captures, classes, labels, edits, outbox") { db in
            try db.create(table: "capture") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("number", .integer).notNull().unique()
                t.column("imageHash", .text).notNull()
                t.column("width", .integer).notNull()
                t.column("height", .integer).notNull()
                t.column("channels", .integer).notNull()
                t.column("source", .text).notNull()
                t.column("capturedAt", .datetime).notNull()
                t.column("inspectionType", .text).notNull()
                t.column("recipeVersion", .integer).notNull()
            }
            try db.create(table: "defectClass") { t in
                t.primaryKey("index", .integer)
                t.column("name", .text).notNull().unique()
                t.column("color", .integer).notNull()
            }
            try db.create(table: "label") { t in
                t.column("captureID", .integer).notNull().references("capture", onDelete: .cascade)
                t.column("roiName", .text).notNull()
                t.column("roiX", .integer).notNull()
                t.column("roiY", .integer).notNull()
                t.column("roiWidth", .integer).notNull()
                t.column("roiHeight", .integer).notNull()
                t.column("maskHash", .text).notNull()
                t.column("labelledPixels", .integer).notNull()
                t.column("includeInTraining", .boolean).notNull()
                t.column("updatedAt", .datetime).notNull()
                t.column("updatedBy", .text).notNull()
                t.primaryKey(["captureID", "roiName"])
            }
            try db.create(table: "edit") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("at", .datetime).notNull()
                t.column("user", .text).notNull()
                t.column("action", .text).notNull()
                t.column("captureID", .integer)
                t.column("roiName", .text)
                t.column("detail", .text).notNull()
            }
            try db.create(table: "outbox") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("contentHash", .text).notNull().unique()
                t.column("captureID", .integer).notNull()
                t.column("roiName", .text).notNull()
                t.column("enqueuedAt", .datetime).notNull()
                t.column("attempts", .integer).notNull().defaults(to: 0)
                t.column("lastError", .text)
            }
            try db.create(table: "setting") { t in
                t.primaryKey("key", .text)
                t.column("value", .text).notNull()
            }
        }
        migrator.registerMigration("2 recipes") { db in
            try db.create(table: "recipe") { t in
                t.primaryKey("version", .integer)
                t.column("json", .text).notNull()
                t.column("createdAt", .datetime).notNull()
                t.column("createdBy", .text).notNull()
            }
        }
        migrator.registerMigration("3 users and sessions") { db in
            try db.create(table: "user") { t in
                t.primaryKey("name", .text)
                t.column("role", .text).notNull()
                t.column("salt", .blob).notNull()
                t.column("hash", .blob).notNull()
                t.column("costLog2", .integer).notNull()
                t.column("createdAt", .datetime).notNull()
                t.column("passwordChangedAt", .datetime).notNull()
            }
            try db.create(table: "session") { t in
                t.primaryKey("tokenHash", .text)
                t.column("user", .text).notNull().indexed().references("user", onDelete: .cascade)
                t.column("createdAt", .datetime).notNull()
                t.column("expiresAt", .datetime).notNull()
            }
        }
        migrator.registerMigration("4 frozen outbox") { db in
            // Items queued before this are frozen from their labels at open (`freezeOutbox`).
            try db.alter(table: "outbox") { t in
                t.add(column: "cropHash", .text).notNull().defaults(to: "")
                t.add(column: "maskHash", .text).notNull().defaults(to: "")
                t.add(column: "inspectionType", .text).notNull().defaults(to: "")
                t.add(column: "recipeVersion", .integer).notNull().defaults(to: 0)
                t.add(column: "capturedAt", .datetime).notNull().defaults(to: Date(timeIntervalSince1970: 0))
                t.add(column: "classNames", .text).notNull().defaults(to: "[]")
                t.add(column: "templateSHA256", .text).notNull().defaults(to: "")
            }
        }
        return migrator
    }

    /// A write transaction, run by GRDB on its writer's own queue while the calling task waits suspended: a commit
    /// (`synchronous=FULL`, an fsync) never holds a thread of the Swift task pool.
    func write<T: Sendable>(_ body: @Sendable (Database) throws -> T) async throws(StoreError) -> T {
        do { return try await pool.write(body) } catch { throw SQLiteDatabase.failure(error, path: directory + "/labels.sqlite") }
    }

    /// A read, on one of GRDB's reader queues (WAL: reads never wait for the writer).
    func read<T: Sendable>(_ body: @Sendable (Database) throws -> T) async throws(StoreError) -> T {
        do { return try await pool.read(body) } catch { throw SQLiteDatabase.failure(error, path: directory + "/labels.sqlite") }
    }

    // MARK: Captures

    /// An image as it is stored: its encoded bytes (PNG or JPEG) and what they decode to.
    public struct EncodedImage: Sendable {
        public var bytes: Data
        public var width: Int
        public var height: Int
        /// 1 (grey) or 3 (RGB).
        public var channels: Int

        public init(bytes: Data, width: Int, height: Int, channels: Int) {
            (self.bytes, self.width, self.height, self.channels) = (bytes, width, height, channels)
        }
    }

    /// Stores an encoded image as the next capture, taken from `source` at `date` under the recipe named.
    public func addCapture(
        _ image: EncodedImage, source: String, at date: Date = Date(), inspectionType: String, recipeVersion: Int, user: String
    ) async throws(StoreError) -> CaptureRecord {
        let (width, height, channels) = (image.width, image.height, image.channels)
        guard width > 0, height > 0, [1, 3].contains(channels) else { throw .invalid("capture of \(width)x\(height)x\(channels)") }
        let hash = try await BlockingIO.run { [blobs] () throws(StoreError) in try blobs.put(image.bytes) }
        return try await write { db in
            let next = (try Int.fetchOne(db, sql: "SELECT MAX(number) FROM capture") ?? 0) + 1
            var record = CaptureRecord(
                id: nil, number: next, imageHash: hash, width: width, height: height, channels: channels, source: source, capturedAt: date,
                inspectionType: inspectionType, recipeVersion: recipeVersion)
            try record.insert(db)
            var edit = EditRecord(id: nil, at: date, user: user, action: "capture", captureID: record.id, roiName: nil, detail: source)
            try edit.insert(db)
            return record
        }
    }

    public func capture(number: Int) async throws(StoreError) -> CaptureRecord {
        guard let record = try await read({ db in try CaptureRecord.filter(Column("number") == number).fetchOne(db) }) else {
            throw .notFound("capture \(number)")
        }
        return record
    }

    public func capture(id: Int64) async throws(StoreError) -> CaptureRecord {
        guard let record = try await read({ db in try CaptureRecord.fetchOne(db, key: id) }) else { throw .notFound("capture id \(id)") }
        return record
    }

    public func captures(offset: Int = 0, limit: Int = 100) async throws(StoreError) -> [CaptureRecord] {
        try await read { db in try CaptureRecord.order(Column("number")).limit(limit, offset: offset).fetchAll(db) }
    }

    public func captureCount() async throws(StoreError) -> Int {
        try await read { db in try CaptureRecord.fetchCount(db) }
    }

    public func image(of capture: CaptureRecord) async throws(StoreError) -> Data {
        try await BlockingIO.run { [blobs] () throws(StoreError) in try blobs.get(capture.imageHash) }
    }

    // MARK: Classes

    /// The defect classes, 1… in order; held once read or set, like the recipe (a stroke needs them).
    public func classes() async throws(StoreError) -> [ClassRecord] {
        if let held = currentClasses.withLock({ $0 }) { return held }
        let classes = try await read { db in try ClassRecord.order(Column("index")).fetchAll(db) }
        currentClasses.withLock { $0 = $0 ?? classes }
        return classes
    }

    /// How many values an ROI's mask may hold: background (0) and each class.
    public func maskValues() async throws(StoreError) -> Int { try await classes().count + 1 }

    /// Replaces the defect classes (indices 1…N in order).
    public func setClasses(_ classes: [ClassRecord], user: String) async throws(StoreError) {
        guard classes.enumerated().allSatisfy({ $0.offset + 1 == $0.element.index }) else {
            throw .invalid("class indices must be 1…N in order")
        }
        if let problem = ClassNames.problem(with: classes.map(\.name)) { throw .invalid(problem) }
        try await write { db in
            try ClassRecord.deleteAll(db)
            for record in classes { try record.insert(db) }
            var edit = EditRecord(
                id: nil, at: Date(), user: user, action: "classes", captureID: nil, roiName: nil,
                detail: classes.map(\.name).joined(separator: ", "))
            try edit.insert(db)
        }
        currentClasses.withLock { $0 = classes }
    }

    // MARK: Labels

    /// Saves an ROI's mask (class index per pixel) for a capture, with who did
    /// it. If the ROI is included in training, this version joins the outbox.
    @discardableResult
    public func saveMask(
        captureNumber: Int, roi: (name: String, rect: PixelRect), mask: Image8, classes: Int, inspectionType: String? = nil, user: String,
        action: String = "mask"
    ) async throws(StoreError) -> LabelRecord {
        let capture = try await capture(number: captureNumber)
        let (hash, labelled) = try await BlockingIO.run { [blobs] () throws(StoreError) in
            let (png, labelled) = try Self.encoded(mask, roi: roi, classes: classes)
            return (try blobs.put(png), labelled)
        }
        return try await write { db in
            try self.record(
                (hash, labelled), capture: capture, roi: roi, entry: EditEntry(user: user, action: action),
                existing: try LabelRecord.fetchOne(db, key: ["captureID": try capture.rowID(), "roiName": roi.name]), db: db)
        }
    }

    /// An ROI's mask after an edit, its label, and what the edit said of itself.
    public struct MaskEdit<Outcome: Sendable>: Sendable {
        public var label: LabelRecord
        public var mask: Image8
        /// The mask as stored (PNG).
        public var png: Data
        /// What the edit returned (the wand: how many pixels it selected).
        public var outcome: Outcome
    }

    /// The one way an ROI's mask is edited (strokes, the wand, the mask
    /// tools): its current mask is read, changed by `edit` and saved with the
    /// edit's record inside one SQLite write, so two editors of one ROI never
    /// lose an edit. An ROI with no mask yet, or resized since its mask was
    /// drawn (the old mask belongs to another rectangle), starts from an
    /// empty one. The whole edit (decode, change, encode, blob, rows) runs on
    /// GRDB's writer queue, not on the task pool.
    /// `note` goes before the labelled pixel count in the edit log (where a mask came from).
    @discardableResult
    public func editMask<Outcome: Sendable>(
        captureNumber: Int, roi: RecipeROI, classes: Int, user: String, action: String, note: String? = nil,
        _ edit: @Sendable (inout Image8) throws(StoreError) -> Outcome
    ) async throws(StoreError) -> MaskEdit<Outcome> {
        let capture = try await capture(number: captureNumber)
        let blank = try Self.emptyMask(for: roi)
        return try await write { db in
            var mask = blank
            let existing = try LabelRecord.fetchOne(db, key: ["captureID": try capture.rowID(), "roiName": roi.name])
            if let existing, existing.roiWidth == roi.rect.width, existing.roiHeight == roi.rect.height {
                mask = try self.decodedMask(of: existing)
            }
            let outcome = try edit(&mask)
            let (png, labelled) = try Self.encoded(mask, roi: (roi.name, roi.rect), classes: classes)
            // The blob before the row that names it, as everywhere.
            let hash = try blobs.put(png)
            let label = try self.record(
                (hash, labelled), capture: capture, roi: (roi.name, roi.rect), entry: EditEntry(user: user, action: action, note: note),
                existing: existing, db: db)
            return MaskEdit(label: label, mask: mask, png: png, outcome: outcome)
        }
    }

    /// A mask checked against its ROI and classes, as PNG, with its labelled pixel count.
    private static func encoded(
        _ mask: Image8, roi: (name: String, rect: PixelRect), classes: Int
    ) throws(StoreError) -> (png: Data, labelled: Int) {
        guard mask.channels == 1, mask.width == roi.rect.width, mask.height == roi.rect.height else {
            throw .invalid("mask is \(mask.width)x\(mask.height), ROI \(roi.name) is \(roi.rect.width)x\(roi.rect.height)")
        }
        if let worst = mask.samples.max(), Int(worst) >= classes { throw .invalid("mask value \(worst) is beyond the \(classes) classes") }
        do {
            return (try PNGCodec.encode(mask), mask.samples.reduce(0) { $0 + ($1 == 0 ? 0 : 1) })
        } catch {
            throw .invalid("mask does not encode: \(error)")
        }
    }

    /// Who made an edit, what it was, and where its mask came from, for the edit log.
    private struct EditEntry {
        var user: String
        var action: String
        var note: String?
    }

    /// Saves an ROI's label row naming a stored mask (its blob's hash and labelled pixels; replacing `existing`, the
    /// row read in this transaction), with its edit record and, when ticked, its outbox entry.
    private func record(
        _ stored: (maskHash: String, labelled: Int), capture: CaptureRecord, roi: (name: String, rect: PixelRect), entry: EditEntry,
        existing: LabelRecord?, db: Database
    ) throws -> LabelRecord {
        let (maskHash, labelled, user, action, note) = (stored.maskHash, stored.labelled, entry.user, entry.action, entry.note)
        let record = LabelRecord(
            captureID: try capture.rowID(), roiName: roi.name, roiX: roi.rect.x, roiY: roi.rect.y, roiWidth: roi.rect.width,
            roiHeight: roi.rect.height,
            maskHash: maskHash, labelledPixels: labelled, includeInTraining: existing?.includeInTraining ?? false, updatedAt: Date(),
            updatedBy: user)
        try record.save(db)
        var edit = EditRecord(
            id: nil, at: record.updatedAt, user: user, action: action, captureID: capture.id, roiName: roi.name,
            detail: (note.map { $0 + ", " } ?? "") + "\(labelled) labelled pixels")
        try edit.insert(db)
        if record.includeInTraining { try enqueue(record, capture: capture, db: db) }
        return record
    }

    public func label(captureNumber: Int, roiName: String) async throws(StoreError) -> LabelRecord? {
        let capture = try await capture(number: captureNumber)
        return try await read { db in try LabelRecord.fetchOne(db, key: ["captureID": try capture.rowID(), "roiName": roiName]) }
    }

    public func labels(captureNumber: Int? = nil, includedOnly: Bool = false) async throws(StoreError) -> [LabelRecord] {
        var captureID: Int64?
        if let captureNumber { captureID = try await capture(number: captureNumber).rowID() }
        return try await read { [captureID] db in
            var request = LabelRecord.all()
            if let captureID { request = request.filter(Column("captureID") == captureID) }
            if includedOnly { request = request.filter(Column("includeInTraining") == true) }
            return try request.order(Column("captureID"), Column("roiName")).fetchAll(db)
        }
    }

    public func mask(of label: LabelRecord) async throws(StoreError) -> Image8 {
        try await BlockingIO.run { () throws(StoreError) in try self.decodedMask(of: label) }
    }

    /// A label's mask, read and decoded on the calling thread (inside a transaction or on `BlockingIO`).
    private func decodedMask(of label: LabelRecord) throws(StoreError) -> Image8 {
        let data = try blobs.get(label.maskHash)
        do { return try PNGCodec.decode(data).gray8 } catch {
            throw .io(path: blobs.path(for: label.maskHash), reason: "mask does not decode: \(error)")
        }
    }

    /// The ROI checkbox: only ticked ROIs go into training (and to the manager).
    public func setIncluded(captureNumber: Int, roiName: String, included: Bool, user: String) async throws(StoreError) {
        let capture = try await capture(number: captureNumber)
        try await write { db in
            guard var record = try LabelRecord.fetchOne(db, key: ["captureID": try capture.rowID(), "roiName": roiName]) else {
                throw StoreError.notFound("label of ROI \(roiName) on capture \(captureNumber) (draw before ticking)")
            }
            record.includeInTraining = included
            record.updatedAt = Date()
            record.updatedBy = user
            try record.update(db)
            var edit = EditRecord(
                id: nil, at: record.updatedAt, user: user, action: included ? "include" : "exclude", captureID: capture.id,
                roiName: roiName, detail: "")
            try edit.insert(db)
            if included {
                try enqueue(record, capture: capture, db: db)
            } else {
                // Unticked before it was sent: it no longer goes to the manager.
                try db.execute(sql: "DELETE FROM outbox WHERE captureID = ? AND roiName = ?", arguments: [capture.id, roiName])
            }
        }
    }

    public func edits(limit: Int = 100) async throws(StoreError) -> [EditRecord] {
        try await read { db in try EditRecord.order(Column("id").desc).limit(limit).fetchAll(db) }
    }

    // MARK: Outbox

    /// The content hash naming one version of a labelled ROI.
    /// The content hash of a labelled ROI: the wire's `content_sha256`, in hex.
    public static func contentHash(cropPNG: Data, maskPNG: Data) -> String {
        var hasher = SHA256()
        hasher.update(data: cropPNG)
        hasher.update(data: maskPNG)
        return hasher.finalize().hexString
    }

    /// Queues a ticked label, frozen as it is now (`OutboxRecord`), inside the caller's write.
    private func enqueue(_ label: LabelRecord, capture: CaptureRecord, db: Database) throws {
        let item = try frozen(label, capture: capture, db: db)
        // The same version twice is one item; a newer version replaces an unsent older one.
        try db.execute(
            sql: "DELETE FROM outbox WHERE captureID = ? AND roiName = ? AND contentHash != ?",
            arguments: [capture.id, label.roiName, item.contentHash])
        guard try OutboxRecord.filter(Column("contentHash") == item.contentHash).fetchCount(db) == 0 else { return }
        var row = item
        try row.insert(db)
    }

    /// A label as the outbox holds it: the crop cut and stored now (blob before row), the mask's blob,
    /// the classes and the recipe's template as they are in this transaction.
    private func frozen(_ label: LabelRecord, capture: CaptureRecord, db: Database) throws -> OutboxRecord {
        let cropHash = try crop(
            of: capture, PixelRect(x: label.roiX, y: label.roiY, width: label.roiWidth, height: label.roiHeight), roiName: label.roiName)
        let cropPNG = try blobs.get(cropHash), maskPNG = try blobs.get(label.maskHash)
        let classes = try ClassRecord.order(Column("index")).fetchAll(db)
        var template = ""
        if let reference = try Self.recipe(db).referenceCapture,
            let hash = try String.fetchOne(db, sql: "SELECT imageHash FROM capture WHERE number = ?", arguments: [reference])
        {
            template = hash
        }
        return OutboxRecord(
            id: nil, contentHash: Self.contentHash(cropPNG: cropPNG, maskPNG: maskPNG), captureID: try capture.rowID(),
            roiName: label.roiName,
            enqueuedAt: Date(), attempts: 0, lastError: nil, cropHash: cropHash, maskHash: label.maskHash,
            inspectionType: capture.inspectionType, recipeVersion: capture.recipeVersion, capturedAt: capture.capturedAt,
            classNames: ["background"] + classes.map(\.name), templateSHA256: template)
    }

    /// The blob of a capture's crop to `rect` (grey or RGB as the capture is), PNG; cut once per capture and rectangle.
    private func crop(of capture: CaptureRecord, _ rect: PixelRect, roiName: String) throws -> String {
        let key = "\(capture.imageHash) \(rect.x),\(rect.y),\(rect.width)x\(rect.height)"
        if let hash = crops.withLock({ $0[key] }) { return hash }
        let image: DecodedImage
        do { image = try ImageFile.decode(try blobs.get(capture.imageHash)) } catch let error as StoreError { throw error } catch {
            throw StoreError.io(path: blobs.path(for: capture.imageHash), reason: "capture \(capture.number) does not decode: \(error)")
        }
        let png: Data
        do {
            let crop: Image8 = if case .rgb8(let rgb) = image { try rgb.cropped(to: rect) } else { try image.gray8.cropped(to: rect) }
            png = try PNGCodec.encode(crop)
        } catch {
            throw StoreError.invalid("ROI \(roiName) of capture \(capture.number): \(error)")
        }
        let hash = try blobs.put(png)
        crops.withLock { table in
            if table.count >= 256 { table.removeAll() }
            table[key] = hash
        }
        return hash
    }

    /// Freezes items queued by a version before the outbox held them frozen (migration 4), from their
    /// labels as they are now; an item whose label is gone goes (nothing to send).
    private func freezeOutbox() throws {
        try pool.write { db in
            for var item in try OutboxRecord.filter(Column("cropHash") == "").fetchAll(db) {
                guard let capture = try CaptureRecord.fetchOne(db, key: item.captureID),
                    let label = try LabelRecord.fetchOne(db, key: ["captureID": item.captureID, "roiName": item.roiName])
                else {
                    try item.delete(db)
                    continue
                }
                var frozen = try self.frozen(label, capture: capture, db: db)
                (frozen.id, frozen.enqueuedAt, frozen.attempts, frozen.lastError) = (
                    item.id, item.enqueuedAt, item.attempts, item.lastError
                )
                item = frozen
                try item.update(db)
            }
        }
    }

    public func outbox(limit: Int = 100) async throws(StoreError) -> [OutboxRecord] {
        try await read { db in try OutboxRecord.order(Column("id")).limit(limit).fetchAll(db) }
    }

    public func outboxDepth() async throws(StoreError) -> Int {
        try await read { db in try OutboxRecord.fetchCount(db) }
    }

    /// The next outbox items, oldest first.
    public func pendingUploads(limit: Int, skipping: Set<Int64> = []) async throws(StoreError) -> [OutboxRecord] {
        try await read { db in
            var request = OutboxRecord.order(Column("id"))
            if !skipping.isEmpty { request = request.filter(!skipping.contains(Column("id"))) }
            return try request.limit(limit).fetchAll(db)
        }
    }

    /// Notes a failed upload attempt on an outbox item.
    public func recordAttempt(outboxID: Int64, error: String) async throws(StoreError) {
        try await write { db in
            try db.execute(sql: "UPDATE outbox SET attempts = attempts + 1, lastError = ? WHERE id = ?", arguments: [error, outboxID])
        }
    }

    /// The manager stored this version durably: drop it from the outbox.
    public func acknowledge(contentHash: String) async throws(StoreError) {
        try await write { db in _ = try OutboxRecord.filter(Column("contentHash") == contentHash).deleteAll(db) }
    }

    // MARK: Recipe

    /// The current recipe (version 0, empty, until one is saved).
    public func recipe() async throws(StoreError) -> Recipe {
        if let held = currentRecipe.withLock({ $0 }) { return held }
        let recipe = try await read { db in try Self.recipe(db) }
        currentRecipe.withLock { $0 = $0 ?? recipe }
        return recipe
    }

    /// The current recipe, read inside a transaction.
    static func recipe(_ db: Database) throws -> Recipe {
        guard let json = try String.fetchOne(db, sql: "SELECT json FROM recipe ORDER BY version DESC LIMIT 1") else { return Recipe() }
        do { return try JSONDecoder().decode(Recipe.self, from: Data(json.utf8)) } catch {
            throw StoreError.database("stored recipe does not decode: \(error)")
        }
    }

    /// Saves `recipe` as the next version and returns it with that version.
    @discardableResult
    public func saveRecipe(_ recipe: Recipe, user: String) async throws(StoreError) -> Recipe {
        try recipe.validate()
        let saved = try await write { db in
            let next = (try Int.fetchOne(db, sql: "SELECT MAX(version) FROM recipe") ?? 0) + 1
            var saved = recipe
            saved.version = next
            let json = String(decoding: try JSONEncoder().encode(saved), as: UTF8.self)
            try db.execute(
                sql: "INSERT INTO recipe (version, json, createdAt, createdBy) VALUES (?, ?, ?, ?)", arguments: [next, json, Date(), user])
            var edit = EditRecord(
                id: nil, at: Date(), user: user, action: "recipe", captureID: nil, roiName: nil,
                detail: "version \(next): \(saved.rois.count) ROIs, threshold \(saved.confidenceThreshold)")
            try edit.insert(db)
            return saved
        }
        currentRecipe.withLock { $0 = saved }
        return saved
    }

    /// An all-background mask the size of an ROI.
    public static func emptyMask(for roi: RecipeROI) throws(StoreError) -> Image8 {
        do { return try Image8(width: roi.rect.width, height: roi.rect.height) } catch { throw .invalid("ROI \(roi.name): \(error)") }
    }

    /// Applies brush and eraser strokes to an ROI's mask and saves it (`editMask`).
    @discardableResult
    public func applyStrokes(
        _ strokes: [Stroke], captureNumber: Int, roi: RecipeROI, classes: Int, user: String
    ) async throws(StoreError) -> MaskEdit<Void> {
        try await editMask(captureNumber: captureNumber, roi: roi, classes: classes, user: user, action: "strokes") {
            mask throws(StoreError) in
            try MaskPainter.apply(strokes, to: &mask, classes: classes)
        }
    }

    /// Checks SQLite's own consistency (for tests and `loupe agent check`).
    public func integrityCheck() async throws(StoreError) -> String {
        try await read { db in try String.fetchOne(db, sql: "PRAGMA integrity_check") ?? "no answer" }
    }
}
