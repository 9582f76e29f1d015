import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import LoupeImaging
import LoupePKI
import LoupeProto
import LoupeSegmentation
import LoupeWire
import Testing
import LoupeTesting

/// The fleet CLI against a real `loupe manager` and three real `loupe agent`
/// processes on synthetic cameras, on loopback: labels synced from all three,
/// central training, a push to all, canary rollouts decided by the cameras'
/// live results, rollback, and `loupe status` turning non-zero when a camera
/// stops.
@Suite(.serialized) struct FleetCLIProcessTests {
    struct Camera {
        let id: String
        let process: LoupeProcess
        let api: String
        let token: String
        let config: String
        let dataDir: String
    }

    /// One call on an agent's API.
    static func call(
        _ base: String, _ method: String, _ path: String, token: String?, body: Data? = nil, type: String = "application/json"
    ) async throws -> (Int, Any?) {
        let (status, data) = try await agentHTTP(
            base, method, path, token: token, body: body, headers: body == nil ? [:] : ["Content-Type": type])
        return (status, try? JSONSerialization.jsonObject(with: data))
    }

    static func json(_ object: Any) throws -> Data { try JSONSerialization.data(withJSONObject: object) }

    /// Starts an agent on a synthetic camera, sets up its recipe through its
    /// API and labels `labelled` captures with a painted blob in the ROI.
    static func startCamera(
        _ id: String, seed: Int, pki: TestPKI, port: Int, managerData: String, labelled: Int,
        signingKey: String? = nil, managerLink: [String: Any] = [:]
    ) async throws -> Camera {
        let dataDir = pki.dir + "/\(id)-data"
        let config = try await writeAgentConfig(
            pki: pki, camera: id, port: port, dataDir: dataDir, manager: managerLink,
            extra: [
                "modelKeys": [signingKey ?? managerData + "/model-signing.pub"],
                "http": ["address": "127.0.0.1:0", "initialAdminPassword": "password-\(id)"],
                "camera": [
                    "source": "synthetic", "width": 640, "height": 512, "framesPerSecond": 4, "seed": seed, "partSeed": 5,
                    "inferenceThreads": 1, "precision": "fp32",
                ],
            ])
        let process = try LoupeProcess(["agent", "--config", config], log: pki.dir + "/\(id).log")
        let address = try #require(try await process.loggedAddress(after: "http listening"), "\(id) never listened:\n\(process.log)")
        let token = try await agentToken(address, password: "password-\(id)")
        let camera = Camera(id: id, process: process, api: address, token: token, config: config, dataDir: dataDir)
        try await camera.setUp(labelled: labelled)
        return camera
    }

    static func fleet(_ environment: [String: String], log: String) async throws -> (Int32?, [[String: Any]]) {
        let (status, output) = try await runLoupe(["status", "--json"], log: log, environment: environment)
        let start = output.firstIndex(of: "{") ?? output.startIndex
        let parsed = try JSONSerialization.jsonObject(with: Data(output[start...].utf8)) as? [String: Any]
        return (status, parsed?["cameras"] as? [[String: Any]] ?? [])
    }

    static func live(_ camera: Camera) async throws -> [String: Any] {
        let (_, live) = try await call(camera.api, "GET", "/api/v1/live", token: camera.token)
        return live as? [String: Any] ?? [:]
    }

    @Test func theCLIRunsAFleetOfThreeCamerasThroughTrainingPushCanaryAndRollback() async throws {
        let pki = try TestPKI()
        let setup = try ManagerProcessSetup(pki: pki)
        let (manager, port) = try await setup.start()
        let managerData = pki.dir + "/manager-data"
        let env = try fleetEnvironment(pki: pki, port: port)
        var step = 0
        func loupe(_ arguments: [String], expect expected: Int32 = 0, timeout: Duration = .seconds(120)) async throws -> String {
            step += 1
            let (status, output) = try await runLoupe(arguments, log: pki.dir + "/cli-\(step).log", environment: env, timeout: timeout)
            #expect(
                status == expected,
                "loupe \(arguments.joined(separator: " ")) exited \(String(describing: status)), expected \(expected):\n\(output)")
            return output
        }

