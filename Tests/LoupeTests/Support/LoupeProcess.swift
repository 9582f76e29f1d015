import Foundation
import LoupeAgent
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import LoupePKI
import LoupeWire
import LoupeTesting

/// A real `loupe` process started by a test, its output kept in a log file.
final class LoupeProcess: @unchecked Sendable {
    let process = Process()
    let logPath: String

    /// The `loupe` executable built next to the test bundle.
    static var binary: String {
        get throws {
            if let override = ProcessInfo.processInfo.environment["LOUPE_BIN"] { return override }
            let own = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
            let path = ((own as NSString).deletingLastPathComponent as NSString).appendingPathComponent("loupe")
            guard FileManager.default.isExecutableFile(atPath: path) else {
                throw TestSetupError("no loupe executable at \(path); build with `swift build --build-tests` first")
            }
            return path
        }
    }

    init(_ arguments: [String], log: String, environment: [String: String] = [:]) throws {
        logPath = log
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.executableURL = URL(fileURLWithPath: try Self.binary)
        process.arguments = arguments
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
    }

    func signal(_ number: Int32) {
        kill(process.processIdentifier, number)
    }

    /// The exit status, or nil if it is still running after `timeout`.
    func waitForExit(timeout: Duration = .seconds(15)) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now > deadline { return nil }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return process.terminationStatus
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}

struct TestSetupError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The test peers' Python (the virtualenv Deploy/install-deps makes): LOUPE_PYTHON,
/// LOUPE_VENV/bin/python or ~/.cache/loupe/venv/bin/python, whichever exists first.
func venvPython() -> String? {
    let environment = ProcessInfo.processInfo.environment
    let candidates = [
        environment["LOUPE_PYTHON"], environment["LOUPE_VENV"].map { $0 + "/bin/python" },
        NSHomeDirectory() + "/.cache/loupe/venv/bin/python",
    ].compactMap { $0 }
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
}

/// Waits until `condition` holds, checking every 100 ms.
func eventually(timeout: Duration = .seconds(20), _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if (try? await condition()) == true { return true }
        try await Task.sleep(for: .milliseconds(100))
    }
    // Once more after the deadline: a test process starved past it (a loaded suite start on two cores has
    // held every test for 20 s and more) looks at least once after it wakes, instead of failing unlooked.
    return (try? await condition()) == true
}

/// Writes a JSON config file.
func writeJSON(_ object: [String: Any], to path: String) throws {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    try data.write(to: URL(fileURLWithPath: path))
}

/// A manager process with its config in a test PKI folder.
struct ManagerProcessSetup {
    let pki: TestPKI
    let managerTLS: TLSFiles
    let configPath: String
    let readyPath: String

    init(
        pki: TestPKI, port: Int = 0, revocationList: String? = nil, revocationPollSeconds: Double = 1, heartbeatSeconds: Double = 0.5,
        extra: [String: Any] = [:]
    ) throws {
        self.pki = pki
        managerTLS = try pki.manager()
        configPath = pki.dir + "/manager-\(UUID().uuidString.prefix(6)).json"
        readyPath = configPath + ".ready"
        var config: [String: Any] = [
            "managerId": "process-plant",
            "listen": "127.0.0.1:\(port)",
            "tls": ["ca": managerTLS.ca, "cert": managerTLS.cert, "key": managerTLS.key],
            "dataDir": pki.dir + "/manager-data",
            "heartbeatSeconds": heartbeatSeconds,
            "idleTimeoutSeconds": 3,
            "revocationPollSeconds": revocationPollSeconds,
            // One training thread: tests share the machine with timing-sensitive network tests.
            "trainingThreads": 1,
        ]
        if let revocationList { config["revocationList"] = revocationList }
        config.merge(extra) { $1 }
        try writeJSON(config, to: configPath)
    }

    /// Starts the manager and returns it with its port once it listens.
    func start() async throws -> (LoupeProcess, Int) {
        try? FileManager.default.removeItem(atPath: readyPath)
        let process = try LoupeProcess(["manager", "--config", configPath, "--ready-file", readyPath], log: configPath + ".log")
        var port = 0
        _ = try await eventually(timeout: .seconds(20)) {
            guard let text = try? String(contentsOfFile: readyPath, encoding: .utf8),
                let parsed = try? parseAddress(text.trimmingCharacters(in: .whitespacesAndNewlines))
            else { return false }
            port = parsed.port
            return true
        }
        guard port > 0 else { throw TestSetupError("manager did not start:\n\(process.log)") }
        return (process, port)
    }
}

