import Crypto
import Foundation
import GRDB
import LoupeImaging
import LoupeBench
import LoupeManager
import LoupeProto
import LoupeSegmentation
import LoupeStorage
import Testing

/// The manager's SQLite stores, directly.
@Suite struct ManagerStoreTests {
    func folder() throws -> String {
        let path = NSTemporaryDirectory() + "loupe-store-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Group commit: many uploads at once (with repeats) end as exactly one
    /// row per content hash, exactly one `true` per hash, and survive a reopen.
    @Test func concurrentUploadsAreStoredOncePerHashAndDurably() async throws {
        let dir = try folder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try TrainingDataStore(path: dir + "/training-data.sqlite")
        let uploads = try (0..<60).map { try FleetBenchmark.upload(side: 32, seed: UInt64($0)) }
        // Every upload three times, from three cameras, all at once.
        let results = try await withThrowingTaskGroup(of: (Int, Bool).self) { group in
            for round in 0..<3 {
                for (index, upload) in uploads.enumerated() {
                    group.addTask { (index, try await store.store(upload, from: "cam-\(round)")) }
                }
            }
            return try await group.reduce(into: [Int: [Bool]]()) { $0[$1.0, default: []].append($1.1) }
        }
        for index in uploads.indices { #expect(results[index]?.filter { $0 }.count == 1, "upload \(index): \(results[index] ?? [])") }
        #expect(try store.count() == 60)
        let reopened = try TrainingDataStore(path: dir + "/training-data.sqlite")
        #expect(try reopened.count() == 60)
        let stats = try reopened.statistics(inspectionType: "bench", validationFraction: 0.1)
        #expect(stats.count == 1 && stats[0].rois == 60 && stats[0].trainingRois + stats[0].validationRois == 60)
        #expect(stats[0].validationRois > 0, "60 ROIs: about 6 should fall on the validation side")
        #expect(stats[0].classRois == [60, 60] && stats[0].classNames == ["background", "scratch"])
        #expect(stats[0].cameraRois.values.reduce(0, +) == 60)
    }

    /// A bad upload is refused with its reason, and the store goes on storing.
    @Test func aBadUploadIsRefusedWithItsReason() async throws {
        let dir = try folder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try TrainingDataStore(path: dir + "/training-data.sqlite")
        var bad = try FleetBenchmark.upload(side: 32, seed: 1)
        bad.maskPng = Data(bad.maskPng.prefix(20))
        bad.contentSha256 = Data(SHA256.hash(data: bad.imagePng + bad.maskPng))
        let good = try FleetBenchmark.upload(side: 32, seed: 2)
        do {
            _ = try await store.store(bad, from: "cam-1")
            Issue.record("a truncated mask PNG was stored")
        } catch {
            guard case .invalid(let why) = error else { Issue.record("wrong error: \(error)"); return }
            #expect(why.contains("mask_png"), "\(why)")
        }
        let stored = try await store.store(good, from: "cam-1")
        #expect(stored)
        #expect(try store.count() == 1)
    }
}

extension ManagerStoreTests {
    /// A training-data file from before blob files (PNGs inline in the rows)
    /// is migrated on open: the PNGs become blob files, the rows name them,
    /// and the dataset reads the same pixels.
    @Test func inlinePNGsMoveToBlobFilesOnUpgrade() async throws {
        let dir = try folder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/training-data.sqlite"
        let upload = try FleetBenchmark.upload(side: 32, seed: 9)
        // The schema and migration records as migrations 1 and 2 left them, with one inline row.
        let queue = try DatabaseQueue(path: path)
        try await queue.write { db in
            try db.execute(sql: """
                CREATE TABLE roi (contentSHA256 TEXT PRIMARY KEY, cameraId TEXT NOT NULL, inspectionType TEXT NOT NULL, roiName TEXT NOT NULL,
                  capturedAt DATETIME NOT NULL, recipeVersion TEXT NOT NULL, templateSHA256 TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
                  labelledPixels INTEGER NOT NULL, classNames TEXT NOT NULL, imagePNG BLOB NOT NULL, maskPNG BLOB NOT NULL, receivedAt DATETIME NOT NULL,
                  classPixels TEXT);
                CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY);
                INSERT INTO grdb_migrations VALUES ('1 rois'), ('2 class pixel counts');
                """)
            try db.execute(sql: """
                INSERT INTO roi VALUES (?, 'cam-old', 'bench', 'roi', '2026-01-01 00:00:00.000', '1', '', 32, 32, 10, '["background","scratch"]', ?, ?, '2026-01-01 00:00:00.000', NULL)
                """, arguments: [upload.contentSha256.hexString, upload.imagePng, upload.maskPng])
        }
        try queue.close()
        let store = try TrainingDataStore(path: path)
        let blobs = try BlobStore(root: dir + "/blobs")
        #expect(FileManager.default.fileExists(atPath: blobs.path(for: BlobStore.hash(upload.imagePng))))
        #expect(FileManager.default.fileExists(atPath: blobs.path(for: BlobStore.hash(upload.maskPng))))
        let inline = try await DatabaseQueue(path: path).read { db in try Int.fetchOne(db, sql: "SELECT SUM(length(imagePNG) + length(maskPNG)) FROM roi") }
        #expect(inline == 0)
        let (dataset, classNames, _) = try store.dataset(inspectionType: "bench")
        #expect(dataset.items.count == 1 && classNames == ["background", "scratch"])
        #expect(dataset.items[0].image.samples == (try PNGCodec.decode(upload.imagePng).gray8.samples))
        #expect(try store.statistics(inspectionType: nil, validationFraction: 0.1).first?.classRois == [1, 1])
    }
}
