import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import LoupeAgent
import LoupeImaging
import LoupeManager
import LoupePKI
import LoupeProto
import LoupeWire
import Testing
import LoupeTesting

/// Outbox sync between real `loupe agent` and `loupe manager` processes.
@Suite(.serialized) struct SyncProcessTests {
    /// A PNG of grey noise: it does not compress, so it costs its full size on disk.
    static func noisePNG(side: Int, seed: UInt64) throws -> Data {
        var random = SeededGenerator(seed: seed)
        var image = try Image8(width: side, height: side)
        for index in image.samples.indices { image.samples[index] = UInt8(random.below(256)) }
        return try PNGCodec.encode(image)
    }

    /// An agent data folder with `count` labelled, ticked ROIs waiting in its
    /// outbox: captures of `imageSide`² noise, the ROI all but an 8 px border.
    static func seedAgentStore(_ dataDir: String, count: Int, imageSide: Int = 48) async throws -> LabelStore {
        let store = try LabelStore(directory: dataDir + "/store")
        try await store.setClasses([ClassRecord(index: 1, name: "scratch", color: 0xFF0000)], user: "test")
        let rect = PixelRect(x: 8, y: 8, width: imageSide - 16, height: imageSide - 16)
        let recipe = try await store.saveRecipe(Recipe(inspectionType: "disc", rois: [RecipeROI(name: "hub", rect: rect)]), user: "test")
        for number in 1...count {
            let capture = try await store.addCapture(
                LabelStore.EncodedImage(
                    bytes: try noisePNG(side: imageSide, seed: 42_000 + UInt64(number)), width: imageSide, height: imageSide, channels: 1),
                source: "test", inspectionType: recipe.inspectionType, recipeVersion: recipe.version, user: "test")
            var mask = try Image8(width: rect.width, height: rect.height)
            for index in 0..<(number % 30 + 3) { mask.samples[index * 7 % mask.samples.count] = 1 }
            try await store.saveMask(captureNumber: capture.number, roi: ("hub", rect), mask: mask, classes: 2, user: "test")
            try await store.setIncluded(captureNumber: capture.number, roiName: "hub", included: true, user: "test")
        }
        return store
    }

    func agentConfig(pki: TestPKI, camera: String, port: Int, dataDir: String, uploadCap: Double) async throws -> String {
        try await writeAgentConfig(pki: pki, camera: camera, port: port, dataDir: dataDir, manager: ["uploadBytesPerSecond": uploadCap])
    }

    /// On either backend: SQLite files in the manager's data folder, or the tests' own PostgreSQL server.
    @Test(arguments: StoreBackend.all) func theOutboxArrivesExactlyOnceAcrossAManagerKillAndAnAgentKill(
        _ kind: StoreBackend.Kind
    ) async throws {
        let pki = try TestPKI()
        let total = 40
        let dataDir = pki.dir + "/agent-sync-data"
        let store = try await Self.seedAgentStore(dataDir, count: total)
        #expect(try await store.outboxDepth() == total)

        let backend = try await StoreBackend(kind, folder: pki.dir + "/manager-data")
        let setup = try ManagerProcessSetup(pki: pki, extra: backend.managerConfig)
        var (manager, port) = try await setup.start()
        // About 1.3 KB per upload at 4 KB/s: the sync takes ~13 s, long enough to interrupt twice.
        let config = try await agentConfig(pki: pki, camera: "cam-sync", port: port, dataDir: dataDir, uploadCap: 4096)
        var agent = try LoupeProcess(["agent", "--config", config], log: pki.dir + "/agent-sync.log")

        // 1. Kill the manager outright part-way through, and bring it back.
        let started = try await eventually(timeout: .seconds(30)) { try await store.outboxDepth() <= total - 8 }
        #expect(started, "the outbox did not start draining:\n\(agent.log)\n\(manager.log)")
        manager.signal(SIGKILL)
        _ = await manager.waitForExit()
        let leftAtManagerKill = try await store.outboxDepth()
        #expect(leftAtManagerKill > 0, "the sync finished before the manager could be interrupted")
        (manager, _) = try await ManagerProcessSetup(pki: pki, port: port, extra: backend.managerConfig).start()

        // 2. Kill the agent outright part-way through the rest, and restart it.
        let further = try await eventually(timeout: .seconds(30)) { try await store.outboxDepth() <= leftAtManagerKill - 5 }
        #expect(further, "the outbox did not drain after the manager came back:\n\(agent.log)")
        agent.signal(SIGKILL)
        _ = await agent.waitForExit()
        #expect(try await store.outboxDepth() > 0, "the sync finished before the agent could be interrupted")
        agent = try LoupeProcess(["agent", "--config", config], log: pki.dir + "/agent-sync-2.log")

        let drained = try await eventually(timeout: .seconds(60)) { try await store.outboxDepth() == 0 }
        #expect(drained, "the outbox never drained:\n\(agent.log)\n\(manager.log)")
        try await Self.stopAndExpectStoredOnce(agent: agent, manager: manager, backend: backend, total: total, camera: "cam-sync")
        // The camera the restarted manager saw is in the fleet store for the next one.
        #expect(try await backend.fleet().load().contains { $0.cameraID == "cam-sync" })
    }

