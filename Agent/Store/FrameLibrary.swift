public import Foundation
public import GRDB
import LoupeImaging
public import LoupeStorage
import LoupeVision
import Synchronization

/// One kept frame: the inspection record and where its image is.
public struct LibraryFrame: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "frame"
    public var id: Int64?
    public var sequence: Int
    public var capturedAt: Date
    /// "pass", "fail", "notAligned" or "noModel", as the inspection said.
    public var verdict: String
    /// Why it was kept: "fail", "unsure" or "sample".
    public var reason: String
    /// 0…1: how close the frame's most confident defect pixel came to the
    /// threshold (1: on it; 0: at least the margin away); the Review order.
    public var unsure: Double
    /// The defect classes found, by name, comma-separated (for filtering).
    public var classes: String
    public var modelVersion: String
    public var recipeVersion: Int
    public var threshold: Double
    public var alignScore: Double?
    /// The per-ROI results, JSON.
    public var rois: String
    public var width: Int
    public var height: Int
    /// The JPEG in the library's own blob folder.
    public var imageHash: String
    public var bytes: Int
    /// The capture it became when imported for labelling.
    public var importedAs: Int?
    /// The trigger the frame answered (triggered cameras): its source and sequence number.
    public var triggerSource: String?
    public var triggerSequence: Int?
    /// How far the part moved and turned from the reference (recipes with an aligner).
    public var shiftX: Double?
    public var shiftY: Double?
    public var angleDegrees: Double?

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// What the Library keeps and for how long.
public struct LibraryPolicy: Codable, Sendable, Equatable {
    /// The most the kept images may take on disk, bytes.
    public var quotaBytes: Int = 512 << 20
    /// Frames older than this go, seconds.
    public var maxAgeSeconds: Double = 30 * 86_400
    /// A frame is unsure when its most confident defect pixel is within this of the threshold.
    public var unsureMargin: Double = 0.1
    /// One pass in this many is kept as a sample (0: none).
    public var passSampleEvery: Int = 100
    /// At most this many frames a minute are kept (the rest are counted, not kept).
    public var maxPerMinute: Int = 60
    public var jpegQuality: Int = 90

    public init() {}

    /// Any field left out of the agent config keeps its default.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let defaults = LibraryPolicy()
        quotaBytes = try c.decodeIfPresent(Int.self, forKey: .quotaBytes) ?? defaults.quotaBytes
        maxAgeSeconds = try c.decodeIfPresent(Double.self, forKey: .maxAgeSeconds) ?? defaults.maxAgeSeconds
        unsureMargin = try c.decodeIfPresent(Double.self, forKey: .unsureMargin) ?? defaults.unsureMargin
        passSampleEvery = try c.decodeIfPresent(Int.self, forKey: .passSampleEvery) ?? defaults.passSampleEvery
        maxPerMinute = try c.decodeIfPresent(Int.self, forKey: .maxPerMinute) ?? defaults.maxPerMinute
        jpegQuality = try c.decodeIfPresent(Int.self, forKey: .jpegQuality) ?? defaults.jpegQuality
        guard quotaBytes > 0, maxAgeSeconds > 0, (0...1).contains(unsureMargin), passSampleEvery >= 0, maxPerMinute >= 0,
            (1...100).contains(jpegQuality)
        else {
            throw DecodingError.dataCorrupted(
                .init(
                    codingPath: decoder.codingPath,
                    debugDescription:
                        "library: quotaBytes and maxAgeSeconds must be positive, unsureMargin 0…1, passSampleEvery and maxPerMinute at "
                        + "least 0, jpegQuality 1…100"
                ))
        }
    }
}

/// The camera's Library: a bounded store of inspected frames worth a look
/// (every failed frame, every frame the model was unsure about, a sample of
/// passes) with their inspection records, on the agent. Kept by age and by a
/// disk quota, oldest removed first, the quota never exceeded. The image is
/// written (fsync, rename) before the row that names it, and removed after
/// the row, so a `kill -9` leaves every row with its image (an image left
/// without a row is swept at the next open). Frames reach it from the live
/// pipeline through `offer`, which never blocks: a writer thread at the
/// page's priority encodes and stores them, and a full queue drops (counted).
public final class FrameLibrary: Sendable {
    public let directory: String
    public let policy: LibraryPolicy
    private let pool: DatabasePool
    private let images: BlobStore
    private struct Queue {
        var frames: [(CapturedFrameInput, InspectionResult, Double)] = []
        var passes = 0
        var keptThisMinute = 0
        var minute = 0
        var dropped = 0
        var closed = false
    }
    private let queue = Mutex(Queue())
    private let ready = DispatchSemaphore(value: 0)
    private let ended = DispatchSemaphore(value: 0)

