import Crypto
import Foundation
import LoupeBench
import LoupeManager
import LoupeProto
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
