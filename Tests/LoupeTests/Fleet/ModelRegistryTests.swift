import Crypto
import Foundation
import LoupeManager
import LoupeProto
import LoupeSegmentation
import LoupeStorage
import LoupeTesting
import SwiftProtobuf
import Testing

/// The model registry on both backends (SQLite files, and the tests' own
/// PostgreSQL server): the same calls give the same answers, and on
/// PostgreSQL two managers writing at once still sign in one order.
@Suite struct ModelRegistryTests {
    /// A version's whole file, read the way agents read it: chunk by chunk.
    static func file(_ registry: any ModelRegistryStoring, _ version: String, chunk: Int = 70_000) async throws -> Data {
        var file = Data()
        while true {
            let (piece, last) = try await registry.chunk(version, offset: UInt64(file.count), length: chunk)
            file.append(piece)
            if last { return file }
            #expect(!piece.isEmpty, "a chunk short of the end came back empty")
        }
    }

    static func assignment(_ registry: any ModelRegistryStoring, _ camera: String) async throws -> Loupe_Model_V1_ModelAssignment {
        let row = try #require(try await registry.camera(camera))
        let bytes = try #require(Data(hexString: row.assignment ?? ""))
        #expect(registry.signingKey.publicKey.isValidSignature(try #require(Data(hexString: row.assignmentSignature ?? "")), for: bytes))
        return try Loupe_Model_V1_ModelAssignment(serializedBytes: bytes)
    }

    @Test(arguments: StoreBackend.all) func publishedVersionsAreSignedNumberedAndReadBackWhole(_ kind: StoreBackend.Kind) async throws {
        let backend = try await StoreBackend(kind)
        let registry = try await backend.models()
        let first = try await registry.publish(try ModelFile.encode(ProvenanceTests.model(1)), inspectionType: "disc")
        let other = try await registry.publish(try ModelFile.encode(ProvenanceTests.model(2)), inspectionType: "gear")
        let second = try await registry.publish(try ModelFile.encode(ProvenanceTests.model(3)), inspectionType: "disc")
        #expect([first.version, other.version, second.version] == [String](["disc-v1", "gear-v2", "disc-v3"]))
        #expect([first.sequence, other.sequence, second.sequence] == [Int](1...3))
        #expect(first.parentVersion == nil && second.parentVersion == "disc-v1" && other.parentVersion == nil)
        #expect(try await registry.versions(inspectionType: "disc").map(\.version) == ["disc-v3", "disc-v1"])
        #expect(try await registry.versions().count == 3)

        // The file comes back byte for byte in chunks of any size, hashes to its record and verifies with the key.
        let file = try await Self.file(registry, second.version)
        #expect(file.count == second.bytes && Data(SHA256.hash(data: file)).hexString == second.sha256)
        #expect(try await Self.file(registry, second.version, chunk: 1 << 20) == file)
        let key = registry.signingKey.publicKey
        #expect(
            key.isValidSignature(
                try #require(Data(hexString: second.offerSignature)),
                for: try #require(Data(hexString: second.sha256))))
        let (model, status) = try ModelFile.decode(file, name: "read back", trustedKeys: [key])
        #expect(status == .signed(publicKey: key.rawRepresentation))
        #expect(model.metadata.provenance == ModelProvenance(inspectionType: "disc", versionName: "disc-v3", sequence: 3))
        let (tail, last) = try await registry.chunk(second.version, offset: UInt64(second.bytes), length: 10)
        #expect(tail.isEmpty && last)

        // Refusals name what is wrong.
        await #expect(throws: ModelRegistryError.notFound("model version disc-v9")) { try await registry.version("disc-v9") }
        await #expect(throws: ModelRegistryError.self) {
            _ = try await registry.chunk(second.version, offset: UInt64(second.bytes) + 1, length: 10)
        }
        await #expect(throws: ModelRegistryError.self) { _ = try await registry.publish(Data("not a model".utf8), inspectionType: "disc") }
        await #expect(throws: ModelRegistryError.self) {
            _ = try await registry.publish(try ModelFile.encode(ProvenanceTests.model(4)), inspectionType: "../etc")
        }

