import Foundation
import LoupeImaging
import LoupeTesting
import Synchronization

/// A real GigE Vision device on loopback: Aravis' simulator (GVCP and GVSP
/// over UDP at 127.0.0.1:3956) in its own process (Tests/FakeGigE), streaming
/// a picture the test chose. Only one can listen on 127.0.0.1 at a time, so
/// the suites that use one are serialized under `FakeGigESuite`.
final class FakeGigECamera: @unchecked Sendable {
    let serial: String
    let picture: Image8
    private let arguments: [String]
    private let folder: String
    private var running: FakeGigELauncher.Running?

    /// The helper, built once per test run by Tests/FakeGigE/Makefile.
    static let helper: Result<String, TestSetupError> = {
        let build: String
        do { build = try TemporaryDirectory.make(prefix: "loupe-fake-gige") } catch { return .failure(TestSetupError("\(error)")) }
        do { return .success(try FakeGigELauncher.build(sources: Repository.root + "/Tests/FakeGigE", into: build)) } catch {
            return .failure(TestSetupError("\(error)"))
        }
    }()

    /// Starts the camera; `picture` is tiled over its frames.
    init(serial: String, picture: Image8, lostPerThousand: Int = 0, lineHz: Double = 0) async throws {
        self.serial = serial
        self.picture = picture
        folder = try TemporaryDirectory.make(prefix: "loupe-fake-gige-picture")
        arguments = ["--lost-per-thousand", "\(lostPerThousand)", "--line-hz", "\(lineHz)"]
        try await start()
    }

    /// Starts (or starts again, after `cut()`) the helper and waits for "ready".
    func start() async throws {
        let binary = try Self.helper.get()
        // The port can stay taken for a moment after an earlier camera died.
        for _ in 0..<20 {
            if let started = try FakeGigELauncher.launch(
                binary, serial: serial, width: picture.width, height: picture.height, grey: picture.samples,
                folder: folder, arguments: arguments)
            {
                running = started
                return
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        throw TestSetupError("the fake GigE camera \(serial) did not start")
    }

    /// The cable cut: the device dies without a word (SIGKILL).
    func cut() {
        guard let process = running?.process else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        running = nil
    }

    deinit { cut() }
}
