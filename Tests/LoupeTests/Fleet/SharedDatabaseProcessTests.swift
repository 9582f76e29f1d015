import Foundation
import Logging
import LoupeAgent
import LoupeManager
import LoupePKI
import LoupeProto
import LoupeSegmentation
import LoupeTesting
import LoupeWire
import Testing

/// Two real `loupe manager` processes on one PostgreSQL database, a camera
/// that knows both, and operators that reach either.
@Suite(.serialized) struct SharedDatabaseProcessTests {
    /// A manager of the shared database: its own data folder and id, the plant's one signing key, and by default a
    /// poll slowed to a minute, so whatever reaches it within the test's waits was carried by the database's notifications.
    static func manager(
        _ name: String, pki: TestPKI, database: PostgresSettings, pollSeconds: Double = 60,
        extra: [String: Any] = [:]
    ) throws -> ManagerProcessSetup {
        try ManagerProcessSetup(
            pki: pki,
            extra: extra.merging([
                "managerId": name,
                "dataDir": pki.dir + "/\(name)-data",
                "signingKey": pki.dir + "/plant-signing.key",
                "registryPollSeconds": pollSeconds,
                "storage": [
                    "postgres": [
                        "url": database.url, "passwordFile": database.passwordFile ?? "",
                        "answerSeconds": database.answerSeconds ?? PostgresServer.testAnswerSeconds,
                    ]
                ],
            ]) { $1 })
    }

    /// A `loupe worker` config for worker certificate `name`, claiming from these managers.
    static func workerConfig(_ name: String, pki: TestPKI, ports: [Int]) throws -> String {
        let files = try pki.member(.worker, name)
        let path = pki.dir + "/worker-\(name).json"
        try writeJSON(
            [
                "managers": ports.map { "localhost:\($0)" },
                "tls": ["ca": files.ca, "cert": files.cert, "key": files.key],
                "threads": 1, "claimWaitSeconds": 2, "reconnectSeconds": 0.5, "heartbeatSeconds": 0.5, "idleTimeoutSeconds": 5,
            ], to: path)
        return path
    }