        // A reopened registry (a restarted manager) holds the same and goes on counting.
        let reopened = try await backend.models()
        #expect(try await reopened.versions() == (try await registry.versions()))
        #expect(try await reopened.publish(try ModelFile.encode(ProvenanceTests.model(5)), inspectionType: "gear").sequence == 4)
    }

    @Test(arguments: StoreBackend.all) func everyAssignmentIsSignedForItsCameraWithANewerSequence(_ kind: StoreBackend.Kind) async throws {
        let backend = try await StoreBackend(kind)
        let registry = try await backend.models()
        let first = try await registry.publish(try ModelFile.encode(ProvenanceTests.model(1)), inspectionType: "disc")
        let second = try await registry.publish(try ModelFile.encode(ProvenanceTests.model(2)), inspectionType: "disc")
        try await registry.assign(first.version, to: ["cam-1", "cam-2", "cam-1"])
        try await registry.assign(second.version, to: ["cam-1"])
        let pushed = try await Self.assignment(registry, "cam-1")
        #expect(pushed.cameraID == "cam-1" && pushed.version == "disc-v2" && pushed.modelSequence == 2 && pushed.inspectionType == "disc")
        let row = try #require(try await registry.camera("cam-1"))
        #expect(row.desiredVersion == "disc-v2" && row.previousVersion == "disc-v1")
        // A rollback forgets the previous version and is newer than everything before it.
        try await registry.assign(first.version, to: ["cam-1"], remember: false)
        let back = try await Self.assignment(registry, "cam-1")
        let cam2 = try await Self.assignment(registry, "cam-2").sequence
        #expect(back.version == "disc-v1" && back.sequence > max(pushed.sequence, cam2))
        #expect(try await registry.camera("cam-1")?.previousVersion == nil)
        await #expect(throws: ModelRegistryError.notFound("model version disc-v7")) { try await registry.assign("disc-v7", to: ["cam-1"]) }
        await #expect(throws: ModelRegistryError.invalid("name at least one camera")) { try await registry.assign(first.version, to: []) }

        // Install reports land on the camera's row, an unknown camera gets one.
        try await registry.recordInstall(cameraId: "cam-2", version: first.version, ok: true, error: "")
        try await registry.recordInstall(cameraId: "cam-1", version: first.version, ok: false, error: "disk full")
        try await registry.recordInstall(cameraId: "cam-9", version: first.version, ok: true, error: "")
        let cameras = try await registry.cameras()
        #expect(cameras.map(\.cameraId) == ["cam-1", "cam-2", "cam-9"])
        #expect(cameras[0].lastError == "disc-v1: disk full" && cameras[0].installedVersion == nil)
        #expect(cameras[1].installedVersion == "disc-v1" && cameras[1].installedAt != nil && cameras[2].desiredVersion == nil)

        // Groups: stored sorted and once, deleted when emptied, names checked.
        try await registry.setGroup("line-1", cameras: ["cam-2", "cam-1", "cam-2"])
        try await registry.setGroup("line-2", cameras: ["cam-9"])
        try await registry.setGroup("line-2", cameras: [])
        #expect(try await registry.groups() == ["line-1": ["cam-1", "cam-2"]])
        #expect(try await registry.group("line-1") == ["cam-1", "cam-2"])
        await #expect(throws: ModelRegistryError.self) { try await registry.setGroup("a b", cameras: ["cam-1"]) }
    }

    @Test(arguments: StoreBackend.all) func aRolloutMovesItsCamerasOnceAndIsDecidedOnce(_ kind: StoreBackend.Kind) async throws {
        let backend = try await StoreBackend(kind)
        let registry = try await backend.models()
        let old = try await registry.publish(try ModelFile.encode(ProvenanceTests.model(1)), inspectionType: "disc")
        let new = try await registry.publish(try ModelFile.encode(ProvenanceTests.model(2)), inspectionType: "disc")
        var wire = Loupe_V1_CanaryPolicy()
        wire.observeSeconds = 60
        let policy = CanaryPolicyRecord(wire)
        // A canary with nothing to return to is refused.
        await #expect(throws: ModelRegistryError.self) {
            _ = try await registry.startRollout(
                new.version, canaries: ["cam-a"], remaining: ["cam-b"], policy: policy,
                priorDefectRate: nil)
        }
        try await registry.assign(old.version, to: ["cam-a", "cam-b", "cam-c"])
        let rollout = try await registry.startRollout(
            new.version, canaries: ["cam-a"], remaining: ["cam-c", "cam-b"], policy: policy,
            priorDefectRate: 0.1)
        #expect(rollout.id == "rollout-1" && rollout.state == .canary && rollout.remainingCameras == ["cam-b", "cam-c"])
        #expect(rollout.previousVersions == ["cam-a": old.version] && rollout.priorDefectRate == 0.1)
        #expect(try await registry.camera("cam-a")?.desiredVersion == new.version)
        #expect(try await registry.camera("cam-b")?.desiredVersion == old.version)
        // A second rollout over the same cameras waits for the first.
        await #expect(throws: ModelRegistryError.self) {
            _ = try await registry.startRollout(new.version, canaries: ["cam-b"], remaining: [], policy: policy, priorDefectRate: nil)
        }
        // Figures are saved while the canary phase lasts; the stored rollout reads back equal.
        var observed = rollout
        observed.canaryParts = 120
        observed.countsAtInstall = ["cam-a": PartCounts(pass: 10, fail: 1)]
        try await registry.update(observed)
        #expect(try await registry.rollouts(state: .canary).map(\.canaryParts) == [120])
        #expect(try await registry.rollouts().first?.countsAtInstall == ["cam-a": PartCounts(pass: 10, fail: 1)])

        let before = try await Self.assignment(registry, "cam-a").sequence
        let rolledBack = try await registry.decide(rollout.id, promote: false, reason: "defect rate rose", figures: nil)
        #expect(rolledBack.state == .rolledBack && rolledBack.reason == "defect rate rose" && rolledBack.decidedAt != nil)
        #expect(rolledBack.canaryParts == 120, "the figures saved during the canary phase are kept")
        let returned = try await Self.assignment(registry, "cam-a")
        #expect(returned.version == old.version && returned.sequence > before)
        #expect(try await registry.camera("cam-c")?.desiredVersion == old.version)
        // Decided once: a second decision is refused, and late figures do not reopen it.
        await #expect(throws: ModelRegistryError.invalid("rollout rollout-1 was already rolled-back")) {
            _ = try await registry.decide(rollout.id, promote: true, reason: "again", figures: nil)
        }
        try await registry.update(observed)
        #expect(try await registry.rollouts(state: .canary).isEmpty)
        await #expect(throws: ModelRegistryError.notFound("rollout rollout-9")) {
            _ = try await registry.decide("rollout-9", promote: true, reason: "", figures: nil)
        }

        // Promotion moves the rest of the target and keeps where each came from.
        let next = try await registry.startRollout(
            new.version, canaries: ["cam-a"], remaining: ["cam-b", "cam-c"], policy: policy,
            priorDefectRate: nil)
        #expect(next.id == "rollout-2")
        _ = try await registry.decide(next.id, promote: true, reason: "steady", figures: nil)
        for camera in ["cam-a", "cam-b", "cam-c"] {
            #expect(try await registry.camera(camera)?.desiredVersion == new.version, "\(camera)")
        }
        #expect(try await registry.camera("cam-b")?.previousVersion == old.version)
        #expect(try await registry.rollouts().map(\.id) == ["rollout-2", "rollout-1"])
    }

    /// Two managers on one database publishing and assigning at once: every version number and every signed
    /// sequence is given once, and each camera's newest assignment is the one with its highest sequence.
    @Test func twoManagersOnOneDatabaseSignInOneOrder() async throws {
        let backend = try await StoreBackend(.postgres)
        let managers = [try await backend.models(), try await backend.models()]
        let base = try await managers[0].publish(try ModelFile.encode(ProvenanceTests.model(1)), inspectionType: "disc")
        let published = try await withThrowingTaskGroup(of: [ModelVersionRecord].self) { group in
            for (index, registry) in managers.enumerated() {
                group.addTask {
                    var records: [ModelVersionRecord] = []
                    for round in 0..<4 {
                        let model = try ModelFile.encode(ProvenanceTests.model(UInt64(10 * index + round + 2)))
                        records.append(try await registry.publish(model, inspectionType: "disc"))
                        try await registry.assign(base.version, to: ["cam-\(round)"])
                    }
                    return records
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        #expect(Set(published.map(\.number)).count == 8 && Set(published.map(\.sequence)).count == 8)
        let held = try await managers[1].versions()
        #expect(held.count == 9)
        // Numbers and sequences rise together: each version was numbered and signed in the same turn.
        let byNumber = held.sorted { $0.number < $1.number }
        #expect(byNumber.map(\.sequence) == byNumber.map(\.sequence).sorted())
        var sequences = Set(held.map(\.sequence))
        for camera in try await managers[0].cameras() {
            let assignment = try await Self.assignment(managers[0], camera.cameraId)
            #expect(sequences.insert(Int(assignment.sequence)).inserted, "sequence \(assignment.sequence) was signed twice")
        }
    }
}
