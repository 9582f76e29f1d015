import Foundation
import GRDB
import LoupeAgent
import LoupeImaging
import LoupeStorage
import Testing

@Suite struct LabelStoreTests {
    static func temporaryDirectory() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("loupe-store-\(UUID().uuidString)").path
    }

    static func png(_ value: UInt8, size: Int = 16) throws -> Data {
        try PNGCodec.encode(try Image8(width: size, height: size, fill: value))
    }

    @Test func capturesLabelsAndTheOutboxFollowTheOperator() async throws {
        let dir = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try LabelStore(directory: dir)
        let first = try await store.addCapture(
            LabelStore.EncodedImage(bytes: try Self.png(10), width: 16, height: 16, channels: 1), source: "camera",
            inspectionType: "brake-disc", recipeVersion: 1,
            user: "ann")
        let second = try await store.addCapture(
            LabelStore.EncodedImage(bytes: try Self.png(20), width: 16, height: 16, channels: 1), source: "import:b.png",
            inspectionType: "brake-disc",
            recipeVersion: 1, user: "ann")
        #expect(first.number == 1 && second.number == 2)
        #expect(try await store.captureCount() == 2)
        #expect(try await store.image(of: try await store.capture(number: 2)) == (try Self.png(20)))

        let roi = (name: "hub", rect: PixelRect(x: 2, y: 2, width: 8, height: 8))
        var mask = try Image8(width: 8, height: 8)
        mask.samples[9] = 1
        let label = try await store.saveMask(captureNumber: 1, roi: roi, mask: mask, classes: 2, user: "ann")
        #expect(label.labelledPixels == 1 && !label.includeInTraining)
        // Drawing alone does not put the ROI into training or the outbox.
        #expect(try await store.outboxDepth() == 0)
        try await store.setIncluded(captureNumber: 1, roiName: "hub", included: true, user: "ann")
        #expect(try await store.outboxDepth() == 1)
        // Ticking again, or saving the same mask, does not double it.
        try await store.setIncluded(captureNumber: 1, roiName: "hub", included: true, user: "ann")
        try await store.saveMask(captureNumber: 1, roi: roi, mask: mask, classes: 2, user: "ann")
        #expect(try await store.outboxDepth() == 1)
        // A new version replaces the unsent one.
        mask.samples[10] = 1
        try await store.saveMask(captureNumber: 1, roi: roi, mask: mask, classes: 2, user: "bob")
        let pending = try await store.outbox()
        #expect(pending.count == 1)
        #expect(try await store.mask(of: try #require(try await store.label(captureNumber: 1, roiName: "hub"))) == mask)
        try await store.acknowledge(contentHash: pending[0].contentHash)
        #expect(try await store.outboxDepth() == 0)
        // Who did what, newest first.
        let edits = try await store.edits()
        #expect(edits.first?.user == "bob" && edits.first?.action == "mask")
        #expect(edits.contains { $0.action == "include" && $0.user == "ann" })
        #expect(try await store.integrityCheck() == "ok")
    }

    /// A ticked ROI is frozen when it is queued: its crop and mask, the class names and the recipe's
    /// template as they were; renaming a class afterwards changes nothing queued. Its content hash is
    /// the wire's (SHA-256 of the crop PNG, then the mask PNG). Items queued by an older version (no
    /// frozen crop) are frozen when the store opens.
    @Test func aQueuedROIIsFrozenWhenQueued() async throws {
        let dir = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var picture = try Image8(width: 16, height: 16)
        for index in picture.samples.indices { picture.samples[index] = UInt8(index % 251) }
        do {
            let store = try LabelStore(directory: dir)
            try await store.setClasses([ClassRecord(index: 1, name: "scratch", color: 0xFF0000)], user: "ann")
            _ = try await store.addCapture(
                LabelStore.EncodedImage(bytes: try PNGCodec.encode(picture), width: 16, height: 16, channels: 1), source: "camera",
                inspectionType: "disc", recipeVersion: 3, user: "ann")
            var mask = try Image8(width: 8, height: 8)
            mask.samples[9] = 1
            try await store.saveMask(
                captureNumber: 1, roi: ("hub", PixelRect(x: 4, y: 2, width: 8, height: 8)), mask: mask, classes: 2, user: "ann")
            try await store.setIncluded(captureNumber: 1, roiName: "hub", included: true, user: "ann")
            let item = try #require(try await store.outbox().first)
            #expect(item.classNames == ["background", "scratch"] && item.inspectionType == "disc" && item.recipeVersion == 3)
            let crop = try store.blobs.get(item.cropHash), maskPNG = try store.blobs.get(item.maskHash)
            #expect(try PNGCodec.decode(crop).gray8 == picture.cropped(to: PixelRect(x: 4, y: 2, width: 8, height: 8)))
            #expect(try PNGCodec.decode(maskPNG).gray8 == mask)
            #expect(item.contentHash == LabelStore.contentHash(cropPNG: crop, maskPNG: maskPNG))
            // Renaming the class later leaves what was queued as it was labelled.
            try await store.setClasses([ClassRecord(index: 1, name: "dent", color: 0x00FF00)], user: "bob")
            #expect(try await store.outbox() == [item])
        }
        // An item as an older version queued it: no frozen crop.
        let queue = try DatabaseQueue(path: dir + "/labels.sqlite")
        try await queue.write { db in
            try db.execute(sql: "UPDATE outbox SET cropHash = '', maskHash = '', classNames = '[]', inspectionType = ''")
        }
        try queue.close()
        let reopened = try LabelStore(directory: dir)
        let item = try await #require(try reopened.outbox().first)
        #expect(item.cropHash != "" && item.inspectionType == "disc" && item.classNames == ["background", "dent"])
        #expect(
            item.contentHash
                == LabelStore.contentHash(cropPNG: try reopened.blobs.get(item.cropHash), maskPNG: try reopened.blobs.get(item.maskHash)))
    }

    @Test func badRequestsChangeNothing() async throws {
        let dir = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try LabelStore(directory: dir)
        _ = try await store.addCapture(
            LabelStore.EncodedImage(bytes: try Self.png(10), width: 16, height: 16, channels: 1), source: "camera", inspectionType: "t",
            recipeVersion: 1,
            user: "ann")
        let roi = (name: "hub", rect: PixelRect(x: 0, y: 0, width: 8, height: 8))
        await #expect(throws: StoreError.self) {
            try await store.saveMask(captureNumber: 1, roi: roi, mask: try Image8(width: 4, height: 8), classes: 2, user: "ann")
        }
        await #expect(throws: StoreError.self) {
            try await store.saveMask(captureNumber: 1, roi: roi, mask: try Image8(width: 8, height: 8, fill: 5), classes: 2, user: "ann")
        }
        await #expect(throws: StoreError.notFound("capture 9")) {
            try await store.saveMask(captureNumber: 9, roi: roi, mask: try Image8(width: 8, height: 8), classes: 2, user: "ann")
        }
        await #expect(throws: StoreError.self) {
            try await store.setIncluded(captureNumber: 1, roiName: "hub", included: true, user: "ann")
        }
        #expect(throws: StoreError.invalid("\"../../../etc/passwd\" is not a content hash")) {
            _ = try store.blobs.get("../../../etc/passwd")
        }
        await #expect(throws: StoreError.self) { try await store.setClasses([ClassRecord(index: 2, name: "x", color: 0)], user: "ann") }
        await #expect(throws: StoreError.self) {
            try await store.setClasses(
                [ClassRecord(index: 1, name: "x", color: 0), ClassRecord(index: 2, name: "x", color: 0)], user: "ann")
        }
        #expect(try await store.labels().isEmpty)
        #expect(try await store.outboxDepth() == 0)
        #expect(try await store.classes().isEmpty)
    }

    /// A writer process killed with SIGKILL at random moments: every label it
    /// reported as saved is there after reopening, whole.
    @Test func everyAcknowledgedLabelSurvivesKillNine() async throws {
        let dir = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var acknowledged: [Int: String] = [:]
        for round in 0..<4 {
            let log = dir + "-writer-\(round).log"
            defer { try? FileManager.default.removeItem(atPath: log) }
            let writer = try LoupeProcess(["store-writer", "--dir", dir, "--pause-ms", "3"], log: log)
            let target = acknowledged.count + Int.random(in: 5...40)
            func acks() -> [(Int, String)] {
                writer.log.split(separator: "\n").compactMap { line in
                    let parts = line.split(separator: " ")
                    guard parts.count == 3, parts[0] == "ack", let number = Int(parts[1]) else { return nil }
                    return (number, String(parts[2]))
                }
            }
            #expect(
                try await eventually(timeout: .seconds(60)) { acknowledged.count + acks().count >= target }, "writer log: \(writer.log)")
            writer.signal(SIGKILL)
            _ = await writer.waitForExit()
            for (number, hash) in acks() { acknowledged[number] = hash }

            let store = try LabelStore(directory: dir)
            #expect(try await store.integrityCheck() == "ok")
            for (number, hash) in acknowledged {
                let label = try #require(
                    try await store.label(captureNumber: number, roiName: "roi-a"), "acknowledged label of capture \(number) is missing")
                #expect(label.maskHash == hash && label.includeInTraining)
                _ = try await store.mask(of: label)
                _ = try await store.image(of: try await store.capture(number: number))
            }
            #expect(try await store.outboxDepth() >= acknowledged.count)
        }
        print("kill -9 rounds: \(acknowledged.count) acknowledged labels, all present after reopening")
    }
}
