import Crypto
import Foundation
import GRDB
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import LoupeAgent
import LoupeManager
import LoupePKI
import LoupeProto
import LoupeSegmentation
import LoupeWire
import Testing
import LoupeTesting

/// Model distribution between real `loupe manager` and `loupe agent` processes.
@Suite(.serialized) struct ModelPushProcessTests {
    func installed(_ dataDir: String) -> ModelShelf.State? {
        guard let data = FileManager.default.contents(atPath: dataDir + "/models/installed.json") else { return nil }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try? decoder.decode(ModelShelf.State.self, from: data)
    }

    func loupe(_ arguments: [String], log: String, environment: [String: String] = [:]) async throws -> String {
        let (status, output) = try await runLoupe(arguments, log: log, environment: environment, timeout: .seconds(60))
        #expect(status == 0, "loupe \(arguments.joined(separator: " ")) failed:\n\(output)")
        return output
    }

    /// On both registries: the SQLite one's file altered on the manager's disk, the PostgreSQL one's piece altered in the database.
    @Test(arguments: StoreBackend.all)
    func aPushedModelIsInstalledAndATamperedOneIsRefusedWhileTheOldOneRuns(_ kind: StoreBackend.Kind) async throws {
        let pki = try TestPKI()
        let managerData = pki.dir + "/manager-data"
        let backend = try await StoreBackend(kind, folder: managerData)
        let setup = try ManagerProcessSetup(pki: pki, extra: backend.managerConfig)
        let (manager, port) = try await setup.start()
        #expect(FileManager.default.fileExists(atPath: managerData + "/model-signing.pub"))

        // The agent trusts the manager's public key, and nothing else from outside.
        let agentData = pki.dir + "/agent-m-data"
        let agentConfig = try await writeAgentConfig(
            pki: pki, camera: "cam-m", port: port, dataDir: agentData, extra: ["modelKeys": [managerData + "/model-signing.pub"]],
            inspectionType: "disc")
        let agent = try LoupeProcess(["agent", "--config", agentConfig], log: pki.dir + "/agent-m.log")
        let fleet = try fleetEnvironment(pki: pki, port: port)
        let known = try await eventually {
            try await runLoupe(["camera", "list"], log: pki.dir + "/camera-list.log", environment: fleet).output.contains("cam-m")
        }
        #expect(known, "\(agent.log)")

        // Publish and push a model: it reaches the camera, which reports it installed.
        let modelPath = pki.dir + "/trained.loupe"
        try ModelFile.write(SegmentationTests.LivePipelineTests.constantModel(), to: modelPath)
        let published = try await loupe(
            ["model", "publish", modelPath, "--inspection-type", "disc", "--manager-config", setup.configPath],
            log: pki.dir + "/publish-1.log")
        #expect(published.contains("published disc-v1"), "\(published)")
        _ = try await loupe(["model", "push", "disc-v1", "--cameras", "cam-m"], log: pki.dir + "/push-1.log", environment: fleet)
        let first = try await eventually(timeout: .seconds(30)) { installed(agentData)?.current?.version == "disc-v1" }
        #expect(first, "disc-v1 never installed:\n\(agent.log)\n\(manager.log)")
        let registry = try await backend.models()
        let recorded = try await eventually { try await registry.camera("cam-m")?.installedVersion == "disc-v1" }
        #expect(recorded, "the manager never heard of the install:\n\(manager.log)")
        #expect(installed(agentData)?.current?.origin == "manager")

        // A second version, altered on the manager's disk after signing: the agent refuses it and keeps disc-v1.
        var second = SegmentationModel(weights: Weights(configuration: .standard, seed: 11))
        second.metadata.description = "second"
        try ModelFile.write(second, to: modelPath)
        _ = try await loupe(
            ["model", "publish", modelPath, "--inspection-type", "disc", "--manager-config", setup.configPath],
            log: pki.dir + "/publish-2.log")
        switch kind {
        case .sqlite:
            let stored = managerData + "/models/disc-v2.loupe"
            var bytes = try Data(contentsOf: URL(fileURLWithPath: stored))
            bytes[bytes.count / 2] ^= 0x01
            try bytes.write(to: URL(fileURLWithPath: stored))
        case .postgres:
            try await PostgresServer.shared().execute(
                """
                UPDATE model_file_piece SET data = set_byte(data, length(data) / 2, get_byte(data, length(data) / 2) # 1)
                WHERE version = 'disc-v2' AND piece = 0
                """, in: try #require(backend.settings))
        }
        _ = try await loupe(["model", "push", "disc-v2", "--cameras", "cam-m"], log: pki.dir + "/push-2.log", environment: fleet)
        let refused = try await eventually(timeout: .seconds(30)) {
            (try await registry.camera("cam-m")?.lastError ?? "").contains("disc-v2")
        }
        #expect(refused, "the refusal never reached the manager:\n\(agent.log)\n\(manager.log)")
        let lastError = try await registry.camera("cam-m")?.lastError ?? ""
        #expect(lastError.contains("SHA-256"), "\(lastError)")
        #expect(try await registry.camera("cam-m")?.installedVersion == "disc-v1")
        #expect(installed(agentData)?.current?.version == "disc-v1")
        #expect(!FileManager.default.fileExists(atPath: agentData + "/models/disc-v2.loupe"))
        #expect(agent.process.isRunning)

        // Rolling back to disc-v1 (the version before disc-v2): nothing to fetch, reported at once.
        let back = try await loupe(["model", "rollback", "--cameras", "cam-m"], log: pki.dir + "/rollback.log", environment: fleet)
        #expect(back.contains("cam-m: now meant to run disc-v1"), "\(back)")
        let clean = try await eventually {
            let row = try await registry.camera("cam-m")
            return row?.desiredVersion == "disc-v1" && row?.installedVersion == "disc-v1"
        }
        #expect(clean)

        agent.signal(SIGTERM)
        #expect(await agent.waitForExit() == 0)
        manager.signal(SIGTERM)
        #expect(await manager.waitForExit() == 0)
    }

    /// Calls the agent's API with a bearer token; returns status and JSON.
    func call(_ base: String, _ method: String, _ path: String, token: String?, body: Any? = nil) async throws -> (Int, Any?) {
        let (status, data) = try await agentHTTP(
            base, method, path, token: token, body: try body.map { try JSONSerialization.data(withJSONObject: $0) })
        return (status, try? JSONSerialization.jsonObject(with: data))
    }

    /// On both backends: with PostgreSQL the ROIs, the queue's published model and the camera's row are all in the database.
    @Test(arguments: StoreBackend.all)
    func trainingAskedForOnACameraRunsOnTheManagerAndTheModelComesBack(_ kind: StoreBackend.Kind) async throws {
        let pki = try TestPKI()
        let managerData = pki.dir + "/manager-data"
        let backend = try await StoreBackend(kind, folder: managerData)
        let setup = try ManagerProcessSetup(pki: pki, extra: backend.managerConfig)
        let (manager, port) = try await setup.start()
        let agentData = pki.dir + "/agent-t-data"
        _ = try await SyncProcessTests.seedAgentStore(agentData, count: 12)
        let agentConfig = try await writeAgentConfig(
            pki: pki, camera: "cam-t", port: port, dataDir: agentData,
            extra: [
                "modelKeys": [managerData + "/model-signing.pub"],
                "http": ["address": "127.0.0.1:0", "initialAdminPassword": "camera-admin-pw"],
            ])
        let agent = try LoupeProcess(["agent", "--config", agentConfig], log: pki.dir + "/agent-t.log")
        let base = try await agent.loggedAddress(after: "http listening")
        let address = try #require(base, "agent never said where it listens:\n\(agent.log)")
        let token = try await agentToken(address, password: "camera-admin-pw")
        // Wait until the link is up, then ask for training from the camera's API.
        let linked = try await eventually(timeout: .seconds(20)) { agent.log.contains("connected to manager") }
        #expect(linked, "\(agent.log)")
        let (started, job) = try await call(address, "POST", "/api/v1/training", token: token, body: ["iterations": 2, "seed": 3])
        #expect(started == 202, "\(String(describing: job))")
        #expect((job as? [String: Any])?["location"] as? String == "manager")
        // The camera's labels were synced before the job ran; the job ran centrally and its model was pushed back here.
        let done = try await eventually(timeout: .seconds(120)) {
            let (_, status) = try await call(address, "GET", "/api/v1/training", token: token)
            return (status as? [String: Any])?["state"] as? String == "succeeded"
        }
        #expect(done, "training never finished:\n\(agent.log)\n\(manager.log)")
        let (_, status) = try await call(address, "GET", "/api/v1/training", token: token)
        let version = try #require((status as? [String: Any])?["modelVersion"] as? String)
        #expect(version == "disc-v1")
        let installedHere = try await eventually(timeout: .seconds(30)) { installed(agentData)?.current?.version == version }
        #expect(installedHere, "the trained model never reached the camera:\n\(agent.log)")
        let registry = try await backend.models()
        #expect(try await registry.version(version).inspectionType == "disc")
        let reported = try await eventually { try await registry.camera("cam-t")?.installedVersion == version }
        #expect(reported, "the install report never reached the registry:\n\(manager.log)")
        #expect(try await backend.trainingData().count() == 12)
        // The camera's live pipeline now runs it.
        let (_, live) = try await call(address, "GET", "/api/v1/live", token: token)
        #expect((live as? [String: Any])?["modelVersion"] as? String == version)

        agent.signal(SIGTERM)
        #expect(await agent.waitForExit() == 0)
        manager.signal(SIGTERM)
        #expect(await manager.waitForExit() == 0)
    }
}

extension ModelPushProcessTests {
    @Test func aRestartedManagerStillKnowsItsCamerasAndPushesByInspectionType() async throws {
        let pki = try TestPKI()
        let setup = try ManagerProcessSetup(pki: pki)
        let (manager, port) = try await setup.start()
        let alice = try pki.member(.operator, "alice")
        func fleet() async throws -> [Loupe_V1_CameraStatus] {
            try await WireClient.withConnection(
                WireClientConfiguration(host: "localhost", port: port, tls: alice, connectTimeout: .seconds(3))
            ) { connection, _ in
                let reply = try await connection.request(.fleetStatusQuery(Loupe_V1_FleetStatusQuery()))
                guard case .fleetStatusReply(let fleet) = reply.body else { return [] }
                return fleet.cameras
            }
        }
        let config = try await writeAgentConfig(pki: pki, camera: "cam-r", port: port)
        let agent = try LoupeProcess(["agent", "--config", config], log: pki.dir + "/agent-r.log")
        let reported = try await eventually {
            try await fleet().contains { $0.cameraID == "cam-r" && $0.online && $0.status.inspectionType == "default" }
        }
        #expect(reported, "\(agent.log)")
        let firstSeen = try #require(try await fleet().first { $0.cameraID == "cam-r" }?.firstSeenUnixMs)
        agent.signal(SIGTERM)
        #expect(await agent.waitForExit() == 0)

        // Kill the manager and start it again: the camera is still listed, offline, with its history.
        manager.signal(SIGKILL)
        _ = await manager.waitForExit()
        let (restarted, _) = try await ManagerProcessSetup(pki: pki, port: port).start()
        let known = try #require(
            try await fleet().first { $0.cameraID == "cam-r" }, "the restarted manager forgot cam-r:\n\(restarted.log)")
        #expect(!known.online && known.firstSeenUnixMs == firstSeen && known.status.inspectionType == "default")