        // Three cameras, each labelling four ROIs through its own API.
        var cameras: [Camera] = []
        for (index, id) in ["cam-a", "cam-b", "cam-c"].enumerated() {
            cameras.append(try await Self.startCamera(id, seed: 11 + index, pki: pki, port: port, managerData: managerData, labelled: 4))
        }

        // `loupe status --json` lists the three with their reports; the table too; exit 0 while all are online.
        let reported = try await eventually(timeout: .seconds(30)) {
            let (status, list) = try await Self.fleet(env, log: pki.dir + "/status-json.log")
            return status == 0 && list.count == 3
                && list.allSatisfy {
                    let report = $0["status"] as? [String: Any] ?? [:]
                    return $0["online"] as? Bool == true && report["inspection_type"] as? String == "part"
                        && report["recipe_version"] as? String == "1"
                        && report["disk_free_bytes"] as? Int ?? 0 > 0 && report["frames_per_second"] as? Double ?? 0 > 0
                        && (report["outbox_depth"] as? Int ?? 0) == 0  // proto3 JSON leaves zeros out
                }
        }
        let lastStatus = try await runLoupe(["status", "--json"], log: pki.dir + "/s.log", environment: env).output
        #expect(reported, "status never showed three synced cameras:\n\(lastStatus)\n\(manager.log)")
        let table = try await loupe(["status"])
        for camera in cameras { #expect(table.contains(camera.id) && table.contains("online"), "\(table)") }
        #expect(table.contains("PASS 1h") && table.contains("TO SYNC") && table.contains("DISK FREE"))

        // The dataset view counts every camera's ROIs (once the last ticks have synced).
        var statsOutput = ""
        let synced = try await eventually(timeout: .seconds(30)) {
            statsOutput = try await runLoupe(["dataset", "stats", "--json"], log: pki.dir + "/stats.log", environment: env).output
            return statsOutput.contains("\"rois\":12")
        }
        #expect(synced, "\(statsOutput)")
        let stats = try #require(try JSONSerialization.jsonObject(with: Data(statsOutput.utf8)) as? [String: Any])
        let part = try #require((stats["datasets"] as? [[String: Any]])?.first)
        #expect(part["inspection_type"] as? String == "part" && part["rois"] as? Int == 12, "\(statsOutput)")
        #expect(part["camera_rois"] as? [String: Int] == ["cam-a": 4, "cam-b": 4, "cam-c": 4], "\(statsOutput)")
        #expect((part["class_rois"] as? [Int])?.last == 12, "\(statsOutput)")
        // Each camera's unsure Library frames (from its status) sit beside its ROIs: where labels are needed.
        #expect(Set((part["camera_unsure_frames"] as? [String: Int] ?? [:]).keys) == ["cam-a", "cam-b", "cam-c"], "\(statsOutput)")
        #expect(try await loupe(["dataset", "stats"]).contains("UNSURE FRAMES TO REVIEW"))

        // Central training on all twelve, followed to the end, then pushed to every camera of the type.
        let trained = try await loupe(["train", "start", "--inspection-type", "part", "--iterations", "2"], timeout: .seconds(300))
        #expect(trained.contains("succeeded") && trained.contains("model part-v1"), "\(trained)\n\(manager.log)")
        let jobId = try #require(trained.split(separator: " ").first.map(String.init))
        #expect(try await loupe(["train", "status"]).contains(jobId))
        let logs = try await loupe(["train", "logs", jobId])
        #expect(logs.contains("queued") && logs.contains("running") && logs.contains("succeeded"), "\(logs)")
        let pushed = try await loupe(["model", "push", "part-v1", "--all-of-type", "--wait", "--timeout", "90"])
        #expect(pushed.contains("part-v1 installed on cam-a, cam-b, cam-c"), "\(pushed)")
        for camera in cameras {
            let running = try await eventually(timeout: .seconds(20)) {
                try await Self.live(camera)["modelVersion"] as? String == "part-v1"
            }
            #expect(running, "\(camera.id) does not run part-v1:\n\(camera.process.log)")
        }
        let exported = pki.dir + "/part-v1.onnx"
        _ = try await loupe(["model", "export-onnx", "part-v1", "--output", exported])
        #expect((try? Data(contentsOf: URL(fileURLWithPath: exported)).count) ?? 0 > 10_000)

        // A camera certificate may not push models.
        let agentEnv = try fleetEnvironment(pki: pki, port: port, name: "cam-a", role: .agent)
        let refused = try await runLoupe(
            ["model", "push", "part-v1", "--cameras", "cam-b"], log: pki.dir + "/agent-push.log", environment: agentEnv)
        #expect(refused.status != 0 && refused.output.contains("operator certificate"), "\(refused.output)")

        // A model that passes every part, then a canary of one that fails every part: rolled back on the canary's live results.
        let modelPath = pki.dir + "/constant.loupe"
        for (classIndex, version) in [(0, "part-v2"), (1, "part-v3"), (0, "part-v4")] {
            try ModelFile.write(SegmentationTests.LivePipelineTests.constantModel(classIndex: classIndex), to: modelPath)
            let published = try await loupe([
                "model", "publish", modelPath, "--inspection-type", "part", "--manager-config", setup.configPath,
            ])
            #expect(published.contains("published \(version)"), "\(published)")
        }
        _ = try await loupe(["model", "push", "part-v2", "--inspection-type", "part", "--wait", "--timeout", "90"])
        let canary = try await loupe([
            "model", "push", "part-v3", "--inspection-type", "part", "--canary", "cam-a", "--auto", "--observe", "3", "--min-parts", "4",
            "--max-defect-rate-increase", "0.2",
        ])
        #expect(canary.contains("rollout-1"), "\(canary)")
        let rolledBack = try await eventually(timeout: .seconds(90)) {
            try await loupe(["model", "rollout", "rollout-1"]).contains("rolled back")
        }
        let verdict = try await loupe(["model", "rollout", "rollout-1"])
        #expect(rolledBack && verdict.contains("defect rate rose"), "\(verdict)\n\(manager.log)")
        let back = try await eventually(timeout: .seconds(30)) { try await Self.live(cameras[0])["modelVersion"] as? String == "part-v2" }
        #expect(back, "cam-a never returned to part-v2:\n\(cameras[0].process.log)")
        for camera in cameras.dropFirst() {
            let version = try await Self.live(camera)["modelVersion"] as? String
            #expect(version == "part-v2")
        }

        // A canary that keeps the defect rate: promoted to the whole target.
        _ = try await loupe(["camera", "group", "line-1", "cam-a", "cam-b", "cam-c"])
        _ = try await loupe([
            "model", "push", "part-v4", "--group", "line-1", "--canary", "cam-b", "--auto", "--observe", "3", "--min-parts", "4",
        ])
        let promoted = try await eventually(timeout: .seconds(90)) {
            try await loupe(["model", "rollout", "rollout-2"]).contains("promoted")
        }
        let decided = try await loupe(["model", "rollout", "rollout-2"])
        #expect(promoted, "\(decided)\n\(manager.log)")
        for camera in cameras {
            let running = try await eventually(timeout: .seconds(30)) {
                try await Self.live(camera)["modelVersion"] as? String == "part-v4"
            }
            #expect(running, "\(camera.id) does not run part-v4")
        }
        let show = try await loupe(["camera", "show", "cam-b"])
        #expect(show.contains("part-v4") && show.contains("line-1") && show.contains("pass / fail, last hour"), "\(show)")

        // cam-c stops: status exits 2 and shows it offline. A rollback while it is away reaches it when it returns.
        cameras[2].process.signal(SIGTERM)
        #expect(await cameras[2].process.waitForExit() == 0)
        let offline = try await eventually(timeout: .seconds(20)) {
            let (status, list) = try await Self.fleet(env, log: pki.dir + "/status-offline.log")
            return status == 2 && list.first { $0["camera_id"] as? String == "cam-c" }?["online"] as? Bool != true
        }
        #expect(offline)
        _ = try await loupe(["status"], expect: 2)
        let rollback = try await loupe(["model", "rollback", "--group", "line-1", "--to", "part-v1"])
        #expect(rollback.contains("cam-c: now meant to run part-v1"), "\(rollback)")
        let restarted = try LoupeProcess(["agent", "--config", cameras[2].config], log: pki.dir + "/cam-c-2.log")
        let list = try await loupe(["model", "list"])
        #expect(list.contains("part-v4") && list.contains("rollout-2"))
        let returned = try await eventually(timeout: .seconds(60)) {
            let models = try await loupe(["model", "list", "--json"])
            let parsed = try JSONSerialization.jsonObject(with: Data(models.utf8)) as? [String: Any]
            return (parsed?["cameras"] as? [[String: Any]] ?? []).filter { $0["installed_version"] as? String == "part-v1" }.count == 3
        }
        #expect(returned, "\(restarted.log)\n\(manager.log)")
        _ = try await loupe(["status"])

        restarted.signal(SIGTERM)
        #expect(await restarted.waitForExit() == 0)
        for camera in cameras.prefix(2) {
            camera.process.signal(SIGTERM)
            #expect(await camera.process.waitForExit() == 0)
        }
        manager.signal(SIGTERM)
        #expect(await manager.waitForExit() == 0)
    }
}