    /// Two managers that leave training to workers, a worker killed (SIGKILL) while it trains a job asked for
    /// through the other manager: after its lease the job is taken by a second worker. That worker's manager is
    /// then killed (SIGKILL) mid-job: the worker moves to the other manager with the job and finishes it there;
    /// its model is signed once, and both managers report the job.
    @Test func aWorkerKilledMidJobLeavesTheJobToAnotherWorkerWhichKeepsItWhenItsManagerDies() async throws {
        let pki = try TestPKI()
        let database = try await PostgresServer.shared().createDatabase()
        let training: [String: Any] = ["trainingConcurrency": 0, "trainingLeaseSeconds": 3]
        let setupA = try Self.manager("manager-a", pki: pki, database: database, pollSeconds: 1, extra: training)
        let (managerA, portA) = try await setupA.start()
        defer { managerA.signal(SIGKILL) }
        let setupB = try Self.manager("manager-b", pki: pki, database: database, pollSeconds: 1, extra: training)
        let (managerB, portB) = try await setupB.start()
        defer { managerB.signal(SIGKILL) }

        // A camera on A sends its labelled ROIs.
        let agentData = pki.dir + "/agent-w-data"
        let total = 12
        _ = try await SyncProcessTests.seedAgentStore(agentData, count: total)
        let agentConfig = try await writeAgentConfig(
            pki: pki, camera: "cam-w", port: portA, dataDir: agentData,
            manager: ["fallbackAddresses": ["localhost:\(portB)"]])
        let agent = try LoupeProcess(["agent", "--config", agentConfig], log: pki.dir + "/agent-w.log")
        defer { agent.signal(SIGKILL) }
        let backend = try await StoreBackend(.postgres, database: database, folder: pki.dir + "/reader")
        let trainingData = try await backend.trainingData()
        let synced = try await eventually(timeout: .seconds(30)) { try await trainingData.count() == total }
        #expect(synced, "\(agent.log)")
        agent.signal(SIGTERM)
        _ = await agent.waitForExit()

        // Asked for through B; trained by a worker connected to A, which is killed once it reports training.
        let throughB = try fleetEnvironment(pki: pki, port: portB)
        let queued = try await loupe(
            ["train", "start", "--inspection-type", "disc", "--minutes", "0.3", "--seed", "4", "--detach"],
            log: pki.dir + "/train-start.log", environment: throughB)
        let id = try #require(queued.split(whereSeparator: \.isWhitespace).first { $0.hasPrefix("job-") }.map(String.init), "\(queued)")
        #expect(id.hasPrefix("job-"), "\(queued)")
        let jobs = try await backend.trainingJobs()
        let first = try LoupeProcess(
            ["worker", "--config", try Self.workerConfig("w1", pki: pki, ports: [portA])], log: pki.dir + "/worker-w1.log")
        defer { first.signal(SIGKILL) }
        let trainingOnFirst = try await eventually(timeout: .seconds(60)) {
            guard let job = try await jobs.job(id) else { return false }
            return job.holder == "worker w1" && job.history.contains { $0.loss > 0 }
        }
        #expect(trainingOnFirst, "the first worker never reported training:\n\(first.log)\nA:\n\(managerA.log)")
        first.signal(SIGKILL)
        _ = await first.waitForExit(timeout: .seconds(10))

        // A second worker, on A too: the job is its own once the first one's lease has run out.
        let second = try LoupeProcess(
            ["worker", "--config", try Self.workerConfig("w2", pki: pki, ports: [portA, portB])], log: pki.dir + "/worker-w2.log")
        defer { second.signal(SIGKILL) }
        let trainingOnSecond = try await eventually(timeout: .seconds(60)) {
            guard let job = try await jobs.job(id), job.holder == "worker w2" else { return false }
            return job.history.drop(while: { $0.message != "attempt 2, on worker w2" }).contains { $0.loss > 0 }
        }
        #expect(trainingOnSecond, "the second worker never reported training:\n\(second.log)\nA:\n\(managerA.log)")
        // Either manager answers for the job while it runs.
        let throughA = try fleetEnvironment(pki: pki, port: portA)
        let running = try await loupe(["train", "status", id], log: pki.dir + "/train-status-a.log", environment: throughA)
        #expect(running.contains("running"), "\(running)")

        // The manager the worker reports through dies; the worker carries the job to B and finishes it there.
        managerA.signal(SIGKILL)
        _ = await managerA.waitForExit(timeout: .seconds(10))
        let finished = try await eventually(timeout: .seconds(150)) { try await jobs.job(id)?.hasEnded == true }
        let job = try #require(try await jobs.job(id))
        #expect(finished && job.state == .succeeded, "\(job.progress)\nw2:\n\(second.log)\nB:\n\(managerB.log)")
        #expect(
            job.attempts == 2 && job.history.contains { $0.message == "attempt 2, on worker w2" },
            "kept across the switch: \(job.history.map(\.message))")
        let registry = try await backend.models()
        let versions = try await registry.versions()
        #expect(versions.map(\.version) == [job.progress.modelVersion], "one model signed: \(versions.map(\.version))")
        let datasetHash = try await trainingData.dataset(inspectionType: "disc", scratchDirectory: NSTemporaryDirectory()).dataset.sha256
        #expect(versions.first?.description.contains("trained by worker") == true && versions.first?.datasetSHA256 == datasetHash)
        let status = try await loupe(["train", "status", id], log: pki.dir + "/train-status.log", environment: throughB)
        #expect(status.contains("succeeded") && status.contains(job.progress.modelVersion), "\(status)")

