import Foundation
import LoupeAgent
import LoupeImaging
import LoupeVision
import Testing

/// The agent's wand sessions: each click retrains on all of an ROI's clicks
/// and replaces the selection the last one made; anything else that changes
/// the mask starts over from it; the ROI the operator leaves teaches the next.
@Suite struct WandSessionTests {
    @Test func clicksBuildOneSelectionAndOtherEditsStartAnew() async throws {
        let (image, truth) = try LearnedWandTests.surface(seed: 2, streaks: [(20, 30, 60), (40, 110, 90)])
        let sessions = WandSessions()
        let key = CaptureROI(capture: 1, roi: "left", rect: PixelRect(x: 0, y: 0, width: 160, height: 160))
        #expect(!sessions.isPrepared(key))
        let features = await sessions.prepare(key, crop: image, mask: nil, on: nil).value
        #expect(sessions.isPrepared(key))
        let blank = try Image8(width: 160, height: 160)

        // Label: both streaks (the second looks like the first).
        let first = try sessions.click(key, features: features, at: .init(x: 50, y: 31, positive: true), classIndex: 1, current: blank)
        #expect(first.mask[50, 31] == 1 && first.mask[100, 112] == 1)
        #expect(first.selectedPixels == first.mask.samples.filter { $0 == 1 }.count)
        #expect(LearnedWandTests.iou(first.mask, truth) >= 0.7)
        // Unlabel the second: the selection is redone without it, not cut from the last one.
        let second = try sessions.click(
            key, features: features, at: .init(x: 100, y: 112, positive: false), classIndex: 1, current: first.mask)
        #expect(second.mask[100, 112] == 0 && second.mask[50, 31] == 1)

        // A brush stroke in between: the next click starts from the stroked mask and keeps it.
        var stroked = second.mask
        for x in 0..<10 { stroked[x, 150] = 1 }
        let third = try sessions.click(key, features: features, at: .init(x: 100, y: 112, positive: true), classIndex: 1, current: stroked)
        #expect(third.mask[5, 150] == 1, "the stroke is kept")
        #expect(third.mask[100, 112] == 1, "a new session: the earlier unlabel click no longer holds")

        // An unlabel click with no label click in its session clears the region under it.
        var painted = blank
        for y in 60..<70 { for x in 60..<80 { painted[x, y] = 1 } }
        let cleared = try sessions.click(key, features: features, at: .init(x: 65, y: 65, positive: false), classIndex: 1, current: painted)
        #expect(cleared.selectedPixels == 200 && cleared.mask.samples.allSatisfy { $0 == 0 })

        // Bad input is the wand's named error.
        #expect(throws: WandError.tolerance(2)) {
            try sessions.click(
                key, features: features, at: .init(x: 50, y: 31, positive: true), classIndex: 1, tolerance: 2, current: blank)
        }
    }

    @Test func theROIsLeftTeachTheNext() async throws {
        let sessions = WandSessions(capacity: 2)
        let (labelled, truth) = try LearnedWandTests.surface(seed: 4, streaks: [(20, 30, 60)])
        let rect = PixelRect(x: 0, y: 0, width: 160, height: 160)
        let blank = try Image8(width: 160, height: 160)
        // An ROI opened with a stored mask is remembered once its features exist.
        let a = CaptureROI(capture: 1, roi: "left", rect: rect)
        _ = await sessions.prepare(a, crop: labelled, mask: truth, on: nil).value
        #expect(sessions.rememberedImages == 1)
        // Clicks on a second ROI, then a third: the second is remembered when the operator moves on.
        let (second, _) = try LearnedWandTests.surface(seed: 5, streaks: [(70, 50, 70)])
        let b = CaptureROI(capture: 2, roi: "left", rect: rect)
        let features = await sessions.prepare(b, crop: second, mask: nil, on: nil).value
        _ = try sessions.click(b, features: features, at: .init(x: 100, y: 51, positive: true), classIndex: 1, current: blank)
        #expect(sessions.rememberedImages == 1)
        let c = CaptureROI(capture: 3, roi: "left", rect: rect)
        let third = await sessions.prepare(c, crop: second, mask: nil, on: nil).value
        _ = try sessions.click(c, features: third, at: .init(x: 100, y: 51, positive: true), classIndex: 1, current: blank)
        #expect(sessions.rememberedImages == 2)
        // Capacity 2: the first ROI's features are gone, the newest kept.
        #expect(!sessions.isPrepared(a) && sessions.isPrepared(b) && sessions.isPrepared(c))
    }
}
