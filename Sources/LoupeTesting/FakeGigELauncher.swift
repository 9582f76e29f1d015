public import Foundation

/// Starts the fake GigE Vision camera (Tests/FakeGigE's helper, Aravis'
/// simulator on loopback) streaming an 8-bit grey picture: the one launcher
/// the tests and `loupe bench trigger` share.
public enum FakeGigELauncher {
    /// The running helper and its stdin (it runs until stdin closes).
    public struct Running: @unchecked Sendable {
        public let process: Process
        public let input: Pipe
    }

    /// Builds the helper from its sources (`Tests/FakeGigE`, its Makefile) into
    /// `folder` and gives the binary's path; the tests and `loupe demo` build it so.
    public static func build(sources: String, into folder: String) throws -> String {
        let make = Process()
        make.executableURL = URL(fileURLWithPath: "/usr/bin/make")
        make.arguments = ["-s", "-C", sources, "BUILD=\(folder)"]
        do { try make.run() } catch { throw LaunchError("cannot run make: \(error)") }
        make.waitUntilExit()
        guard make.terminationStatus == 0 else {
            throw LaunchError("\(sources) did not build (it needs libaravis-dev, libusb-1.0-0-dev and pkg-config: Deploy/install-deps)")
        }
        return folder + "/loupe-fake-gige"
    }

    /// Writes the picture as a binary PGM under `folder`, starts the helper and
    /// waits up to `timeout` for its "ready" line; nil when it did not start
    /// (the port still taken by a camera that just died, for instance).
    public static func launch(
        _ binary: String, serial: String, width: Int, height: Int, grey: [UInt8], folder: String,
        arguments: [String] = [], timeout: Duration = .seconds(5)
    ) throws -> Running? {
        let pgm = folder + "/\(serial).pgm"
        var bytes = Data("P5 \(width) \(height) 255\n".utf8)
        bytes.append(contentsOf: grey)
        try bytes.write(to: URL(fileURLWithPath: pgm))
        let process = Process(), input = Pipe(), output = Pipe()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [serial, "--image", pgm] + arguments
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        if firstLine(of: output.fileHandleForReading, timeout: timeout)?.hasPrefix("ready") == true {
            return Running(process: process, input: input)
        }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        return nil
    }

    /// The first line written, or nil if none came within `timeout`.
    private static func firstLine(of handle: FileHandle, timeout: Duration) -> String? {
        let deadline = ContinuousClock.now + timeout
        var collected = Data()
        var poller = pollfd(fd: handle.fileDescriptor, events: Int16(POLLIN), revents: 0)
        while ContinuousClock.now < deadline {
            guard poll(&poller, 1, 100) > 0 else { continue }
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            collected.append(chunk)
            if let newline = collected.firstIndex(of: UInt8(ascii: "\n")) {
                return String(decoding: collected[..<newline], as: UTF8.self)
            }
        }
        return collected.isEmpty ? nil : String(decoding: collected, as: UTF8.self)
    }
}

/// A helper process of the harness (the fake camera, the broker) that could not be built or started, and why.
public struct LaunchError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
