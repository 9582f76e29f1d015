import Foundation
import LoupeWire

/// A `loupe manager`, `loupe worker` or `loupe agent` process of a benchmark's own, run from
/// a config file the benchmark writes, so its memory and CPU are its own.
struct ServiceProcess {
    let process: Process
    /// The manager's port once it listens (0 for a worker).
    let port: Int

    var pid: Int32 { process.processIdentifier }

    /// Starts `loupe manager` with `config` (written beside it as NAME.json) and waits until it listens.
    static func manager(executable: String, folder: String, name: String, config: [String: Any]) async throws -> ServiceProcess {
        let configPath = folder + "/\(name).json"
        let readyPath = configPath + ".ready"
        try? FileManager.default.removeItem(atPath: readyPath)  // a previous run's
        let process = try start(executable, ["manager", "--config", configPath, "--ready-file", readyPath], config: config, at: configPath)
        let started = ContinuousClock.now
        while true {
            if let text = try? String(contentsOfFile: readyPath, encoding: .utf8),
                let parsed = try? parseAddress(text.trimmingCharacters(in: .whitespacesAndNewlines))
            {
                return ServiceProcess(process: process, port: parsed.port)
            }
            guard process.isRunning, ContinuousClock.now - started < .seconds(30) else {
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
                throw WireError.requestTimedOut(seconds: 30)
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Starts `loupe worker` with `config` (written beside it as NAME.json).
    static func worker(executable: String, folder: String, name: String, config: [String: Any]) throws -> ServiceProcess {
        let configPath = folder + "/\(name).json"
        return ServiceProcess(process: try start(executable, ["worker", "--config", configPath], config: config, at: configPath), port: 0)
    }

    static func start(_ executable: String, _ arguments: [String], config: [String: Any], at configPath: String) throws -> Process {
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: configPath))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    /// SIGTERM, then SIGKILL if it has not stopped within `grace`.
    func stop(grace: Duration = .seconds(30)) async {
        guard process.isRunning else { return }
        kill(pid, SIGTERM)
        let asked = ContinuousClock.now
        while process.isRunning, ContinuousClock.now - asked < grace { try? await Task.sleep(for: .milliseconds(50)) }
        if process.isRunning { kill(pid, SIGKILL) }
    }

    /// Resident memory now and at its peak so far (kB), from /proc.
    var memory: (kilobytes: Int, peakKilobytes: Int) {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        func field(_ name: String) -> Int {
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return 0 }
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? 0
        }
        return (field("VmRSS"), field("VmHWM"))
    }
}

/// A `loupe agent` process of a benchmark's own, and the URL its page listens on.
struct AgentProcess {
    let process: ServiceProcess
    let url: String

    /// Starts `loupe agent` with `config` (written beside it as NAME.json) and waits until its page listens.
    static func start(executable: String, folder: String, name: String, config: [String: Any]) async throws -> AgentProcess {
        let configPath = folder + "/\(name).json"
        let readyPath = configPath + ".ready"
        try? FileManager.default.removeItem(atPath: readyPath)
        let process = try ServiceProcess.start(
            executable, ["agent", "--config", configPath, "--ready-file", readyPath], config: config, at: configPath)
        let started = ContinuousClock.now
        while true {
            if let text = try? String(contentsOfFile: readyPath, encoding: .utf8), text.hasSuffix("\n") {
                return AgentProcess(
                    process: ServiceProcess(process: process, port: 0), url: text.trimmingCharacters(in: .whitespacesAndNewlines))
            }
            guard process.isRunning, ContinuousClock.now - started < .seconds(30) else {
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
                throw WireError.requestTimedOut(seconds: 30)
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}
