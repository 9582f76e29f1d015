import Foundation
import LoupeImaging
import LoupeVision
import Testing

/// The learned wand on its own: what it refuses, and what a click, an
/// unlabel click and the memory of an earlier image do. Its figures on real
/// steel are `WandTests.reportsTheWandOnNEUSegDefects` and `loupe bench wand`.
@Suite struct LearnedWandTests {
    /// A rough surface (noise over a slow ramp, nothing a rule could key on)
    /// with dark streaks: `streaks` as (x, y, length), each 4 px thick.
    static func surface(seed: UInt64, streaks: [(Int, Int, Int)], size: Int = 160) throws -> (image: Image8, truth: Image8) {
        var random = SeededGenerator(seed: seed)
        var image = try Image8(width: size, height: size)
        var truth = try Image8(width: size, height: size)
        for y in 0..<size {
            for x in 0..<size { image[x, y] = UInt8(120 + (x + y) / 8 + random.below(30)) }
        }
        for (sx, sy, length) in streaks {
            for x in sx..<(sx + length) {
                for y in sy..<(sy + 4) {
                    image[x, y] = UInt8(60 + random.below(25))
                    truth[x, y] = 1
                }
            }
        }
        return (image, truth)
    }

    static func iou(_ selection: Image8, _ truth: Image8, label: UInt8 = 1) -> Double {
        var both = 0, either = 0
        for index in selection.samples.indices {
            let chosen = selection.samples[index] != 0, wanted = truth.samples[index] == label
            if chosen && wanted { both += 1 }
            if chosen || wanted { either += 1 }
        }
        return Double(both) / Double(max(1, either))
    }

    @Test func badClicksAreNamed() throws {
        let (image, _) = try Self.surface(seed: 1, streaks: [(20, 20, 40)])
        let features = WandFeatures(image)
        let wand = LearnedWand()
        #expect(throws: WandError.noClicks) { try wand.select(features, clicks: [], classIndex: 1) }
        #expect(throws: WandError.noClicks) { try wand.select(features, clicks: [.init(x: 5, y: 5, positive: false)], classIndex: 1) }
        #expect(throws: WandError.outside(x: 160, y: 3, width: 160, height: 160)) {
            try wand.select(features, clicks: [.init(x: 160, y: 3, positive: true)], classIndex: 1)
        }
        #expect(throws: WandError.outside(x: -1, y: 3, width: 160, height: 160)) {
            try wand.select(features, clicks: [.init(x: -1, y: 3, positive: true)], classIndex: 1)
        }
        #expect(throws: WandError.tolerance(1.5)) {
            try wand.select(features, clicks: [.init(x: 30, y: 21, positive: true)], classIndex: 1, tolerance: 1.5)
        }
        let small = try Image8(width: 10, height: 10)
        #expect(throws: WandError.maskSize(width: 10, height: 10, expected: (160, 160))) {
            try wand.select(features, clicks: [.init(x: 30, y: 21, positive: true)], classIndex: 1, mask: small)
        }
        let flat = WandFeatures(try Image8(width: 32, height: 32, fill: 90))
        #expect(throws: WandError.flat) { try wand.select(flat, clicks: [.init(x: 3, y: 3, positive: true)], classIndex: 1) }
        #expect("\(WandError.outside(x: 160, y: 3, width: 160, height: 160))".contains("outside the 160x160 image"))
    }

    @Test func oneClickFindsTheStreakAndTheOnesLikeIt() throws {
        let (image, truth) = try Self.surface(seed: 2, streaks: [(20, 30, 60), (40, 110, 90)])
        let features = WandFeatures(image)
        let selection = try LearnedWand().select(features, clicks: [.init(x: 50, y: 31, positive: true)], classIndex: 1)
        let score = Self.iou(selection, truth)
        // The second streak was never clicked: the wand labels the areas that look like the click.
        #expect(selection[100, 112] == 255, "the unclicked streak is selected too")
        #expect(score >= 0.7, "IoU \(score) over both streaks from one click")
    }

    @Test func anUnlabelClickTakesARegionOut() throws {
        let (image, truth) = try Self.surface(seed: 3, streaks: [(20, 30, 60), (40, 110, 90)])
        let features = WandFeatures(image)
        let wand = LearnedWand()
        let both = try wand.select(features, clicks: [.init(x: 50, y: 31, positive: true)], classIndex: 1)
        #expect(both[100, 112] == 255)
        let one = try wand.select(
            features, clicks: [.init(x: 50, y: 31, positive: true), .init(x: 100, y: 112, positive: false)], classIndex: 1)
        #expect(one[100, 112] == 0, "the unlabelled streak is out")
        #expect(one[50, 31] == 255, "the clicked streak stays")
        var first = truth
        for y in 100..<120 { for x in 0..<160 { first[x, y] = 0 } }
        #expect(Self.iou(one, first) >= 0.6)
    }

    @Test func theMemoryOfOneImageProposesTheNext() throws {
        let (earlier, earlierTruth) = try Self.surface(seed: 4, streaks: [(20, 30, 60), (30, 90, 100)])
        var memory = WandMemory()
        memory.record(key: "1/left", features: WandFeatures(earlier), mask: earlierTruth)
        #expect(memory.imageCount == 1 && memory.classes == [1])
        let (next, truth) = try Self.surface(seed: 5, streaks: [(70, 50, 70), (10, 130, 50)])
        let features = WandFeatures(next)
        let proposal = try #require(LearnedWand().propose(features, memory: memory))
        let score = Self.iou(proposal, truth)
        #expect(score >= 0.6, "a proposal with no click: IoU \(score)")
        #expect(LearnedWand().propose(features, memory: WandMemory()) == nil, "nothing remembered, nothing proposed")
        // Forgetting the image leaves nothing to propose from.
        memory.forget(key: "1/left")
        #expect(memory.imageCount == 0)
    }
}
