import Foundation
import LoupeAgent
import LoupeImaging
import LoupeStorage
import LoupeVision
import Testing

/// The camera's Library on its own SQLite file and image folder: what it
/// keeps, that the quota is never exceeded (oldest first), age, filters and
/// the Review order, the rate limit, and a reopen after images were left
/// without rows.
@Suite struct FrameLibraryTests {
    static func folder() -> String {
        let path = NSTemporaryDirectory() + "loupe-library-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// A noisy frame (so its JPEG has a size worth counting) and a result whose most confident defect pixel is `peak`.
    static func frame(
        _ sequence: Int, at date: Date, verdict: InspectionResult.Verdict, peak: Float, className: String = "scratch"
    )
        throws -> (CapturedFrameInput, InspectionResult)
    {
        var random = SeededGenerator(seed: UInt64(sequence + 1))
        var image = try Image8(width: 160, height: 128)
        for i in image.samples.indices { image.samples[i] = UInt8(random.below(256)) }
        let defects =
            verdict == .fail
            ? [DefectSummary(classIndex: 1, className: className, area: 40, largestRegion: 40, regions: 1, maxConfidence: peak)] : []
        let result = InspectionResult(
            sequence: sequence, capturedAt: date, verdict: verdict, alignScore: 0.97,
            placement: PartPlacement(x: 330, y: 250, shiftX: 10, shiftY: -6, angleDegrees: 1.5),
            rois: [ROIResult(name: "left", defects: defects, maxConfidence: peak, passed: verdict == .pass)],
            modelVersion: "m1", recipeVersion: 3)
        return (CapturedFrameInput(sequence: sequence, capturedAt: date, image: image, captureMilliseconds: 1), result)
    }

    @Test func keepsFailsUnsurePassesAndASampleAndSaysWhy() async throws {
        var policy = LibraryPolicy()
        policy.passSampleEvery = 3
        let library = try FrameLibrary(directory: Self.folder(), policy: policy)
        defer { library.close() }
        let now = Date()
        let (_, fail) = try Self.frame(1, at: now, verdict: .fail, peak: 0.95)
        let (_, unsure) = try Self.frame(2, at: now, verdict: .pass, peak: 0.45)
        let (_, clear) = try Self.frame(3, at: now, verdict: .pass, peak: 0.05)
        #expect(library.judge(fail, threshold: 0.5, passNumber: 1).reason == "fail")
        let judged = library.judge(unsure, threshold: 0.5, passNumber: 1)
        #expect(judged.reason == "unsure" && abs(judged.unsure - 0.5) < 1e-6, "0.05 from the threshold with a 0.1 margin: \(judged)")
        #expect(library.judge(clear, threshold: 0.5, passNumber: 1).reason == nil)
        #expect(library.judge(clear, threshold: 0.5, passNumber: 3).reason == "sample")

        // Through the writer: 9 clear passes give 3 samples; a fail and an unsure pass are kept too.
        for n in 0..<9 {
            let (frame, result) = try Self.frame(10 + n, at: now, verdict: .pass, peak: 0.01)
            library.offer(frame, result: result, threshold: 0.5)
            try Self.drain(library)
        }
        for (frame, result) in [
            try Self.frame(30, at: now, verdict: .fail, peak: 0.9), try Self.frame(31, at: now, verdict: .pass, peak: 0.52),
        ] {
            library.offer(frame, result: result, threshold: 0.5)
            try Self.drain(library)
        }
        let kept = try await library.frames()
        #expect(kept.map(\.reason).sorted() == ["fail", "sample", "sample", "sample", "unsure"], "\(kept.map(\.reason))")
        let failed = try #require(kept.first { $0.reason == "fail" })
        #expect(failed.classes == "scratch" && failed.modelVersion == "m1" && failed.recipeVersion == 3 && failed.alignScore == 0.97)
        #expect(failed.shiftX == 10 && failed.shiftY == -6 && failed.angleDegrees == 1.5, "the alignment result is in the record")
        let image = try JPEGCodec.decode(try await library.image(of: failed))
        #expect(image.width == 160 && image.height == 128)
    }

    @Test func aTriggeredFramesRecordNamesItsTrigger() async throws {
        let library = try FrameLibrary(directory: Self.folder(), policy: LibraryPolicy())
        defer { library.close() }
        var (frame, result) = try Self.frame(7, at: Date(), verdict: .fail, peak: 0.9)
        result.trigger = TriggerStamp(source: "api", sequence: 42)
        frame.trigger = result.trigger
        library.offer(frame, result: result, threshold: 0.5)
        try Self.drain(library)
        let kept = try #require(try await library.frames().first)
        #expect(kept.triggerSource == "api" && kept.triggerSequence == 42 && kept.sequence == 7)
    }

    static func drain(_ library: FrameLibrary) throws {
        let deadline = Date().addingTimeInterval(10)
        while library.backlog.queued > 0 && Date() < deadline { Thread.sleep(forTimeInterval: 0.005) }
        // The writer took it off the queue; give it the moment to commit.
        Thread.sleep(forTimeInterval: 0.05)
    }

    @Test func theQuotaIsNeverExceededOldestGoFirst() async throws {
        let directory = Self.folder()
        let (sampleFrame, sampleResult) = try Self.frame(0, at: Date(), verdict: .fail, peak: 0.9)
        let size = try JPEGCodec.encode(sampleFrame.image, quality: 90).count
        var policy = LibraryPolicy()
        policy.quotaBytes = size * 3 + size / 2
        let library = try FrameLibrary(directory: directory, policy: policy)
        defer { library.close() }
        _ = sampleResult
        let start = Date()
        for n in 0..<10 {
            let (frame, result) = try Self.frame(n, at: start.addingTimeInterval(Double(n)), verdict: .fail, peak: 0.9)
            try library.keep(frame, result: result, threshold: 0.5)
            let usage = try await library.usage()
            #expect(usage.bytes <= policy.quotaBytes, "after frame \(n): \(usage.bytes) bytes in a \(policy.quotaBytes)-byte quota")
        }
        let kept = try await library.frames()
        #expect(kept.map(\.sequence) == [9, 8, 7], "the newest three, newest first: \(kept.map(\.sequence))")
        // Exactly the kept frames' images are on disk.
        let files = try FileManager.default.subpathsOfDirectory(atPath: directory + "/frames").filter {
            ($0 as NSString).lastPathComponent.count == 64
        }
        #expect(Set(files.map { ($0 as NSString).lastPathComponent }) == Set(kept.map(\.imageHash)))
        // A frame larger than the whole quota is refused by name.
        var tiny = LibraryPolicy()
        tiny.quotaBytes = 100
        let small = try FrameLibrary(directory: Self.folder(), policy: tiny)
        defer { small.close() }
        #expect(throws: StoreError.self) { try small.keep(sampleFrame, result: sampleResult, threshold: 0.5) }
    }

    @Test func oldFramesGoAndFiltersAndReviewOrderHold() async throws {
        var policy = LibraryPolicy()
        policy.maxAgeSeconds = 3600
        let library = try FrameLibrary(directory: Self.folder(), policy: policy)
        defer { library.close() }
        let now = Date()
        let (old, oldResult) = try Self.frame(1, at: now.addingTimeInterval(-7200), verdict: .fail, peak: 0.9)
        try library.keep(old, result: oldResult, threshold: 0.5)
        for (n, peak, name) in [(2, Float(0.55), "scratch"), (3, 0.51, "pit"), (4, 0.9, "pit")] {
            let (frame, result) = try Self.frame(n, at: now.addingTimeInterval(Double(n)), verdict: .fail, peak: peak, className: name)
            try library.keep(frame, result: result, threshold: 0.5)
        }
        #expect(try await library.frames().map(\.sequence) == [4, 3, 2], "the two-hour-old frame went when a new one came")
        var pits = FrameLibrary.Filter()
        pits.className = "pit"
        #expect(try await library.frames(pits).map(\.sequence) == [4, 3])
        var review = FrameLibrary.Filter()
        review.review = true
        #expect(try await library.frames(review).map(\.sequence) == [3, 2], "most unsure first; the confident fail is not for review")
        var since = FrameLibrary.Filter()
        since.since = now.addingTimeInterval(3.5)
        #expect(try await library.frames(since).map(\.sequence) == [4])
    }

    @Test func theRateIsBoundedAndCounted() async throws {
        var policy = LibraryPolicy()
        policy.maxPerMinute = 2
        let library = try FrameLibrary(directory: Self.folder(), policy: policy)
        defer { library.close() }
        let minute = Date(timeIntervalSince1970: (Date().timeIntervalSince1970 / 60).rounded(.down) * 60 + 1)
        for n in 0..<5 {
            let (frame, result) = try Self.frame(n, at: minute, verdict: .fail, peak: 0.9)
            library.offer(frame, result: result, threshold: 0.5)
            try Self.drain(library)
        }
        #expect(try await library.frames().count == 2)
        #expect(library.backlog.dropped == 3)
    }

    @Test func aReopenKeepsEveryRowWithItsImageAndSweepsStrayImages() async throws {
        let directory = Self.folder()
        do {
            let library = try FrameLibrary(directory: directory)
            let (frame, result) = try Self.frame(1, at: Date(), verdict: .fail, peak: 0.9)
            try library.keep(frame, result: result, threshold: 0.5)
            library.close()
        }
        // An image written with no row (the process killed between the two) and a half-written temporary.
        let images = try BlobStore(root: directory + "/frames")
        let stray = try images.put(Data("not a frame".utf8))
        _ = FileManager.default.createFile(atPath: directory + "/frames/.tmp-half", contents: Data([1, 2, 3]))
        let reopened = try FrameLibrary(directory: directory)
        defer { reopened.close() }
        let kept = try await reopened.frames()
        #expect(kept.count == 1)
        #expect(try JPEGCodec.decode(try await reopened.image(of: kept[0])).width == 160)
        #expect(!FileManager.default.fileExists(atPath: images.path(for: stray)), "the stray image is swept")
        #expect(!FileManager.default.fileExists(atPath: directory + "/frames/.tmp-half"))
    }
}
