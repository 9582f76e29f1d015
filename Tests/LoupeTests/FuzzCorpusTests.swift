import Foundation
import LoupeProto
import LoupeWire
import Testing

/// The fuzz targets' committed corpus (seeds and the inputs that once found
/// a bug) replayed through the same code as under libFuzzer, in every test
/// run. The fuzzing itself is `Tests/Fuzz/run` (a 60 s smoke in .ci/run).
@Suite struct FuzzCorpusTests {
    @Test(arguments: ["frames", "png", "jpeg"])
    func theCorpusReplaysWithoutAFailure(target: String) throws {
        let own = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        let binary = ((own as NSString).deletingLastPathComponent as NSString).appendingPathComponent("LoupeFuzz")
        #expect(FileManager.default.isExecutableFile(atPath: binary), "no LoupeFuzz next to the test bundle; build with --build-tests")
        let corpus = Repository.root + "/Tests/Fuzz/corpus/" + target
        let files = try FileManager.default.contentsOfDirectory(atPath: corpus)
        #expect(files.count >= 2, "the \(target) seed corpus is missing")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [target, corpus]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        var environment = ProcessInfo.processInfo.environment
        environment["SWIFT_BACKTRACE"] = "enable=no"
        process.environment = environment
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(target) corpus: \(text)")
        #expect(text.contains("\(files.count) inputs replayed, no failure"), "\(text)")
    }

    /// What the frames target found: an envelope with nothing set encodes
    /// to an empty frame, which every receiver refuses.
    @Test func anEmptyEnvelopeIsRefusedBeforeItReachesTheWire() {
        #expect(throws: WireError.emptyFrame) { try EnvelopeEncoder.frame(Envelope()) }
    }
}