    public static let queueCapacity = 4

    public init(directory: String, policy: LibraryPolicy = LibraryPolicy(), nice: Int32 = 0) throws(StoreError) {
        self.directory = directory
        self.policy = policy
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            images = try BlobStore(root: directory + "/frames")
        } catch {
            throw .io(path: directory, reason: "\(error)")
        }
        pool = try SQLiteDatabase.open(directory + "/library.sqlite", durability: .full, migrator: Self.migrator)
        try sweepOrphans()
        DedicatedThread.start("loupe-library") { [self] in
            PagePriority.lowerCurrentThread(to: nice)
            writerLoop()
        }
    }

    /// Numbered migrations. Released ones are never edited; changes get a new one.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("1 frames") { db in
            try db.create(table: "frame") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("sequence", .integer).notNull()
                t.column("capturedAt", .datetime).notNull().indexed()
                t.column("verdict", .text).notNull()
                t.column("reason", .text).notNull()
                t.column("unsure", .double).notNull()
                t.column("classes", .text).notNull()
                t.column("modelVersion", .text).notNull()
                t.column("recipeVersion", .integer).notNull()
                t.column("threshold", .double).notNull()
                t.column("alignScore", .double)
                t.column("rois", .text).notNull()
                t.column("width", .integer).notNull()
                t.column("height", .integer).notNull()
                t.column("imageHash", .text).notNull()
                t.column("bytes", .integer).notNull()
                t.column("importedAs", .integer)
            }
        }
        migrator.registerMigration("2 trigger") { db in
            try db.alter(table: "frame") { t in
                t.add(column: "triggerSource", .text)
                t.add(column: "triggerSequence", .integer)
            }
        }
        migrator.registerMigration("3 placement") { db in
            try db.alter(table: "frame") { t in
                t.add(column: "shiftX", .double)
                t.add(column: "shiftY", .double)
                t.add(column: "angleDegrees", .double)
            }
        }
        return migrator
    }

    /// The writer thread's own transactions (and the open's sweep): that thread is the Library's, so it may block.
    private func writeOnThisThread<T>(_ body: (Database) throws -> T) throws(StoreError) -> T {
        do { return try pool.write(body) } catch { throw SQLiteDatabase.failure(error, path: directory + "/library.sqlite") }
    }

    private func readOnThisThread<T>(_ body: (Database) throws -> T) throws(StoreError) -> T {
        do { return try pool.read(body) } catch { throw SQLiteDatabase.failure(error, path: directory + "/library.sqlite") }
    }

    /// Everyone else's (the page, the status report): on GRDB's queues while the calling task waits suspended.
    private func write<T: Sendable>(_ body: @Sendable (Database) throws -> T) async throws(StoreError) -> T {
        do { return try await pool.write(body) } catch { throw SQLiteDatabase.failure(error, path: directory + "/library.sqlite") }
    }

    private func read<T: Sendable>(_ body: @Sendable (Database) throws -> T) async throws(StoreError) -> T {
        do { return try await pool.read(body) } catch { throw SQLiteDatabase.failure(error, path: directory + "/library.sqlite") }
    }

    // MARK: What is kept

    /// Why a frame with this result at this threshold is kept, and how unsure
    /// the model was; nil reason when it is not kept (a pass outside the sample).
    public func judge(_ result: InspectionResult, threshold: Double, passNumber: Int) -> (reason: String?, unsure: Double) {
        let peak = Double(result.rois.map(\.maxConfidence).max() ?? 0)
        let unsure = policy.unsureMargin > 0 ? max(0, 1 - abs(peak - threshold) / policy.unsureMargin) : 0
        switch result.verdict {
        case .fail: return ("fail", unsure)
        case .pass where unsure > 0: return ("unsure", unsure)
        case .pass where policy.passSampleEvery > 0 && passNumber % policy.passSampleEvery == 0: return ("sample", unsure)
        default: return (nil, unsure)
        }
    }

    /// Hands an inspected frame to the Library; returns at once. Kept or not
    /// by `judge`, at most `maxPerMinute` a minute, dropped when the writer is behind.
    public func offer(_ frame: CapturedFrameInput, result: InspectionResult, threshold: Double) {
        guard result.verdict == .pass || result.verdict == .fail else { return }
        let accepted = queue.withLock { queue -> Bool in
            if result.verdict == .pass { queue.passes += 1 }
            guard judge(result, threshold: threshold, passNumber: queue.passes).reason != nil, !queue.closed else { return false }
            let minute = Int(frame.capturedAt.timeIntervalSince1970 / 60)
            if minute != queue.minute { queue.minute = minute; queue.keptThisMinute = 0 }
            guard queue.keptThisMinute < policy.maxPerMinute, queue.frames.count < Self.queueCapacity else {
                queue.dropped += 1
                return false
            }
            queue.keptThisMinute += 1
            queue.frames.append((frame, result, threshold))
            return true
        }
        if accepted { ready.signal() }
    }

    /// Frames offered and kept but not written yet, and frames not kept for the rate or a full queue.
    public var backlog: (queued: Int, dropped: Int) { queue.withLock { ($0.frames.count, $0.dropped) } }

    /// Stops the writer after what is queued.
    public func close() {
        let wasOpen = queue.withLock { queue -> Bool in
            defer { queue.closed = true }
            return !queue.closed
        }
        guard wasOpen else { return }
        ready.signal()
        ended.wait()
    }

    private func writerLoop() {
        while true {
            ready.wait()
            let next = queue.withLock { queue -> (CapturedFrameInput, InspectionResult, Double)?? in
                if !queue.frames.isEmpty { return .some(queue.frames.removeFirst()) }
                return queue.closed ? .none : .some(nil)
            }
            guard let item = next else { break }
            guard let (frame, result, threshold) = item else { continue }
            _ = try? keep(frame, result: result, threshold: threshold)
        }
        ended.signal()
    }

    /// Stores one frame now (the writer's work; tests call it directly).
    @discardableResult
    public func keep(_ frame: CapturedFrameInput, result: InspectionResult, threshold: Double) throws(StoreError) -> LibraryFrame {
        let (reason, unsure) = judge(result, threshold: threshold, passNumber: 0)
        let jpeg: Data
        do { jpeg = try JPEGCodec.encode(frame.image, quality: policy.jpegQuality) } catch {
            throw .invalid("frame does not encode: \(error)")
        }
        guard jpeg.count <= policy.quotaBytes else { throw .invalid("a \(jpeg.count)-byte frame is larger than the Library's whole quota") }
        let hash = try images.put(jpeg)
        let classes = Set(result.rois.flatMap { $0.defects.map(\.className) }).sorted().joined(separator: ",")
        let rois = String(decoding: (try? JSONEncoder().encode(result.rois)) ?? Data("[]".utf8), as: UTF8.self)
        var record = LibraryFrame(
            id: nil, sequence: result.sequence, capturedAt: frame.capturedAt, verdict: result.verdict.rawValue, reason: reason ?? "sample",
            unsure: unsure, classes: classes, modelVersion: result.modelVersion, recipeVersion: result.recipeVersion,
            threshold: threshold, alignScore: result.alignScore, rois: rois, width: frame.image.width, height: frame.image.height,
            imageHash: hash, bytes: jpeg.count, importedAs: nil,
            triggerSource: result.trigger?.source, triggerSequence: result.trigger?.sequence,
            shiftX: result.placement?.shiftX, shiftY: result.placement?.shiftY, angleDegrees: result.placement?.angleDegrees)
        let removed = try writeOnThisThread { db -> [String] in
            // Make room: by age, then oldest first until the new image fits the quota.
            var gone = try LibraryFrame.filter(Column("capturedAt") < frame.capturedAt.addingTimeInterval(-policy.maxAgeSeconds)).fetchAll(
                db)
            var total = (try Int.fetchOne(db, sql: "SELECT COALESCE(SUM(bytes), 0) FROM frame") ?? 0) - gone.reduce(0) { $0 + $1.bytes }
            let ids = Set(gone.compactMap(\.id))
            if total + jpeg.count > policy.quotaBytes {
                let oldest = try LibraryFrame.order(Column("capturedAt"), Column("id")).fetchCursor(db)
                while let old = try oldest.next(), total + jpeg.count > policy.quotaBytes {
                    guard !ids.contains(old.id ?? -1) else { continue }
                    gone.append(old)
                    total -= old.bytes
                }
            }
            for old in gone { _ = try old.delete(db) }
            try record.insert(db)
            // An image another row still names stays.
            return try gone.map(\.imageHash).filter { try LibraryFrame.filter(Column("imageHash") == $0).fetchCount(db) == 0 }
        }
        for hash in Set(removed) { unlink(images.path(for: hash)) }
        return record
    }

    // MARK: Reading

    public struct Filter: Sendable {
        public var verdict: String?
        public var reason: String?
        public var className: String?
        public var since: Date?
        public var until: Date?
        /// Review order: the most unsure first (otherwise newest first).
        public var review = false
        public var limit = 100
        public init() {}
    }

    public func frames(_ filter: Filter = Filter()) async throws(StoreError) -> [LibraryFrame] {
        try await read { db in
            var request = LibraryFrame.all()
            if let verdict = filter.verdict { request = request.filter(Column("verdict") == verdict) }
            if let reason = filter.reason { request = request.filter(Column("reason") == reason) }
            if let name = filter.className { request = request.filter(sql: "(',' || classes || ',') LIKE ?", arguments: ["%,\(name),%"]) }
            if let since = filter.since { request = request.filter(Column("capturedAt") >= since) }
            if let until = filter.until { request = request.filter(Column("capturedAt") <= until) }
            if filter.review {
                request = request.filter(Column("unsure") > 0).order(Column("unsure").desc, Column("capturedAt").desc)
            } else {
                request = request.order(Column("capturedAt").desc, Column("id").desc)
            }
            return try request.limit(max(1, min(1000, filter.limit))).fetchAll(db)
        }
    }

    public func frame(id: Int64) async throws(StoreError) -> LibraryFrame {
        guard let frame = try await read({ db in try LibraryFrame.fetchOne(db, key: id) }) else { throw .notFound("Library frame \(id)") }
        return frame
    }

    public func image(of frame: LibraryFrame) async throws(StoreError) -> Data {
        try await BlockingIO.run { [images] () throws(StoreError) in try images.get(frame.imageHash) }
    }

    /// Frames kept, the bytes their images take, and how many the model was unsure of.
    public struct Usage: Sendable {
        public var frames: Int
        public var bytes: Int
        public var unsure: Int
    }

    /// Frames kept and the bytes their images take.
    public func usage() async throws(StoreError) -> Usage {
        try await read { db in
            let row = try Row.fetchOne(db, sql: "SELECT COUNT(*), COALESCE(SUM(bytes), 0), COALESCE(SUM(unsure > 0), 0) FROM frame")
            return Usage(frames: row?[0] ?? 0, bytes: row?[1] ?? 0, unsure: row?[2] ?? 0)
        }
    }

    /// Records that frame `id` became capture `capture`.
    public func markImported(id: Int64, as capture: Int) async throws(StoreError) {
        try await write { db in try db.execute(sql: "UPDATE frame SET importedAs = ? WHERE id = ?", arguments: [capture, id]) }
    }

    /// Images no row names (a crash between the image and its row, or between a row's removal and its image's).
    private func sweepOrphans() throws(StoreError) {
        let named = Set(try readOnThisThread { db in try String.fetchAll(db, sql: "SELECT imageHash FROM frame") })
        guard let walker = FileManager.default.enumerator(atPath: images.root) else { return }
        while let relative = walker.nextObject() as? String {
            let name = (relative as NSString).lastPathComponent
            let path = images.root + "/" + relative
            if name.hasPrefix(".tmp-") || (name.count == 64 && !named.contains(name)) { unlink(path) }
        }
    }
}
