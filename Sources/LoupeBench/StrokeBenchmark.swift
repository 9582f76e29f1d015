import Foundation
import Logging
import LoupeImaging
import LoupeManager
import LoupePKI
import LoupeTesting
import LoupeWire
import Synchronization

/// `loupe bench strokes`: a real `loupe agent` process, connected over mutual TLS to a real manager (in this
/// process), and operators painting on its Label & Train API as the page does: one request per stroke (pointer-up
/// to stored and checked: the answer carries the edited mask and its labelling check). Measured in one run:
/// - a stroke's round trip, one at a time, beside the peer: the same client's round trip to `GET /api/v1/health`
///   (what any request to the agent costs);
/// - the agent's heartbeat as the manager hears it: the longest silence between two frames from the agent, quiet
///   and while several operators send strokes back to back on the same ROI.
public struct StrokeBenchmark: Sendable {
    public struct Options: Sendable {
        public var executable = ""
        public var width = 1600
        public var height = 1200
        /// Strokes one at a time (the round trip), and again in the burst.
        public var strokes = 40
        /// Points per stroke (the browser benchmark's 61).
        public var points = 61
        /// Operators painting at once in the burst, each its own session.
        public var operators = 4
        /// The agent's and the manager's heartbeat interval.
        public var heartbeatSeconds = 0.5
        /// How long the link is watched with nothing happening.
        public var quietSeconds = 5.0
        public init() {}
    }

    public struct Result: Sendable {
        public var strokeMilliseconds: [Double]
        public var healthMilliseconds: [Double]
        public var burstStrokeMilliseconds: [Double]
        public var burstSeconds: Double
        public var bytesPerStroke: Int
        public var maskPNGBytes: Int
        public var quietLongestSilence: Double
        public var burstLongestSilence: Double
        public var heartbeatSeconds: Double
        public var labelledPixels: Int
    }

    public let options: Options
    public let progress: @Sendable (String) -> Void

    public init(options: Options, progress: @escaping @Sendable (String) -> Void = { _ in }) {
        self.options = options
        self.progress = progress
    }

    /// The longest gap between two frames the manager heard from `camera`, sampled every 5 ms while it runs.
    final class SilenceWatch: Sendable {
        private final class Longest: Sendable { let gap = Mutex<Duration>(.zero) }
        private let longest = Longest()
        private let task: Task<Void, Never>

        init(manager: InProcessManager, camera: String) {
            let longest = self.longest
            task = Task.detached {
                var last: ContinuousClock.Instant?
                while !Task.isCancelled {
                    if let heard = manager.service.connections.first(where: { $0.peer?.name == camera && !$0.isClosed })?.lastHeard {
                        if let last, heard > last { longest.gap.withLock { $0 = max($0, heard - last) } }
                        last = heard
                    }
                    try? await Task.sleep(for: .milliseconds(5))
                }
            }
        }

        func stop() -> Double {
            task.cancel()
            return longest.gap.withLock { $0 }.seconds
        }
    }

