import Crypto
import Foundation
import GRDB
import LoupeAgent
import LoupeManager
import LoupeProto
import LoupeSegmentation
import LoupeStorage
import SwiftProtobuf
import Testing

/// Model provenance against The Update Framework's attack list: arbitrary
/// models, rollback (replay), mix-and-match, and what the registry signs.
@Suite struct ProvenanceTests {
    /// A model file as the manager's registry signs it.
    static func signed(
        _ model: SegmentationModel, _ key: Curve25519.Signing.PrivateKey, _ name: String, type: String = "disc",
        sequence: UInt64
    ) throws -> Data {
        try ModelFile.sign(
            ModelFile.encode(model), with: key,
            provenance: ModelProvenance(inspectionType: type, versionName: name, sequence: sequence), version: sequence)
    }

    /// The manager's signed assignment of `version` to `camera`.
    static func assignment(
        _ key: Curve25519.Signing.PrivateKey, camera: String = "cam-1", type: String = "disc", version: String,
        modelSequence: UInt64, sequence: UInt64
    ) throws -> (Data, Data) {
        var assignment = Loupe_Model_V1_ModelAssignment()
        assignment.cameraID = camera
        assignment.inspectionType = type
        assignment.version = version
        assignment.modelSequence = modelSequence
        assignment.sequence = sequence
        let bytes = try assignment.serializedData()
        return (bytes, try key.signature(for: bytes))
    }

    /// An offer's checks as the receiver builds them, for camera cam-1 of type disc unless told otherwise.
    static func offer(_ assignment: (Data, Data)?, type: String = "disc", camera: String = "cam-1") -> ModelShelf.OfferCheck {
        ModelShelf.OfferCheck(
            cameraId: camera, inspectionType: type, assignment: assignment?.0 ?? Data(), assignmentSignature: assignment?.1 ?? Data())
    }

    static func model(_ seed: UInt64) -> SegmentationModel {
        var model = SegmentationModel(weights: Weights(configuration: .standard, seed: seed))
        model.metadata.description = "seed \(seed)"
        return model
    }

    func install(_ shelf: ModelShelf, _ data: Data, _ version: String, type: String = "disc", assignment: (Data, Data)?) throws {
        try shelf.install(
            data, version: version, expectedSHA256: Data(SHA256.hash(data: data)), from: .manager(Self.offer(assignment, type: type)))
    }

