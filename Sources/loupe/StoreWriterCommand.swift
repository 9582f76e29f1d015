import ArgumentParser
import Foundation
import LoupeAgent
import LoupeImaging

/// `loupe store-writer`: writes labels into an agent store as fast as it can,
/// printing `ack N HASH` after each one is committed. The crash tests kill it
/// with SIGKILL at random moments and check every acknowledged label survived.
struct StoreWriterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store-writer",
        abstract: "Write labels into an agent store until killed (crash testing).",
        shouldDisplay: false
    )
    @Option(help: "The agent's data directory.") var dir: String
    @Option(help: "Stop after this many labels.") var count = 1_000_000
    @Option(help: "Pause between labels, in milliseconds.") var pauseMs = 0

    func run() async throws {
        let store = try LabelStore(directory: dir)
        if try await store.classes().isEmpty {
            try await store.setClasses([ClassRecord(index: 1, name: "scratch", color: 0xFF0000)], user: "writer")
        }
        var random = SystemRandomNumberGenerator()
        let rect = PixelRect(x: 8, y: 8, width: 32, height: 32)
        for _ in 0..<count {
            let pixels = (0..<(64 * 64)).map { _ in UInt8.random(in: 0...255, using: &random) }
            let png = try PNGCodec.encode(try Image8(width: 64, height: 64, samples: pixels))
            let capture = try await store.addCapture(
                LabelStore.EncodedImage(bytes: png, width: 64, height: 64, channels: 1), source: "store-writer", inspectionType: "crash",
                recipeVersion: 1,
                user: "writer")
            var mask = try Image8(width: 32, height: 32)
            let x0 = Int.random(in: 0..<24, using: &random), y0 = Int.random(in: 0..<24, using: &random)
            for y in y0..<(y0 + 8) { for x in x0..<(x0 + 8) { mask.samples[y * 32 + x] = 1 } }
            let label = try await store.saveMask(
                captureNumber: capture.number, roi: ("roi-a", rect), mask: mask, classes: 2, user: "writer")
            try await store.setIncluded(captureNumber: capture.number, roiName: "roi-a", included: true, user: "writer")
            print("ack \(capture.number) \(label.maskHash)")
            fflush(nil)
            if pauseMs > 0 { try await Task.sleep(for: .milliseconds(pauseMs)) }
        }
    }
}
