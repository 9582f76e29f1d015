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
    private var process: Process?
    private var input: Pipe?

    /// The helper, built once per test run by Tests/FakeGigE/Makefile.
    static let helper: Result<String, TestSetupError> = {
        let build: String
        do { build = try TemporaryDirectory.make(prefix: "loupe-fake-gige") } catch { return .failure(TestSetupError("\(error)")) }
        let make = Process()
        make.executableURL = URL(fileURLWithPath: "/usr/bin/make")
        make.arguments = ["-s", "-C", Repository.root + "/Tests/FakeGigE", "BUILD=\(build)"]
        do { try make.run() } catch { return .failure(TestSetupError("cannot run make: \(error)")) }
        make.waitUntilExit()
        guard make.terminationStatus == 0 else {
            return .failure(TestSetupError("Tests/FakeGigE did not build (needs libaravis-dev and libusb-1.0-0-dev: Deploy/install-deps)"))
        }
        return .success(build + "/loupe-fake-gige")
    }()

    /// Starts the camera; `picture` is tiled over its frames.
    init(serial: String, picture: Image8, lostPerThousand: Int = 0, lineHz: Double = 0) async throws {
        self.serial = serial
        self.picture = picture
        let pgm = try TemporaryDirectory.make(prefix: "loupe-fake-gige-picture") + "/picture.pgm"
        var bytes = Data("P5 \(picture.width) \(picture.height) 255\n".utf8)
        bytes.append(contentsOf: picture.samples)
        try bytes.write(to: URL(fileURLWithPath: pgm))
        arguments = [serial, "--image", pgm, "--lost-per-thousand", "\(lostPerThousand)", "--line-hz", "\(lineHz)"]
        try await start()
    }

    /// Starts (or starts again, after `cut()`) the helper and waits for "ready".
    func start() async throws {
        let binary = try Self.helper.get()
        var last = "no output"
        // The port can stay taken for a moment after an earlier camera died.
        for _ in 0..<20 {
            let process = Process(), input = Pipe(), output = Pipe()
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = arguments
            process.standardInput = input
            process.standardOutput = output
            process.standardError = FileHandle.nullDevice
            try process.run()
            if let line = output.fileHandleForReading.availableLine(timeout: .seconds(5)), line.hasPrefix("ready") {
                self.process = process
                self.input = input
                return
            }
            last = "exit status \(process.isRunning ? "none yet" : "\(process.terminationStatus)")"
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            try await Task.sleep(for: .milliseconds(250))
        }
        throw TestSetupError("the fake GigE camera \(serial) did not start (\(last))")
    }

    /// The cable cut: the device dies without a word (SIGKILL).
    func cut() {
        guard let process else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    deinit { cut() }
}

extension FileHandle {
    /// The first line written, or nil if none came within `timeout`.
    fileprivate func availableLine(timeout: Duration) -> String? {
        let deadline = ContinuousClock.now + timeout
        var collected = Data()
        var poller = pollfd(fd: fileDescriptor, events: Int16(POLLIN), revents: 0)
        while ContinuousClock.now < deadline {
            guard poll(&poller, 1, 100) > 0 else { continue }
            let chunk = availableData
            if chunk.isEmpty { break }
            collected.append(chunk)
            if let newline = collected.firstIndex(of: UInt8(ascii: "\n")) {
                return String(decoding: collected[..<newline], as: UTF8.self)
            }
        }
        return collected.isEmpty ? nil : String(decoding: collected, as: UTF8.self)
    }
}