        // A push to every camera of an inspection type reaches it, although it is offline now.
        let modelPath = pki.dir + "/m.loupe"
        try ModelFile.write(SegmentationTests.LivePipelineTests.constantModel(), to: modelPath)
        _ = try await loupe(
            ["model", "publish", modelPath, "--inspection-type", "default", "--manager-config", setup.configPath],
            log: pki.dir + "/publish-r.log")
        let pushed = try await loupe(
            ["model", "push", "default-v1", "--all-of-type"], log: pki.dir + "/push-r.log",
            environment: try fleetEnvironment(pki: pki, port: port))
        #expect(pushed.contains("assigned to cam-r"), "\(pushed)")
        let registry = try ModelRegistry(directory: pki.dir + "/manager-data", signingKeyPath: pki.dir + "/manager-data/model-signing.key")
        #expect(try registry.camera("cam-r")?.desiredVersion == "default-v1")
        restarted.signal(SIGTERM)
        #expect(await restarted.waitForExit() == 0)
    }

    /// Someone who can write the manager's database but does not hold its
    /// signing key sends a camera back to an older signed version, or to a
    /// version of another inspection type: the real agent refuses both and
    /// keeps its model; the operator's own rollback, signed as one, installs.
    @Test func aReplayedOrCrossTypeModelIsRefusedByTheAgentAndTheRunningModelStays() async throws {
        let pki = try TestPKI()
        let setup = try ManagerProcessSetup(pki: pki)
        let (manager, port) = try await setup.start()
        let managerData = pki.dir + "/manager-data"
        let agentData = pki.dir + "/agent-p-data"
        let agentConfig = try await writeAgentConfig(
            pki: pki, camera: "cam-p", port: port, dataDir: agentData,
            extra: ["modelKeys": [managerData + "/model-signing.pub"]], inspectionType: "disc")
        let agent = try LoupeProcess(["agent", "--config", agentConfig], log: pki.dir + "/agent-p.log")
        let fleet = try fleetEnvironment(pki: pki, port: port)
        let known = try await eventually {
            try await runLoupe(["camera", "list"], log: pki.dir + "/camera-list.log", environment: fleet).output.contains("cam-p")
        }
        #expect(known, "\(agent.log)")
        let modelPath = pki.dir + "/trained.loupe"
        for (index, type) in ["disc", "disc", "gear"].enumerated() {
            var model = SegmentationModel(weights: Weights(configuration: .standard, seed: UInt64(20 + index)))
            model.metadata.description = "model \(index + 1)"
            try ModelFile.write(model, to: modelPath)
            _ = try await loupe(
                ["model", "publish", modelPath, "--inspection-type", type, "--manager-config", setup.configPath],
                log: pki.dir + "/publish-\(index).log")
        }
        let registry = try ModelRegistry(directory: managerData, signingKeyPath: managerData + "/model-signing.key")
        var assignments: [String: (String?, String?)] = [:]
        for version in ["disc-v1", "disc-v2"] {
            _ = try await loupe(
                ["model", "push", version, "--cameras", "cam-p"], log: pki.dir + "/push-\(version).log", environment: fleet)
            let done = try await eventually(timeout: .seconds(30)) {
                let recorded = try registry.camera("cam-p")?.installedVersion
                return installed(agentData)?.current?.version == version && recorded == version
            }
            #expect(done, "\(version) never installed:\n\(agent.log)\n\(manager.log)")
            let row = try registry.camera("cam-p")
            assignments[version] = (row?.assignment, row?.assignmentSignature)
        }
        let accepted = installed(agentData)?.newestAssignment ?? 0
        #expect(accepted > 0)

        /// Points the camera's desired version at `version` behind the manager's back, and waits for the agent's refusal.
        func tamper(_ version: String, assignment: (String?, String?)) async throws -> String {
            try await database(managerData).write { db in
                try db.execute(
                    sql:
                        "UPDATE cameraModel SET desiredVersion = ?, assignment = ?, assignmentSignature = ?, lastError = NULL WHERE "
                        + "cameraId = 'cam-p'",
                    arguments: [version, assignment.0, assignment.1])
            }
            let refused = try await eventually(timeout: .seconds(30)) { (try registry.camera("cam-p")?.lastError ?? "").contains(version) }
            #expect(refused, "\(version) was never refused:\n\(agent.log)")
            let error = try registry.camera("cam-p")?.lastError ?? ""
            // Back to what the camera runs, so the next tamper is a change the manager offers.
            try await database(managerData).write { db in
                try db.execute(sql: "UPDATE cameraModel SET desiredVersion = 'disc-v2', lastError = NULL WHERE cameraId = 'cam-p'")
            }
            return error
        }
        // A replay: disc-v1 with the genuine, signed assignment it was first pushed with.
        let replay = try await tamper("disc-v1", assignment: try #require(assignments["disc-v1"]))
        #expect(replay.contains("an old offer replayed"), "\(replay)")
        // The same without any assignment, and another type's model.
        let stripped = try await tamper("disc-v1", assignment: (nil, nil))
        #expect(stripped.contains("no signed assignment"), "\(stripped)")
        let crossType = try await tamper("gear-v3", assignment: (nil, nil))
        #expect(crossType.contains("inspection type"), "\(crossType)")
        #expect(installed(agentData)?.current?.version == "disc-v2")
        #expect(!FileManager.default.fileExists(atPath: agentData + "/models/gear-v3.loupe"))
        #expect(agent.process.isRunning)

        // The operator's rollback to disc-v1 is a new signed assignment, and the agent takes it; then the roll forward.
        _ = try await loupe(
            ["model", "rollback", "--cameras", "cam-p", "--to", "disc-v1"], log: pki.dir + "/rollback.log", environment: fleet)
        let back = try await eventually(timeout: .seconds(30)) { installed(agentData)?.current?.version == "disc-v1" }
        #expect(back, "the signed rollback never installed:\n\(agent.log)\n\(manager.log)")
        _ = try await loupe(["model", "push", "disc-v2", "--cameras", "cam-p"], log: pki.dir + "/push-again.log", environment: fleet)
        let forward = try await eventually(timeout: .seconds(30)) { installed(agentData)?.current?.version == "disc-v2" }
        #expect(forward, "the push after the rollback never installed:\n\(agent.log)")
        #expect((installed(agentData)?.newestAssignment ?? 0) > accepted)
        manager.signal(SIGTERM)
        agent.signal(SIGTERM)
        _ = await manager.waitForExit()
        _ = await agent.waitForExit()
    }

    func database(_ managerData: String) throws -> DatabaseQueue { try DatabaseQueue(path: managerData + "/models.sqlite") }
}