    @Test func replayedMislabelledCrossTypeAndForeignModelsAreRefused() throws {
        let dir = LabelStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let manager = Curve25519.Signing.PrivateKey()
        let shelf = try ModelShelf(directory: dir, managerKeys: [manager.publicKey])
        let v1 = try Self.signed(Self.model(1), manager, "disc-v1", sequence: 1)
        let v2 = try Self.signed(Self.model(2), manager, "disc-v2", sequence: 3)
        let first = try Self.assignment(manager, version: "disc-v1", modelSequence: 1, sequence: 2)
        try install(shelf, v1, "disc-v1", assignment: first)
        try install(shelf, v2, "disc-v2", assignment: try Self.assignment(manager, version: "disc-v2", modelSequence: 3, sequence: 4))
        #expect(shelf.state.newestAssignment == 4)

        func refused(_ body: () throws -> Void, _ matches: (ModelInstallError) -> Bool, sourceLocation: SourceLocation = #_sourceLocation) {
            do {
                try body()
                Issue.record("accepted", sourceLocation: sourceLocation)
            } catch let error as ModelInstallError {
                #expect(matches(error), "\(error)", sourceLocation: sourceLocation)
            } catch {
                Issue.record("\(error)", sourceLocation: sourceLocation)
            }
            #expect(shelf.state.current?.version == "disc-v2", sourceLocation: sourceLocation)
        }
        // Rollback attack: the older, genuinely signed disc-v1 offered again with its own old assignment, or with none.
        refused({ try install(shelf, v1, "disc-v1", assignment: first) }) { if case .replayed(_, 2, 4) = $0 { true } else { false } }
        refused({ try install(shelf, v1, "disc-v1", assignment: nil) }) { if case .badAssignment = $0 { true } else { false } }
        // Mix-and-match: a file offered under another name, to a camera of another type, or with another camera's assignment.
        let v3 = try Self.signed(Self.model(3), manager, "disc-v3", sequence: 5)
        let fresh = try Self.assignment(manager, version: "disc-v3", modelSequence: 5, sequence: 6)
        refused({ try install(shelf, v3, "disc-v4", assignment: fresh) }) {
            if case .mislabelled(_, "disc-v3") = $0 { true } else { false }
        }
        refused({ try install(shelf, v3, "disc-v3", type: "gear", assignment: fresh) }) {
            if case .wrongInspectionType(_, "disc", "gear") = $0 { true } else { false }
        }
        let elsewhere = try Self.assignment(manager, camera: "cam-2", version: "disc-v3", modelSequence: 5, sequence: 6)
        refused({ try install(shelf, v3, "disc-v3", assignment: elsewhere) }) { if case .badAssignment = $0 { true } else { false } }
        let otherFile = try Self.assignment(manager, version: "disc-v3", modelSequence: 4, sequence: 6)
        refused({ try install(shelf, v3, "disc-v3", assignment: otherFile) }) { if case .badAssignment = $0 { true } else { false } }
        let forged = try Self.assignment(shelf.localKey, version: "disc-v3", modelSequence: 5, sequence: 6)
        refused({ try install(shelf, v3, "disc-v3", assignment: forged) }) { if case .badAssignment = $0 { true } else { false } }
        let unlabelled = try ModelFile.encode(Self.model(4), signingKey: manager)
        refused({ try install(shelf, unlabelled, "disc-v4", assignment: fresh) }) { if case .mislabelled = $0 { true } else { false } }
        // Arbitrary model: signed by the agent's own key, or another key.
        let local = try Self.signed(Self.model(5), shelf.localKey, "disc-v3", sequence: 5)
        refused({ try install(shelf, local, "disc-v3", assignment: fresh) }) { if case .badSignature = $0 { true } else { false } }
        let foreign = try Self.signed(Self.model(5), Curve25519.Signing.PrivateKey(), "disc-v3", sequence: 5)
        refused({ try install(shelf, foreign, "disc-v3", assignment: fresh) }) { if case .badSignature = $0 { true } else { false } }
        // A manager model cannot skip its offer's checks: `.manager` carries them by type. The agent's own key
        // is good for a local install on this camera, never as the manager's.
        let ownDir = LabelStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: ownDir) }
        let own = try ModelShelf(directory: ownDir, managerKeys: [manager.publicKey])
        let ownModel = try Self.signed(Self.model(6), own.localKey, "disc-v3", sequence: 5)
        #expect(throws: ModelInstallError.self) {
            try own.install(ownModel, version: "disc-v3", expectedSHA256: nil, from: .manager(Self.offer(fresh)))
        }
        #expect(
            try own.install(ownModel, version: "local-1", expectedSHA256: nil, from: .local("local-training")).1.origin == "local-training")
        #expect(
            !FileManager.default.fileExists(atPath: dir + "/disc-v3.loupe")
                && !FileManager.default.fileExists(atPath: dir + "/disc-v4.loupe"))

        // The manager's own rollback to disc-v1 (a new assignment) installs; so does the roll forward after it.
        let rollback = try Self.assignment(manager, version: "disc-v1", modelSequence: 1, sequence: 10)
        try install(shelf, v1, "disc-v1", assignment: rollback)
        #expect(shelf.state.current?.version == "disc-v1" && shelf.state.newestAssignment == 10)
        try install(shelf, v2, "disc-v2", assignment: try Self.assignment(manager, version: "disc-v2", modelSequence: 3, sequence: 11))
        #expect(shelf.state.current?.version == "disc-v2" && shelf.state.newestAssignment == 11)
        // The rollback's assignment cannot be replayed once the camera has moved on.
        #expect(throws: ModelInstallError.replayed(version: "disc-v1", assignment: 10, newest: 11)) {
            try install(shelf, v1, "disc-v1", assignment: rollback)
        }
        #expect(shelf.state.current?.version == "disc-v2")
        // The newest assignment survives a restart (it is in installed.json).
        #expect(try ModelShelf(directory: dir, managerKeys: [manager.publicKey]).state.newestAssignment == 11)
    }

    @Test func theRegistrySignsProvenanceAndEveryAssignment() throws {
        let dir = LabelStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let registry = try ModelRegistry(directory: dir, signingKeyPath: dir + "/model-signing.key")
        let key = registry.signingKey.publicKey
        let first = try registry.publish(try ModelFile.encode(Self.model(1)), inspectionType: "disc")
        let other = try registry.publish(try ModelFile.encode(Self.model(2)), inspectionType: "gear")
        let second = try registry.publish(try ModelFile.encode(Self.model(3)), inspectionType: "disc")
        #expect([first.sequence, other.sequence, second.sequence] == [Int](1...3))
        // The file's signed payload names its type, version and sequence.
        let (model, status) = try ModelFile.read(path: registry.path(of: second.version), trustedKeys: [key])
        #expect(model.metadata.provenance == ModelProvenance(inspectionType: "disc", versionName: "disc-v3", sequence: 3))
        #expect(status == .signed(publicKey: key.rawRepresentation))
        func assignment(_ camera: String) throws -> Loupe_Model_V1_ModelAssignment {
            let row = try #require(try registry.camera(camera))
            let bytes = try #require(Data(hexString: row.assignment ?? ""))
            #expect(key.isValidSignature(try #require(Data(hexString: row.assignmentSignature ?? "")), for: bytes))
            return try Loupe_Model_V1_ModelAssignment(serializedBytes: bytes)
        }
        // Every change of a camera's desired version is signed for that camera, with a newer sequence.
        try registry.assign(second.version, to: ["cam-1", "cam-2"], remember: true)
        let pushed = try assignment("cam-1")
        #expect(pushed.cameraID == "cam-1" && pushed.version == "disc-v3" && pushed.modelSequence == 3 && pushed.inspectionType == "disc")
        #expect(try assignment("cam-2").cameraID == "cam-2")
        try registry.assign(first.version, to: ["cam-1"], remember: false)
        let back = try assignment("cam-1")
        let cam2 = try assignment("cam-2").sequence
        #expect(back.version == "disc-v1" && back.modelSequence == 1 && back.sequence > max(pushed.sequence, cam2))
        // The next publication is newer than that assignment; a reopened registry (a restart) goes on counting.
        #expect(try registry.publish(try ModelFile.encode(Self.model(4)), inspectionType: "disc").sequence == Int(back.sequence) + 1)
        // A camera whose assignment is missing (set before assignments existed) gets one when the registry opens.
        let database = try DatabaseQueue(path: dir + "/models.sqlite")
        try database.write { db in
            try db.execute(sql: "UPDATE cameraModel SET assignment = NULL, assignmentSignature = NULL WHERE cameraId = 'cam-2'")
        }
        let reopened = try ModelRegistry(directory: dir, signingKeyPath: dir + "/model-signing.key")
        let resigned = try #require(try reopened.camera("cam-2"))
        #expect(resigned.assignment != nil && resigned.desiredVersion == "disc-v3")
        #expect(try reopened.publish(try ModelFile.encode(Self.model(5)), inspectionType: "gear").sequence > Int(back.sequence) + 2)
    }
}