        second.signal(SIGTERM)
        #expect(await second.waitForExit(timeout: .seconds(30)) == 0, "\(second.log)")
        managerB.signal(SIGTERM)
        #expect(await managerB.waitForExit() == 0)
    }

    func loupe(_ arguments: [String], log: String, environment: [String: String] = [:]) async throws -> String {
        let (status, output) = try await runLoupe(arguments, log: log, environment: environment, timeout: .seconds(60))
        #expect(status == 0, "loupe \(arguments.joined(separator: " ")) failed:\n\(output)")
        return output
    }

    /// The manager a camera syncs to is killed (SIGKILL) part-way through: the camera carries on with the other
    /// manager of the database at once, and every labelled ROI ends stored exactly once (an upload the dead manager
    /// stored but never acknowledged is sent again and recognised by its content hash).
    @Test func aManagerKilledMidSyncLeavesTheRestToTheOtherAndEveryROIIsStoredOnce() async throws {
        let pki = try TestPKI()
        let database = try await PostgresServer.shared().createDatabase()
        let (managerA, portA) = try await Self.manager("manager-a", pki: pki, database: database).start()
        let (managerB, portB) = try await Self.manager("manager-b", pki: pki, database: database).start()
        defer { managerA.signal(SIGKILL); managerB.signal(SIGKILL) }
        let agentData = pki.dir + "/agent-k-data"
        let total = 40
        let store = try await SyncProcessTests.seedAgentStore(agentData, count: total)
        // About 1.3 KB per upload at 4 KB/s: the sync takes ~13 s, long enough to interrupt.
        let agentConfig = try await writeAgentConfig(
            pki: pki, camera: "cam-k", port: portA, dataDir: agentData,
            manager: ["fallbackAddresses": ["localhost:\(portB)"], "uploadBytesPerSecond": 4096])
        let agent = try LoupeProcess(["agent", "--config", agentConfig], log: pki.dir + "/agent-k.log")
        defer { agent.signal(SIGKILL) }
        let started = try await eventually(timeout: .seconds(30)) { try await store.outboxDepth() <= total - 8 }
        #expect(started, "the outbox did not start draining:\n\(agent.log)\n\(managerA.log)")
        managerA.signal(SIGKILL)
        _ = await managerA.waitForExit(timeout: .seconds(10))
        let left = try await store.outboxDepth()
        #expect(left > 0, "the sync finished before the manager could be interrupted")
        let drained = try await eventually(timeout: .seconds(60)) { try await store.outboxDepth() == 0 }
        #expect(drained, "the outbox never drained through B:\n\(agent.log)\n\(managerB.log)")
        #expect(agent.log.contains("manager=manager-b"), "the camera never reached B:\n\(agent.log)")
        let backend = try await StoreBackend(.postgres, database: database, folder: pki.dir + "/reader")
        try await SyncProcessTests.stopAndExpectStoredOnce(agent: agent, manager: managerB, backend: backend, total: total, camera: "cam-k")
    }

    @Test func aPushThroughOneManagerReachesACameraOnTheOtherAndTheCameraMovesWhenItsManagerDies() async throws {
        let pki = try TestPKI()
        let database = try await PostgresServer.shared().createDatabase()
        let setupA = try Self.manager("manager-a", pki: pki, database: database)
        let (managerA, portA) = try await setupA.start()
        let setupB = try Self.manager("manager-b", pki: pki, database: database)
        let (managerB, portB) = try await setupB.start()
        defer { managerA.signal(SIGKILL); managerB.signal(SIGKILL) }
        // Exactly one of them steps the rollouts.
        let led = try await eventually(timeout: .seconds(15)) {
            [managerA.log, managerB.log].filter { $0.contains("this manager now steps the rollouts") }.count == 1
        }
        #expect(led, "no single leader:\nA:\n\(managerA.log)\nB:\n\(managerB.log)")

        // The camera knows both managers and starts on A; its labelled ROIs arrive once.
        let agentData = pki.dir + "/agent-s-data"
        let total = 12
        _ = try await SyncProcessTests.seedAgentStore(agentData, count: total)
        let agentConfig = try await writeAgentConfig(
            pki: pki, camera: "cam-s", port: portA, dataDir: agentData,
            manager: ["fallbackAddresses": ["localhost:\(portB)"]],
            extra: ["modelKeys": [pki.dir + "/plant-signing.pub"]])
        let agent = try LoupeProcess(["agent", "--config", agentConfig], log: pki.dir + "/agent-s.log")
        defer { agent.signal(SIGKILL) }
        let backend = try await StoreBackend(.postgres, database: database, folder: pki.dir + "/reader")
        let trainingData = try await backend.trainingData()
        let synced = try await eventually(timeout: .seconds(30)) { try await trainingData.count() == total }
        #expect(synced, "\(agent.log)")

        // Published on B's host and pushed through B: A offers it to its camera at once (its own poll is a minute away).
        let modelPath = pki.dir + "/trained.loupe"
        try ModelFile.write(SegmentationTests.LivePipelineTests.constantModel(), to: modelPath)
        let published = try await loupe(
            ["model", "publish", modelPath, "--inspection-type", "disc", "--manager-config", setupB.configPath],
            log: pki.dir + "/publish-1.log")
        #expect(published.contains("published disc-v1"), "\(published)")
        let throughB = try fleetEnvironment(pki: pki, port: portB)
        _ = try await loupe(["model", "push", "disc-v1", "--cameras", "cam-s"], log: pki.dir + "/push-1.log", environment: throughB)
        let registry = try await backend.models()
        let installed = try await eventually(timeout: .seconds(20)) { try await registry.camera("cam-s")?.installedVersion == "disc-v1" }
        #expect(installed, "a push through B never reached the camera on A:\nagent:\n\(agent.log)\nA:\n\(managerA.log)")

        // A dies: the camera moves to B at once, B leads, and B carries the next push and answers for the fleet.
        let wasLeader = managerA.log.contains("this manager now steps the rollouts")
        managerA.signal(SIGKILL)
        _ = await managerA.waitForExit(timeout: .seconds(10))
        let moved = try await eventually(timeout: .seconds(20)) {
            // The agent names the manager it connected to (manager=manager-b) only once it is through to B.
            try await runLoupe(["camera", "list"], log: pki.dir + "/camera-list.log", environment: throughB).output.contains("cam-s")
                && agent.log.contains("manager=manager-b")
        }
        #expect(moved, "the camera never moved to B:\n\(agent.log)")
        if wasLeader {
            let took = try await eventually(timeout: .seconds(20)) { managerB.log.contains("this manager now steps the rollouts") }
            #expect(took, "B never took over the rollouts:\n\(managerB.log)")
        }
        var second = SegmentationModel(weights: Weights(configuration: .standard, seed: 11))
        second.metadata.description = "second"
        try ModelFile.write(second, to: modelPath)
        _ = try await loupe(
            ["model", "publish", modelPath, "--inspection-type", "disc", "--manager-config", setupB.configPath],
            log: pki.dir + "/publish-2.log")
        // The operator names both managers; the dead one is passed over.
        var both = throughB
        both["LOUPE_ADDR"] = "localhost:\(portA),localhost:\(portB)"
        let pushed = try await loupe(["model", "push", "disc-v2", "--cameras", "cam-s"], log: pki.dir + "/push-2.log", environment: both)
        #expect(pushed.contains("cannot reach the manager at localhost:\(portA)"), "\(pushed)")
        let second2 = try await eventually(timeout: .seconds(20)) { try await registry.camera("cam-s")?.installedVersion == "disc-v2" }
        #expect(second2, "the push through B after A died never installed:\n\(agent.log)\n\(managerB.log)")
        #expect(try await trainingData.count() == total, "every ROI stored once")
        let status = try await runLoupe(["status"], log: pki.dir + "/status.log", environment: both)
        #expect(status.status == 0 && status.output.contains("cam-s"), "\(status.output)")

        agent.signal(SIGTERM)
        #expect(await agent.waitForExit() == 0)
        managerB.signal(SIGTERM)
        let exit = await managerB.waitForExit()
        try? managerB.log.write(toFile: "/tmp/managerB.log", atomically: true, encoding: .utf8)
        #expect(exit == 0)
    }

    /// A canary rollout decided by its cameras' live results while the manager that supervised it is killed:
    /// the other manager takes the supervision over and decides it, once.
    @Test func aRolloutWhoseSupervisorIsKilledIsDecidedOnceByTheOtherManager() async throws {
        let pki = try TestPKI()
        let database = try await PostgresServer.shared().createDatabase()
        // The canary window is timed by the poll: the default second.
        let setupA = try Self.manager("manager-a", pki: pki, database: database, pollSeconds: 1)
        let (managerA, portA) = try await setupA.start()
        defer { managerA.signal(SIGKILL) }
        let ledByA = try await eventually(timeout: .seconds(15)) { managerA.log.contains("this manager now steps the rollouts") }
        #expect(ledByA, "\(managerA.log)")
        let setupB = try Self.manager("manager-b", pki: pki, database: database, pollSeconds: 1)
        let (managerB, portB) = try await setupB.start()
        defer { managerB.signal(SIGKILL) }

        // cam-a on A, cam-b on B, each knowing the other manager; both inspect synthetic parts.
        var cameras: [FleetCLIProcessTests.Camera] = []
        for (id, port, other, seed) in [("cam-a", portA, portB, 11), ("cam-b", portB, portA, 12)] {
            cameras.append(
                try await FleetCLIProcessTests.startCamera(
                    id, seed: seed, pki: pki, port: port, managerData: "", labelled: 0,
                    signingKey: pki.dir + "/plant-signing.pub",
                    managerLink: ["fallbackAddresses": ["localhost:\(other)"]]))
        }
        defer { for camera in cameras { camera.process.signal(SIGKILL) } }
        let throughB = try fleetEnvironment(pki: pki, port: portB)
        let modelPath = pki.dir + "/constant.loupe"
        for version in ["part-v1", "part-v2"] {
            try ModelFile.write(SegmentationTests.LivePipelineTests.constantModel(classIndex: 0), to: modelPath)
            let published = try await loupe(
                [
                    "model", "publish", modelPath, "--inspection-type", "part", "--manager-config",
                    setupB.configPath,
                ],
                log: pki.dir + "/publish-\(version).log")
            #expect(published.contains("published \(version)"), "\(published)")
        }
        // B knows cam-a (connected to A) from the shared fleet; both install part-v1.
        let known = try await eventually(timeout: .seconds(30)) {
            let (_, list) = try await FleetCLIProcessTests.fleet(throughB, log: pki.dir + "/status.log")
            return list.filter {
                ($0["status"] as? [String: Any])?["inspection_type"] as? String == "part" && $0["online"] as? Bool == true
            }.count == 2
        }
        #expect(known, "B never saw both cameras:\n\(managerB.log)")
        _ = try await loupe(
            ["model", "push", "part-v1", "--inspection-type", "part", "--wait", "--timeout", "60"],
            log: pki.dir + "/push-1.log",
            environment: throughB)

        // A canary rollout of part-v2 on cam-a, started through B, supervised by A until A dies.
        let started = try await loupe(
            [
                "model", "push", "part-v2", "--inspection-type", "part", "--canary", "cam-a", "--auto",
                "--observe", "6",
                "--min-parts", "4",
            ], log: pki.dir + "/push-2.log", environment: throughB)
        #expect(started.contains("rollout-1"), "\(started)")
        let backend = try await StoreBackend(.postgres, database: database, folder: pki.dir + "/reader")
        let registry = try await backend.models()
        let observing = try await eventually(timeout: .seconds(30)) { try await registry.rollouts().first?.canariesInstalledAt != nil }
        #expect(observing, "A never saw the canary install:\n\(managerA.log)")
        managerA.signal(SIGKILL)
        _ = await managerA.waitForExit(timeout: .seconds(10))

        let took = try await eventually(timeout: .seconds(20)) { managerB.log.contains("this manager now steps the rollouts") }
        #expect(took, "B never took the rollouts over:\n\(managerB.log)")
        let decided = try await eventually(timeout: .seconds(60)) { try await registry.rollouts().first?.state == .promoted }
        let rollout = try await registry.rollouts()
        #expect(decided && rollout.count == 1, "\(rollout)\n\(managerB.log)")
        #expect(rollout.first?.reason.hasPrefix("within bounds") == true, "\(String(describing: rollout.first?.reason))")
        let decisions = [managerA.log, managerB.log].map { $0.components(separatedBy: "rollout promoted").count - 1 }
        #expect(decisions == [0, 1], "the rollout was decided \(decisions) times")
        for camera in cameras {
            let running = try await eventually(timeout: .seconds(30)) {
                try await FleetCLIProcessTests.live(camera)["modelVersion"] as? String == "part-v2"
            }
            #expect(running, "\(camera.id) does not run part-v2:\n\(camera.process.log)")
        }
    }
}
