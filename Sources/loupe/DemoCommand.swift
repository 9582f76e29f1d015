import ArgumentParser
import Foundation
import Logging
import LoupeAgent
import LoupeCapture
import LoupeImaging
import LoupeManager
import LoupePKI
import LoupeSegmentation
import LoupeProto
import LoupeWire
import NIOCore
import ServiceLifecycle
import UnixSignals
import LoupeTesting
import LoupeVision

/// `loupe demo`: the whole loop on one machine. A fleet CA, a manager and
/// three camera agents on the synthetic camera; ROIs labelled from the
/// synthetic ground truth through each agent's own API; labels synced to the
/// manager; central training with a progress bar; the model signed and
/// pushed; live inspection measured against ground truth. With `--storage
/// postgres`, two managers on one PostgreSQL database of the demo's own, the
/// cameras spread over them, each knowing the other as its fallback.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract:
            "Run the whole loop on this machine: a manager, three cameras, labelling, central training, a signed push, live inspection.",
        discussion:
            "Keeps running with the agents' Label & Train pages up until Ctrl-C, unless --exit-when-done. Exits 1 if a step fails or the "
            + "live IoU is below --min-iou."
    )

    @Option(help: "Folder for the demo's PKI and data (default: a new temporary folder, removed at the end).") var dataDir: String?
    @Option(help: "Labelled frames per camera.") var frames = 16
    @Option(
        help:
            ArgumentHelp(
                "Passes of central training over the labelled ROIs: a fixed amount of work, so a slower CPU takes longer rather than "
                    + "learning "
                    + "less (18 passes: about 2 minutes on AVX-512 cores, about 9 on an AVX2-only CPU).")
    )
    var trainPasses = 18
    @Option(help: "Seconds of central training instead of --train-passes (a slower CPU then trains less).") var trainSeconds: Double?
    @Option(help: "Seconds of live inspection to measure.") var liveSeconds = 10.0
    @Option(
        help:
            ArgumentHelp(
                "Lowest acceptable defect mIoU on live frames (0.42–0.66 in release builds with two minutes of training; the defaults "
                    + "train a "
                    + "fixed 18 passes).")
    ) var minIou = 0.25
    @Option(
        help:
            ArgumentHelp(
                "Confidence threshold for live inspection (the page's slider). A pixel counts as a defect when its class's probability "
                    + "reaches it; 0.85 keeps false fails out.")
    ) var threshold = 0.85
    @Flag(help: "Stop after the measurement instead of serving until Ctrl-C.") var exitWhenDone = false
    @Option(
        help:
            ArgumentHelp(
                "The GigE Vision simulator for the triggered station (default: built from Tests/FakeGigE when run from the repository; "
                    + "without either the station is left out).")
    )
    var fakeGige: String?
    @Option(help: "Triggers the triggered station's PLC fires over Modbus (0: no station).") var stationTriggers = 20
    @Option(
        help: """
            Where the manager keeps its stores: sqlite (one manager, its files in the data folder) or postgres (two managers \
            sharing a PostgreSQL database of the demo's own, Debian's postgresql; the cameras spread over them).
            """) var storage = "sqlite"
    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        guard ["sqlite", "postgres"].contains(storage) else {
            throw ValidationError("--storage must be sqlite or postgres, not \(storage)")
        }
    }

    static let cameras = ["cam-1", "cam-2", "cam-3"]
    static let password = "loupe-demo-admin"
    static let inspectionType = "demo-part"
    static let (width, height) = (640, 512)
    static var classes: [[String: Any]] {
        [
            ["index": 1, "name": "scratch", "color": 0xE6194B], ["index": 2, "name": "spot", "color": 0x3CB44B],
            ["index": 3, "name": "crack", "color": 0x4363D8],
        ]
    }

    func run() async throws {
        var options = logging
        if options.logLevel == nil && ProcessInfo.processInfo.environment["LOUPE_LOG_LEVEL"] == nil { options.logLevel = "warning" }
        let logger = try options.bootstrap(label: "loupe.demo")
        let started = ContinuousClock.now
        let temporary = dataDir == nil
        let root = try dataDir ?? Self.temporaryFolder()
        defer { if temporary && exitWhenDone { try? FileManager.default.removeItem(atPath: root) } }
        func step(_ text: String) {
            say(String(format: "[%5.1f s] ", (ContinuousClock.now - started).seconds) + text)
        }

        // 1. The fleet PKI.
        step("making a fleet CA and certificates in \(root)")
        let pki = try LocalFleetPKI(folder: root + "/pki", organization: "Loupe demo plant")
        func issue(_ role: FleetRole, _ name: String, hosts: [String] = []) throws -> TLSFiles {
            try pki.member(role, name, hosts: hosts)
        }

        // 2. The manager (or two on one database), then three agents on synthetic cameras of one part.
        var database: PostgresServer?
        defer { if let database { temporary && exitWhenDone ? database.discard() : database.stop() } }
        var shared: ManagerConfig.StorageConfig?
        if storage == "postgres" {
            // In a folder of its own under the system's temporary folder: run as root, the server runs as `postgres`,
            // which must reach it (the demo's own folder is private).
            let folder = NSTemporaryDirectory() + "loupe-demo-postgres-\(UUID().uuidString.prefix(8))"
            let server = try await PostgresServer.start(folder: folder)
            database = server
            shared = .init(postgres: try await server.createDatabase("loupe_demo"))
            step("PostgreSQL on 127.0.0.1:\(server.port) (\(server.folder)): one database for two managers")
        }
        let managerTLS = try issue(.manager, "manager", hosts: ["localhost", "127.0.0.1"])
        try FileManager.default.createDirectory(atPath: root + "/manager", withIntermediateDirectories: true)
        var managers: [InProcessManager] = []
        for name in shared == nil ? ["demo-plant"] : ["demo-plant-a", "demo-plant-b"] {
            let dataDir = root + (shared == nil ? "/manager" : "/\(name)")
            var config = ManagerConfig(
                managerId: name, listen: "127.0.0.1:0", tls: managerTLS, revocationList: nil, dataDir: dataDir,
                heartbeatSeconds: 2, idleTimeoutSeconds: 10)
            config.trainingThreads = ProcessInfo.processInfo.activeProcessorCount
            // A plant's managers sign with one key (made by the first); agents trust its public half.
            config.signingKey = root + "/manager/model-signing.key"
            config.storage = shared
            let manager = try await InProcessManager.start(config, logger: logger)
            managers.append(manager)
            step("manager \(name) listening on 127.0.0.1:\(manager.port)")
        }
        let managerConfig = managers[0].config
        let port = managers[0].port

        let urls = LateBound<[String: String]>()
        urls.set([:])
        let lock = NSLock()
        var agents: [AgentAssembly] = []
        for (index, camera) in Self.cameras.enumerated() {
            // With two managers the cameras alternate between them, each with the other as its fallback.
            let own = managers[index % managers.count]
            var link = AgentConfig.ManagerLink(
                address: "localhost:\(own.port)", heartbeatSeconds: 2, idleTimeoutSeconds: 10,
                statusIntervalSeconds: 1, reconnectInitialSeconds: 0.2, reconnectMaxSeconds: 2)
            let others = managers.filter { $0 !== own }.map { "localhost:\($0.port)" }
            if !others.isEmpty { link.fallbackAddresses = others }
            var config = AgentConfig(
                cameraId: camera,
                manager: link,
                tls: try issue(.agent, camera, hosts: ["localhost"]), dataDir: root + "/\(camera)",
                http: .init(address: "127.0.0.1:0", initialAdminPassword: Self.password),
                camera: .init(
                    source: .synthetic, width: Self.width, height: Self.height, framesPerSecond: 5, seed: UInt64(100 + index),
                    inferenceThreads: 1, live: false))
            config.camera?.partSeed = 7
            config.modelKeys = [(managerConfig.signingKeyPath as NSString).deletingPathExtension + ".pub"]
            agents.append(
                try await AgentAssembly(config: config, logger: logger) { url in
                    lock.withLock { urls.set((urls.value ?? [:]).merging([camera: url]) { $1 }) }
                })
        }
        let agentGroup = ServiceGroup(
            configuration: .init(
                services: agents.flatMap(\.services).map { .init(service: $0) },
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        let agentTask = Task { try await agentGroup.run() }
        func stopAll() async {
            await agentGroup.triggerGracefulShutdown()
            _ = try? await agentTask.value
            for manager in managers { await manager.stop() }
        }
        do {
            try await Self.waitFor("the agents to serve their pages and reach the manager", timeout: .seconds(60)) {
                (urls.value?.count ?? 0) == Self.cameras.count && agents.allSatisfy { $0.link.connection != nil }
            }
            step("3 agents connected: \(Self.cameras.map { "\($0) \(urls.value?[$0] ?? "")" }.joined(separator: ", "))")
            if managers.count > 1 {
                step(
                    managers.enumerated().map { number, manager in
                        let served = Self.cameras.enumerated().filter { $0.offset % managers.count == number }.map(\.element)
                        return "\(manager.config.managerId) serves " + served.joined(separator: ", ")
                    }.joined(separator: "; "))
            }

            // 3. Label ROIs from the synthetic ground truth, through each agent's API.
            let recipe = Self.recipe
            var labelled = 0
            for (index, camera) in Self.cameras.enumerated() {
                let api = try await AgentPageClient.signIn(base: urls.value![camera]!, user: "admin", password: Self.password)
                var labelling = SyntheticCamera.Configuration(width: Self.width, height: Self.height, seed: UInt64(900 + index))
                labelling.partSeed = 7
                let partCamera = try SyntheticCamera(configuration: labelling)
                try await api.send("PUT", "/api/v1/classes", json: Self.classes)
                let reference = try await api.importImage(try PNGCodec.encode(partCamera.reference), name: "reference.png")
                var withReference = recipe
                withReference["referenceCapture"] = reference
                try await api.send("PUT", "/api/v1/recipe", json: withReference)
                for frameIndex in 0..<frames {
                    let (frame, _) = partCamera.render()
                    // The frame as the agent stores a camera capture: aligned to the reference, with its true labels.
                    let aligned = try frame.image.warped(by: frame.pose.inverse, width: Self.width, height: Self.height)
                    let number = try await api.importImage(try PNGCodec.encode(aligned), name: "frame-\(frameIndex).png")
                    for roi in Self.rois {
                        let mask = try frame.referenceMask.cropped(to: roi.rect)
                        try await api.send(
                            "PUT", "/api/v1/captures/\(number)/rois/\(roi.name)/mask", body: try PNGCodec.encode(mask), type: "image/png")
                        try await api.send("PUT", "/api/v1/captures/\(number)/rois/\(roi.name)/include", json: ["include": true])
                        labelled += 1
                    }
                }
                step("\(camera): \(frames) frames, \(frames * Self.rois.count) ROIs labelled from ground truth and ticked")
            }

            // 4. Sync.
            try await Self.waitFor("the outboxes to drain", timeout: .seconds(120)) {
                for agent in agents where ((try? await agent.runtime.store.outboxDepth()) ?? 1) > 0 { return false }
                return true
            }
            step("\(labelled) labelled ROIs synced to the manager")

            // 5. Train centrally, with a progress bar.
            let operatorTLS = try issue(.operator, "demo")
            let version = try await Self.train(port: port, tls: operatorTLS, passes: trainPasses, seconds: trainSeconds)
            step("trained and signed \(version)")

            // 6. Push it to the three cameras: through the last manager's registry (with two, the database's notification
            // has the other offer it to its own cameras at once).
            let registry = try await ManagerStorage.open(managers[managers.count - 1].config, logger: logger).models
            try await registry.assign(version, to: Self.cameras)
            // Installed, and swapped into each camera's live pipeline (what the live figures below and its calibrated
            // threshold are read from).
            try await Self.waitFor("the cameras to install \(version)", timeout: .seconds(60)) {
                agents.allSatisfy {
                    $0.runtime.shelf.state.current?.version == version && $0.runtime.pipeline.currentInspector.modelVersion == version
                }
            }
            step("\(version) pushed, verified and installed on \(Self.cameras.joined(separator: ", "))")
            if let calibrated = agents.first?.runtime.pipeline.currentInspector.segmenter?.model.metadata.calibratedThreshold,
                calibrated > 0
            {
                step(
                    String(
                        format:
                            "%@'s calibrated threshold: %.2f (where its defect IoU on validation peaked); live runs at %.2f (--threshold)",
                        version, calibrated, threshold))
            }

            // 7. Live inspection, measured against ground truth.
            for camera in Self.cameras {
                let api = try await AgentPageClient.signIn(base: urls.value![camera]!, user: "admin", password: Self.password)
                try await api.send("PUT", "/api/v1/live", json: ["live": true, "threshold": threshold])
            }
            step("live inspection on; measuring for \(Int(liveSeconds)) s")
            var pooled: [String: [Int: (intersection: Int, union: Int)]] = [:]
            var seen: [String: Int] = [:]
            var verdicts: [String: Verdicts] = [:]
            let until = ContinuousClock.now + .seconds(liveSeconds)
            while ContinuousClock.now < until {
                for agent in agents {
                    let camera = agent.runtime.config.cameraId
                    guard let latest = agent.runtime.pipeline.latest, latest.outcome.result.sequence != seen[camera],
                        latest.outcome.result.modelVersion == version,
                        let check = try latest.checkAgainstTruth(failRule: Self.failRule)
                    else { continue }
                    seen[camera] = latest.outcome.result.sequence
                    verdicts[camera, default: Verdicts()].add(truthFails: check.truthFails, fails: latest.outcome.result.verdict == .fail)
                    for (label, counts) in check.overlap {
                        pooled[camera, default: [:]][label, default: (0, 0)].intersection += counts.intersection
                        pooled[camera, default: [:]][label, default: (0, 0)].union += counts.union
                    }
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            // Each defect class's IoU, pooled over every live frame (as mIoU is computed), then their mean.
            func meanIoU(_ counts: [Int: (intersection: Int, union: Int)]) -> Double? {
                let scores = counts.values.filter { $0.union > 0 }.map { Double($0.intersection) / Double($0.union) }
                return scores.isEmpty ? nil : scores.reduce(0, +) / Double(scores.count)
            }
            var rows: [[String]] = []
            var fleet: [Int: (intersection: Int, union: Int)] = [:]
            for agent in agents {
                let camera = agent.runtime.config.cameraId
                let live = agent.runtime.pipeline.statistics
                let counts = pooled[camera] ?? [:]
                for (label, c) in counts {
                    fleet[label, default: (0, 0)].intersection += c.intersection
                    fleet[label, default: (0, 0)].union += c.union
                }
                rows.append([
                    camera, live.modelVersion, String(format: "%.1f", live.framesPerSecond),
                    String(format: "%.0f / %.0f ms", live.p50["total"] ?? 0, live.p99["total"] ?? 0),
                    "\(live.framesInspected)", "\(live.passCount) / \(live.failCount)",
                    verdicts[camera]?.summary ?? "-",
                    meanIoU(counts).map { String(format: "%.3f", $0) } ?? "-",
                ])
            }
            say(
                TextTable.render(
                    header: [
                        "camera", "model", "fps", "latency p50 / p99", "frames", "pass / fail", "verdicts right (false fail, missed)",
                        "defect mIoU",
                    ], rows: rows))
            let all = verdicts.values.reduce(Verdicts()) { $0.merged($1) }
            step(
                "verdicts against ground truth (a true region of \(Self.failRule.minimumDefectPixels)+ px fails a frame): \(all.right) of "
                    + "\(all.total) right, \(all.falseFail) false fails, \(all.missed) missed"
            )
            let names = [1: "scratch", 2: "spot", 3: "crack"]
            let perClass = fleet.keys.sorted().map { label in
                String(
                    format: "%@ %.3f", names[label] ?? "class \(label)",
                    Double(fleet[label]!.intersection) / Double(max(1, fleet[label]!.union)))
            }.joined(separator: ", ")
            let meanIoU = meanIoU(fleet) ?? 0
            step(
                String(
                    format: "defect mIoU on live frames against ground truth: %.3f (%@; confidence threshold %.2f; at least %.2f needed)",
                    meanIoU, perClass, threshold, minIou))
            // 8. The triggered station: a GigE Vision camera, triggers and verdicts over Modbus.
            if stationTriggers > 0 {
                if let helper = try DemoStation.helper(fakeGige, root: root) {
                    let station = DemoStation(
                        root: root, helper: helper, tls: try issue(.agent, DemoStation.camera, hosts: ["localhost"]), managerPort: port,
                        modelKey: (managerConfig.signingKeyPath as NSString).deletingPathExtension + ".pub",
                        version: version, registry: registry,
                        threshold: threshold, logger: logger)
                    let outcome = try await station.run(triggers: stationTriggers, step: step)
                    try Self.report(outcome, step: step)
                } else {
                    step("triggered station left out: no GigE Vision simulator (run from the repository, or give --fake-gige PATH)")
                }
            }
            say("Label & Train pages (user admin, password \(Self.password)):")
            for camera in Self.cameras { say("  \(camera): \(urls.value?[camera] ?? "")/") }
            if meanIoU < minIou {
                say("FAILED: the live IoU \(String(format: "%.3f", meanIoU)) is below \(minIou)")
                await stopAll()
                throw ExitCode(1)
            }
            if exitWhenDone {
                step("done")
                await stopAll()
                return
            }
            say("Serving until Ctrl-C. Data in \(root).")
            _ = try? await agentTask.value
            await stopAll()
        } catch {
            await stopAll()
            throw error
        }
    }

    /// What the station's PLC saw; throws when a verdict was lost, repeated, out of order or not the agent's own.
    static func report(_ outcome: DemoStation.Outcome, step: (String) -> Void) throws {
        let names: [UInt16: String] = [1: "pass", 2: "fail", 3: "not aligned", 4: "no model"]
        let sequences = outcome.read.map(\.trigger)
        let verdicts = outcome.read.map { names[$0.verdict] ?? "\($0.verdict)" }
        let agent = outcome.agentVerdicts.map { verdict -> String in
            switch verdict {
            case .pass: return "pass"
            case .fail: return "fail"
            case .notAligned: return "not aligned"
            case .noModel: return "no model"
            }
        }
        let cycles = outcome.cycles.sorted()
        let counts = Dictionary(grouping: verdicts, by: { $0 }).map { "\($0.value.count) \($0.key)" }.sorted().joined(separator: ", ")
        step(
            String(
                format: "station PLC: %d triggers over Modbus, %d verdicts read (%@), %d missed; cycle p50 %.0f ms, max %.0f ms",
                outcome.triggers, outcome.read.count, counts, outcome.missed, cycles[cycles.count / 2], cycles.last ?? 0))
        step("station part: its ground truth fails (chosen so); the model said \(verdicts.last ?? "-")")
        guard sequences == Array(1...outcome.triggers) else {
            throw ValidationError("the PLC read trigger numbers \(sequences), not 1…\(outcome.triggers) once each in order")
        }
        guard verdicts == agent else { throw ValidationError("the PLC's verdicts \(verdicts) are not the agent's own \(agent)") }
        guard outcome.missed == 0 else {
            throw ValidationError("\(outcome.missed) triggers were missed with the PLC waiting for each result")
        }
    }

    static let rois: [(name: String, rect: PixelRect)] = [
        ("nw", PixelRect(x: 120, y: 80, width: 192, height: 160)), ("ne", PixelRect(x: 328, y: 80, width: 192, height: 160)),
        ("sw", PixelRect(x: 120, y: 272, width: 192, height: 160)), ("se", PixelRect(x: 328, y: 272, width: 192, height: 160)),
    ]

    /// The recipe's fail rule: a defect region of 30 px fails a frame.
    static let failRule = FailRule(minimumDefectPixels: 30)

    /// Live verdicts against the ones the true labels give.
    struct Verdicts {
        var right = 0, falseFail = 0, missed = 0
        var total: Int { right + falseFail + missed }
        var summary: String { "\(right) of \(total) (\(falseFail), \(missed))" }

        mutating func add(truthFails: Bool, fails: Bool) {
            if truthFails == fails { right += 1 } else if fails { falseFail += 1 } else { missed += 1 }
        }

        func merged(_ other: Verdicts) -> Verdicts {
            Verdicts(right: right + other.right, falseFail: falseFail + other.falseFail, missed: missed + other.missed)
        }
    }

    static var recipe: [String: Any] {
        [
            "version": 0, "inspectionType": inspectionType,
            "template": ["x": 160, "y": 128, "width": 320, "height": 256],
            "rois": rois.map {
                ["name": $0.name, "rect": ["x": $0.rect.x, "y": $0.rect.y, "width": $0.rect.width, "height": $0.rect.height]]
            },
            "confidenceThreshold": 0.5, "failRule": ["minimumDefectPixels": failRule.minimumDefectPixels],
        ]
    }

    static func temporaryFolder() throws -> String {
        var template = Array((NSTemporaryDirectory() + "/loupe-demo-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw ValidationError("cannot make a temporary folder") }
        return String(cString: made)
    }

    /// Polls `condition` every `interval` until it holds; a timeout names what was awaited.
    static func waitFor(
        _ what: String, timeout: Duration, every interval: Duration = .milliseconds(100), _ condition: () async throws -> Bool
    ) async throws {
        let deadline = ContinuousClock.now + timeout
        while !(try await condition()) {
            guard ContinuousClock.now < deadline else { throw ValidationError("timed out waiting for \(what)") }
            try await Task.sleep(for: interval)
        }
    }

    /// Starts a central training job as an operator and follows it to the end.
    static func train(port: Int, tls: TLSFiles, passes: Int, seconds: Double?) async throws -> String {
        let follower = TrainingFollower()
        let client = WireClientConfiguration(host: "localhost", port: port, tls: tls)
        return try await WireClient.withConnection(client, handler: follower.handler) { connection, _ in
            var start = Loupe_V1_TrainingStart()
            start.inspectionType = inspectionType
            if let seconds {
                start.timeBudgetSeconds = UInt32(seconds.rounded())
            } else {
                start.iterations = UInt32(passes)
            }
            start.seed = 1
            _ = try await connection.request(.trainingStart(start))
            let final = try await follower.wait(on: connection)
            guard final.state == .succeeded else { throw ValidationError("training ended \(final.state): \(final.message)") }
            say(
                String(
                    format: "validation mIoU %.3f (per class: %@)", final.validationMiou,
                    final.validationClassIou.map { String(format: "%.3f", $0) }.joined(separator: " ")))
            return final.modelVersion
        }
    }
}

/// Unbuffered output, so the demo's lines and progress keep their order on a pipe.
func say(_ text: String) {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}