    /// The database server is killed (SIGKILL) part-way through a sync and
    /// started again 8 s later: an upload waits for it up to
    /// `PostgresDatabase.answerWithin` (5 s) and is then refused by name
    /// (UNAVAILABLE; the agent keeps it in its outbox), the manager stays up and
    /// reconnects by itself, and every ROI ends stored exactly once.
    @Test func aDatabaseRestartDuringSyncLosesNothing() async throws {
        let pki = try TestPKI()
        let total = 30
        let dataDir = pki.dir + "/agent-pg-data"
        let store = try await Self.seedAgentStore(dataDir, count: total)
        // A server of its own: killing the shared one would fail the other tests using it.
        let server = try await PostgresServer.start(folder: NSTemporaryDirectory() + "loupe-pg-restart-\(UUID().uuidString.prefix(8))")
        defer { server.discard() }
        let settings = try await server.createDatabase()
        let storage: [String: Any] = ["storage": ["postgres": ["url": settings.url, "passwordFile": settings.passwordFile ?? ""]]]
        let (manager, port) = try await ManagerProcessSetup(pki: pki, extra: storage).start()
        let config = try await agentConfig(pki: pki, camera: "cam-pg", port: port, dataDir: dataDir, uploadCap: 4096)
        let agent = try LoupeProcess(["agent", "--config", config], log: pki.dir + "/agent-pg.log")

        let started = try await eventually(timeout: .seconds(30)) { try await store.outboxDepth() <= total - 6 }
        #expect(started, "the outbox did not start draining:\n\(agent.log)\n\(manager.log)")
        await server.kill()
        // While it is down the outbox does not drain, and the manager stays up saying why.
        try await Task.sleep(for: .seconds(8))
        #expect(try await store.outboxDepth() > 0)
        #expect(manager.process.isRunning, "the manager died with its database:\n\(manager.log)")
        let refusal = manager.log.split(separator: "\n").first { $0.contains("request refused") && $0.contains("roi_upload") }
        #expect(
            refusal?.contains("unavailable") == true && refusal?.contains("no answer within 5") == true,
            "no upload was refused by name while the database was down:\n\(manager.log.suffix(3000))")
        try await server.start()
        let drained = try await eventually(timeout: .seconds(60)) { try await store.outboxDepth() == 0 }
        #expect(drained, "the outbox never drained after the database came back:\n\(agent.log)\n\(manager.log)")
        agent.signal(SIGTERM)
        #expect(await agent.waitForExit() == 0)
        manager.signal(SIGTERM)
        #expect(await manager.waitForExit() == 0)
        let database = try await PostgresDatabase.open(settings, logger: Logger(label: "check"))
        defer { database.close() }
        let held = try await PostgresTrainingDataStore(database: database)
        #expect(try await held.count(cameraId: "cam-pg") == total)
        #expect(Set(try await held.contentHashes()).count == total)
    }

    /// Stops both processes gracefully, then checks the manager's store holds
    /// exactly `total` labelled ROIs from `camera`: none lost, none doubled.
    static func stopAndExpectStoredOnce(
        agent: LoupeProcess, manager: LoupeProcess, backend: StoreBackend, total: Int, camera: String
    ) async throws {
        agent.signal(SIGTERM)
        #expect(await agent.waitForExit() == 0)
        manager.signal(SIGTERM)
        #expect(await manager.waitForExit() == 0)
        let held = try await backend.trainingData()
        #expect(try await held.count() == total)
        #expect(try await held.count(cameraId: camera) == total)
        #expect(Set(try await held.contentHashes()).count == total)
    }
}

extension SyncProcessTests {
    @Test func theManagersMetricsCountUploadsAndCameras() async throws {
        let pki = try TestPKI()
        let dataDir = pki.dir + "/agent-metrics-data"
        let store = try await Self.seedAgentStore(dataDir, count: 6)
        let setup = try ManagerProcessSetup(pki: pki, extra: ["metricsAddress": "127.0.0.1:0"])
        let (manager, port) = try await setup.start()
        let metricsPort = try await manager.loggedAddress(after: "metrics listening")
        let address = try #require(metricsPort, "the manager never said where its metrics are:\n\(manager.log)")
        func scrape() async throws -> String {
            let (data, response) = try await URLSession.shared.data(from: URL(string: "http://\(address)/metrics")!)
            #expect((response as? HTTPURLResponse)?.statusCode == 200)
            return String(decoding: data, as: UTF8.self)
        }
        #expect(try await scrape().contains("loupe_cameras_connected 0"))
        let config = try await agentConfig(pki: pki, camera: "cam-metrics", port: port, dataDir: dataDir, uploadCap: 1_048_576)
        let agent = try LoupeProcess(["agent", "--config", config], log: pki.dir + "/agent-metrics.log")
        let drained = try await eventually(timeout: .seconds(30)) { try await store.outboxDepth() == 0 }
        #expect(drained, "\(agent.log)")
        let counted = try await eventually(timeout: .seconds(10)) {
            let text = try await scrape()
            return text.contains("loupe_roi_uploads_total{result=\"stored\"} 6") && text.contains("loupe_cameras_connected 1")
        }
        let text = try await scrape()
        #expect(counted, "\(text)")
        #expect(text.contains("# TYPE loupe_roi_upload_bytes_total counter") && text.contains("loupe_training_jobs{state=\"running\"} 0"))
        agent.signal(SIGTERM)
        #expect(await agent.waitForExit() == 0)
        manager.signal(SIGTERM)
        #expect(await manager.waitForExit() == 0)
    }
}
