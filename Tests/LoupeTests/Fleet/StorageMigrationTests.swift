import Foundation
import Logging
import LoupeBench
import LoupeManager
import LoupeProto
import LoupeSegmentation
import LoupeTesting
import Testing

/// `loupe manager migrate`: a real `loupe` process copying a manager's SQLite
/// stores into the tests' own PostgreSQL server.
@Suite struct StorageMigrationTests {
    /// A manager data folder with `rois` uploads from two cameras and those cameras in its fleet, and its config.
    static func sqliteManager(rois: Int) async throws -> (folder: String, config: String, store: TrainingDataStore) {
        let folder = try TemporaryDirectory.make(prefix: "loupe-migrate")
        let dataDir = folder + "/data"
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
        let store = try TrainingDataStore(path: dataDir + "/training-data.sqlite")
        for index in 0..<rois {
            _ = try await store.store(try FleetBenchmark.upload(side: 32, seed: UInt64(500 + index)), from: "cam-\(index % 2)")
        }
        let fleet = try FleetStore(path: dataDir + "/fleet.sqlite")
        for id in ["cam-0", "cam-1"] {
            var camera = Loupe_V1_CameraStatus()
            camera.cameraID = id
            camera.address = "10.0.0.9:7443"
            camera.status.inspectionType = "bench"
            try await fleet.save(camera)
        }
        // A registry with two versions, both cameras on the first, a group and a canary rollout of the second.
        let registry = try ModelRegistry(directory: dataDir, signingKeyPath: dataDir + "/model-signing.key")
        let first = try registry.publish(try ModelFile.encode(ProvenanceTests.model(1)), inspectionType: "bench")
        let second = try registry.publish(try ModelFile.encode(ProvenanceTests.model(2)), inspectionType: "bench")
        try registry.assign(first.version, to: ["cam-0", "cam-1"], remember: true)
        try registry.setGroup("line-1", cameras: ["cam-0", "cam-1"])
        var policy = Loupe_V1_CanaryPolicy()
        policy.observeSeconds = 60
        _ = try registry.startRollout(
            second.version, canaries: ["cam-0"], remaining: ["cam-1"], policy: CanaryPolicyRecord(policy),
            priorDefectRate: nil)
        let config = folder + "/manager.json"
        try writeJSON(
            ["managerId": "m", "listen": "127.0.0.1:0", "tls": ["ca": "a", "cert": "b", "key": "c"], "dataDir": "data"], to: config)
        return (folder, config, store)
    }

    static func migrate(_ config: String, _ settings: PostgresSettings, log: String) async throws -> (Int32?, String) {
        let process = try LoupeProcess(
            ["manager", "migrate", "--config", config, "--to", settings.url, "--password-file", settings.passwordFile ?? ""], log: log)
        let status = await process.waitForExit(timeout: .seconds(60))
        return (status, process.log)
    }

    /// Every ROI and camera arrives, the training set and its split read the same from PostgreSQL,
    /// and a second run copies nothing and checks again.
    @Test func everyRowAndBlobArrivesAndIsChecked() async throws {
        let (folder, config, store) = try await Self.sqliteManager(rois: 450)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let settings = try await PostgresServer.shared().createDatabase()
        let (status, log) = try await Self.migrate(config, settings, log: folder + "/migrate.log")
        #expect(status == 0, "\(log)")
        #expect(log.contains("2 cameras, 450 ROIs (450 copied, 0 already there)"), "\(log)")
        #expect(log.contains("checked: 450 ROIs"), "\(log)")
        #expect(
            log.contains(#""storage":{"postgres":{"passwordFile":"\#(settings.passwordFile ?? "")","url":"\#(settings.url)"}}"#), "\(log)")

        let database = try await PostgresDatabase.open(settings, logger: Logger(label: "check"))
        defer { database.close() }
        let copied = try await PostgresTrainingDataStore(database: database)
        #expect(
            try await copied.dataset(inspectionType: "bench", scratchDirectory: NSTemporaryDirectory()).dataset.sha256
                == (try await store.dataset(inspectionType: "bench", scratchDirectory: NSTemporaryDirectory()).dataset.sha256))
        #expect(
            try await copied.statistics(inspectionType: nil, validationFraction: 0.1)
                == (try await store.statistics(inspectionType: nil, validationFraction: 0.1)))
        #expect(try await PostgresFleetStore(database: database).load().map(\.cameraID) == ["cam-0", "cam-1"])

        // The registry: the same versions, files that read back byte for byte and verify, the same signed
        // assignments, the group and the rollout; the next signature is newer than any the cameras have seen.
        let sqlite = try ModelRegistry(directory: folder + "/data", signingKeyPath: folder + "/data/model-signing.key")
        let moved = try await PostgresModelRegistry(database: database, signingKeyPath: folder + "/data/model-signing.key")
        #expect(try await moved.versions() == (try sqlite.versions(inspectionType: nil)))
        for version in try sqlite.versions(inspectionType: nil) {
            var file = Data()
            while true {
                let (piece, last) = try await moved.chunk(version.version, offset: UInt64(file.count), length: 100_000)
                file.append(piece)
                if last { break }
            }
            #expect(file == (try sqlite.file(of: version.version)))
        }
        #expect(try await moved.cameras() == (try sqlite.cameras()))
        #expect(try await moved.groups() == ["line-1": ["cam-0", "cam-1"]])
        #expect(try await moved.rollouts().map(\.id) == ["rollout-1"])
        #expect(log.contains("model registry: 2 versions (2 copied), 2 cameras' assignments, 1 rollouts"), "\(log)")
        let next = try await moved.publish(try ModelFile.encode(ProvenanceTests.model(3)), inspectionType: "bench")
        let signedBefore = try sqlite.contents().sequence
        #expect(next.version == "bench-v3" && UInt64(next.sequence) > signedBefore)

        let (again, secondLog) = try await Self.migrate(config, settings, log: folder + "/migrate-2.log")
        #expect(again == 0 && secondLog.contains("(0 copied, 450 already there)"), "\(secondLog)")
        #expect(secondLog.contains("model registry: 2 versions (0 copied)"), "\(secondLog)")
    }

    /// A row already in the database under a hash its bytes do not have is found by the check, and the run fails naming it.
    @Test func aDamagedRowFailsTheCheckByName() async throws {
        let (folder, config, store) = try await Self.sqliteManager(rois: 5)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let settings = try await PostgresServer.shared().createDatabase()
        var damaged = try #require(try await store.export(after: nil, limit: 1).first)
        damaged.imagePNG[damaged.imagePNG.count / 2] ^= 0xFF
        let database = try await PostgresDatabase.open(settings, logger: Logger(label: "seed"))
        _ = try await PostgresTrainingDataStore(database: database).importRows([damaged])
        database.close()

        let (status, log) = try await Self.migrate(config, settings, log: folder + "/migrate.log")
        #expect(status != 0)
        #expect(log.contains("ROI \(damaged.contentSHA256.prefix(12)): its image and mask in PostgreSQL hash to"), "\(log)")
    }

    /// A config already on PostgreSQL, and a URL with a password, are refused before anything is copied.
    @Test func badRequestsAreRefusedByName() async throws {
        let (folder, config, _) = try await Self.sqliteManager(rois: 1)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let process = try LoupeProcess(
            ["manager", "migrate", "--config", config, "--to", "postgres://loupe:pw@127.0.0.1:1/x"], log: folder + "/bad.log")
        #expect(await process.waitForExit() != 0)
        #expect(process.log.contains("must not carry a password"), "\(process.log)")
    }
}