/// Writes a `loupe agent` config for `camera` that reaches the manager on
/// `port` with quick test timers (no manager when `port` is nil); `extra`
/// adds or replaces top-level keys. Returns the file's path.
/// With `inspectionType`, the agent's store starts with a recipe of that
/// type (agents install only models signed for their recipe's type).
func writeAgentConfig(
    pki: TestPKI, camera: String, port: Int?, dataDir: String? = nil, manager extraLink: [String: Any] = [:],
    extra: [String: Any] = [:], inspectionType: String? = nil
) async throws -> String {
    let files = try pki.member(.agent, camera)
    let path = pki.dir + "/agent-\(camera).json"
    let dataDir = dataDir ?? pki.dir + "/agent-\(camera)-data"
    var config: [String: Any] = [
        "cameraId": camera,
        "tls": ["ca": files.ca, "cert": files.cert, "key": files.key],
        "dataDir": dataDir,
    ]
    if let inspectionType {
        try await LabelStore(directory: dataDir + "/store").saveRecipe(Recipe(inspectionType: inspectionType), user: "test")
    }
    if let port {
        let link: [String: Any] = [
            "address": "localhost:\(port)", "heartbeatSeconds": 0.5, "idleTimeoutSeconds": 3,
            "statusIntervalSeconds": 0.5, "reconnectInitialSeconds": 0.2, "reconnectMaxSeconds": 1,
        ]
        config["manager"] = link.merging(extraLink) { $1 }
    }
    try writeJSON(config.merging(extra) { $1 }, to: path)
    return path
}

/// LOUPE_ADDR, LOUPE_CACERT, LOUPE_CERT and LOUPE_KEY for fleet commands as `name` (an operator unless `role` says otherwise).
func fleetEnvironment(pki: TestPKI, port: Int, name: String = "alice", role: FleetRole = .operator) throws -> [String: String] {
    let files = try pki.member(role, name)
    return ["LOUPE_ADDR": "localhost:\(port)", "LOUPE_CACERT": files.ca, "LOUPE_CERT": files.cert, "LOUPE_KEY": files.key]
}

/// Runs `loupe` with these arguments to its end; returns exit status and output.
func runLoupe(
    _ arguments: [String], log: String, environment: [String: String] = [:], timeout: Duration = .seconds(120)
) async throws -> (status: Int32?, output: String) {
    let process = try LoupeProcess(arguments, log: log, environment: environment)
    let status = await process.waitForExit(timeout: timeout)
    return (status, process.log)
}

extension LoupeProcess {
    /// The `address=` a log line containing `marker` names (e.g. "http listening"), once it appears.
    func loggedAddress(after marker: String, timeout: Duration = .seconds(20)) async throws -> String? {
        var address: String?
        _ = try await eventually(timeout: timeout) {
            if let line = log.split(separator: "\n").first(where: { $0.contains(marker) }), let range = line.range(of: "address=") {
                address = String(line[range.upperBound...].prefix { !$0.isWhitespace })
            }
            return address != nil
        }
        return address
    }
}

/// One request to a `loupe agent`'s HTTP API at `base` ("host:port"), with a
/// bearer token if given: the status and the body.
func agentHTTP(
    _ base: String, _ method: String, _ path: String, token: String? = nil, body: Data? = nil,
    headers: [String: String] = [:]
) async throws -> (status: Int, body: Data) {
    var request = URLRequest(url: URL(string: "http://\(base)\(path)")!)
    request.httpMethod = method
    if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
    for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
    request.httpBody = body
    let (data, response) = try await URLSession.shared.data(for: request)
    return ((response as? HTTPURLResponse)?.statusCode ?? 0, data)
}

/// Signs in to a `loupe agent`'s HTTP API as `user`; the session's bearer token.
func agentToken(_ base: String, user: String = "admin", password: String) async throws -> String {
    let (status, body) = try await agentHTTP(
        base, "POST", "/api/v1/login", body: try JSONSerialization.data(withJSONObject: ["user": user, "password": password]),
        headers: ["Content-Type": "application/json"])
    guard status == 200, let token = (try? JSONSerialization.jsonObject(with: body) as? [String: Any])?["token"] as? String else {
        throw TestSetupError("cannot sign in to the agent at \(base) as \(user): \(status) \(String(decoding: body, as: UTF8.self))")
    }
    return token
}