extension FleetCLIProcessTests.Camera {
    /// Reference capture, recipe, classes and `labelled` painted, ticked ROIs.
    func setUp(labelled: Int) async throws {
        typealias T = FleetCLIProcessTests
        let (classes, _) = try await T.call(
            api, "PUT", "/api/v1/classes", token: token, body: T.json([["index": 1, "name": "scratch", "color": 0xFF0000]]))
        #expect(classes == 200)
        var captured = 0
        for _ in 0..<50 where captured == 0 {
            let (status, _) = try await T.call(api, "POST", "/api/v1/captures", token: token)
            if status == 201 { captured = 1 } else { try await Task.sleep(for: .milliseconds(200)) }
        }
        #expect(captured == 1, "no reference capture from the camera:\n\(process.log)")
        let (recipe, answer) = try await T.call(
            api, "PUT", "/api/v1/recipe", token: token,
            body: T.json([
                "version": 0, "inspectionType": "part", "referenceCapture": 1,
                "template": ["x": 160, "y": 128, "width": 320, "height": 256],
                "rois": [["name": "left", "rect": ["x": 140, "y": 160, "width": 64, "height": 64]]],
                "confidenceThreshold": 0.5, "failRule": ["minimumDefectPixels": 25],
            ]))
        #expect(recipe == 200, "\(String(describing: answer))")
        for index in 0..<labelled {
            let (status, capture) = try await T.call(api, "POST", "/api/v1/captures", token: token)
            #expect(status == 201)
            let number = try #require((capture as? [String: Any])?["number"] as? Int)
            var mask = try Image8(width: 64, height: 64)
            for y in (20 + index)..<(34 + index) { for x in 24..<40 { mask.samples[y * 64 + x] = 1 } }
            let (saved, _) = try await T.call(
                api, "PUT", "/api/v1/captures/\(number)/rois/left/mask", token: token, body: try PNGCodec.encode(mask), type: "image/png")
            #expect(saved == 200)
            let (ticked, _) = try await T.call(
                api, "PUT", "/api/v1/captures/\(number)/rois/left/include", token: token, body: T.json(["include": true]))
            #expect(ticked == 200)
        }
    }
}