    public func run() async throws -> Result {
        let folder = NSTemporaryDirectory() + "loupe-bench-strokes-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let pki = try LocalFleetPKI(folder: folder + "/pki", organization: "Bench")
        let camera = "stroke-cam"
        var managerConfig = ManagerConfig(
            managerId: "bench", listen: "127.0.0.1:0", tls: try pki.manager(), revocationList: nil, dataDir: folder + "/manager")
        managerConfig.heartbeatSeconds = options.heartbeatSeconds
        managerConfig.idleTimeoutSeconds = max(3, options.heartbeatSeconds * 6)
        let manager = try await InProcessManager.start(managerConfig, logger: WireBenchmark.quietLogger)
        defer { Task { await manager.stop() } }

        progress("starting a loupe agent connected to the manager")
        let tls = try pki.member(.agent, camera)
        let password = "bench-password-1"
        let agent = try await AgentProcess.start(
            executable: options.executable, folder: folder, name: "agent",
            config: [
                "cameraId": camera,
                "manager": [
                    "address": "127.0.0.1:\(manager.port)", "heartbeatSeconds": options.heartbeatSeconds,
                    "idleTimeoutSeconds": max(3, options.heartbeatSeconds * 6), "statusIntervalSeconds": 60,
                ],
                "tls": ["ca": tls.ca, "cert": tls.cert, "key": tls.key],
                "dataDir": folder + "/agent",
                "http": ["address": "127.0.0.1:0", "initialAdminPassword": password],
            ])
        defer { Task { await agent.process.stop() } }
        let deadline = ContinuousClock.now + .seconds(30)
        while !manager.service.connections.contains(where: { $0.peer?.name == camera && $0.wasWelcomed }) {
            guard ContinuousClock.now < deadline else { throw BenchmarkError("the agent did not connect to the manager within 30 s") }
            try await Task.sleep(for: .milliseconds(50))
        }

        let admin = try await AgentPageClient.signIn(base: agent.url, user: "admin", password: password)
        var operators: [AgentPageClient] = []
        for index in 1...max(1, options.operators) {
            try await admin.send(
                "PUT", "/api/v1/users/painter\(index)", json: ["password": "painter-password-\(index)", "role": "operator"])
            operators.append(
                try await AgentPageClient.signIn(base: agent.url, user: "painter\(index)", password: "painter-password-\(index)"))
        }
        let (width, height) = (options.width, options.height)
        // Texture like the browser benchmark's: stripes and noise, so the PNGs are not trivially small.
        var random = SystemRandomNumberGenerator()
        var samples = [UInt8](repeating: 0, count: width * height)
        for y in 0..<height {
            for x in 0..<width {
                let stripe = 40 * sin(Double(x) / 23)
                samples[y * width + x] = UInt8(max(0, min(255, 128 + stripe + Double(Int.random(in: -20...20, using: &random)))))
            }
        }
        let png = try PNGCodec.encode(Image8(width: width, height: height, samples: samples))
        let number = try await admin.importImage(png, name: "bench-\(width)x\(height).png")
        try await admin.send("PUT", "/api/v1/classes", json: [["index": 1, "name": "scratch", "color": 0xE6194B]])
        try await admin.send(
            "PUT", "/api/v1/recipe",
            json: [
                "version": 0, "inspectionType": "bench",
                "rois": [["name": "whole", "rect": ["x": 0, "y": 0, "width": width, "height": height]]],
                "confidenceThreshold": 0.5, "failRule": ["minimumDefectPixels": 25],
            ])
        let path = "/api/v1/captures/\(number)/rois/whole/strokes"
        func stroke(_ index: Int) throws -> Data {
            let y = 40 + Double((index * 47) % max(1, height - 80))
            let points = (0..<options.points).map { k -> [Double] in
                [Double(40 + (k * 20) % max(1, width - 80)), y + 10 * sin(Double(k) / 5)]
            }
            return try JSONSerialization.data(withJSONObject: [
                "strokes": [["tool": "brush", "classIndex": 1, "radius": 6, "points": points]]
            ])
        }
        func timed(_ work: () async throws -> Void) async throws -> Double {
            let start = ContinuousClock.now
            try await work()
            return (ContinuousClock.now - start).milliseconds
        }

        progress(String(format: "watching the quiet link for %.0f s", options.quietSeconds))
        let quiet = SilenceWatch(manager: manager, camera: camera)
        try await Task.sleep(for: .seconds(fraction: options.quietSeconds))
        let quietSilence = quiet.stop()

        progress("\(options.strokes) strokes one at a time, each beside a GET /api/v1/health")
        var strokeTimes: [Double] = [], healthTimes: [Double] = []
        let painter = operators[0]
        for index in 0..<options.strokes {
            let body = try stroke(index)
            healthTimes.append(
                try await timed {
                    _ = try await AgentPageClient.call(base: agent.url, "GET", "/api/v1/health", token: nil, body: nil, type: "")
                })
            strokeTimes.append(try await timed { try await painter.send("POST", path, body: body, type: "application/json") })
        }

        progress("\(options.strokes * operators.count) strokes from \(operators.count) operators at once, back to back")
        let burst = SilenceWatch(manager: manager, camera: camera)
        let burstStart = ContinuousClock.now
        let lanes = try await withThrowingTaskGroup(of: (times: [Double], last: Data).self) { group in
            for (lane, client) in operators.enumerated() {
                let bodies = try (0..<options.strokes).map { try stroke(1000 * (lane + 1) + $0) }
                group.addTask {
                    var times: [Double] = []
                    var last = Data()
                    for body in bodies {
                        let start = ContinuousClock.now
                        last = try await client.send("POST", path, body: body, type: "application/json")
                        times.append((ContinuousClock.now - start).milliseconds)
                    }
                    return (times, last)
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let burstSeconds = (ContinuousClock.now - burstStart).seconds
        let burstSilence = burst.stop()
        let burstTimes = lanes.flatMap(\.times)
        let mask = try await AgentPageClient.call(
            base: agent.url, "GET", "/api/v1/captures/\(number)/rois/whole/mask", token: admin.token, body: nil, type: "")
        // Every lane's last answer is the mask after its last stroke; the last to arrive holds every stroke.
        let labelled =
            lanes.compactMap { (try? JSONSerialization.jsonObject(with: $0.last) as? [String: Any])?["labelledPixels"] as? Int }.max() ?? 0
        return Result(
            strokeMilliseconds: strokeTimes, healthMilliseconds: healthTimes, burstStrokeMilliseconds: burstTimes,
            burstSeconds: burstSeconds, bytesPerStroke: try stroke(0).count, maskPNGBytes: mask.count,
            quietLongestSilence: quietSilence, burstLongestSilence: burstSilence, heartbeatSeconds: options.heartbeatSeconds,
            labelledPixels: labelled)
    }
}
