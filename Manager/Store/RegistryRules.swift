import Crypto
import Foundation
import LoupeProto
import LoupeSegmentation
import LoupeStorage
import SwiftProtobuf

/// What the model registry decides, in one place for both backends
/// (`ModelRegistry` on SQLite, `PostgresModelRegistry`): each backend reads
/// the rows a call needs inside one write transaction, asks these rules what
/// to write, and writes it before the transaction commits. The rules never
/// touch a database, so the two backends cannot come to disagree.
///
/// Every write that signs something takes its sequence numbers from the
/// registry's one counter, reserved in the same transaction
/// (`firstSequence` is the first of the numbers reserved), so each decision
/// is newer than everything signed before it.
struct RegistryRules: Sendable {
    let signingKey: Curve25519.Signing.PrivateKey

    /// A camera a decision moves, and the version it moves to.
    typealias Move = (camera: String, version: String)

    /// The model a publication carries, and its inspection type, checked.
    static func publishable(_ modelFile: Data, inspectionType: String) throws(ModelRegistryError) -> SegmentationModel {
        let model: SegmentationModel
        do { model = try ModelFile.decode(modelFile, name: "published model").0 } catch { throw .invalid("\(error)") }
        guard FleetName.isValid(inspectionType) else { throw .invalid(FleetName.refusal("inspection type", inspectionType)) }
        return model
    }

    /// Version `number` of its inspection type: the file signed with the manager's key (the signature covers the
    /// version name, the inspection type and the sequence with the weights), and the row that describes it.
    func sign(
        _ modelFile: Data, model: SegmentationModel, inspectionType: String, number: Int, sequence: UInt64,
        parent: String?
    ) throws(ModelRegistryError) -> (file: Data, record: ModelVersionRecord) {
        let name = "\(inspectionType)-v\(number)"
        let signed: Data
        do {
            signed = try ModelFile.sign(
                modelFile, with: signingKey,
                provenance: ModelProvenance(inspectionType: inspectionType, versionName: name, sequence: sequence),
                version: UInt64(number))
        } catch { throw .invalid("\(error)") }
        let digest = Data(SHA256.hash(data: signed))
        let offerSignature: Data
        do { offerSignature = try signingKey.signature(for: digest) } catch { throw .io("signing failed: \(error)") }
        let record = ModelVersionRecord(
            version: name, number: number, inspectionType: inspectionType, sha256: digest.hexString, bytes: signed.count,
            offerSignature: offerSignature.hexString, parentVersion: parent, description: model.metadata.description,
            validationMIoU: Double(model.metadata.validationMIoU), datasetSHA256: model.metadata.datasetSHA256, createdAt: Date(),
            sequence: Int(sequence), validationParts: model.metadata.partFigures)
        return (signed, record)
    }

    /// Sets the version a camera should run, the one rule for every way a desired version changes (push,
    /// rollback, canary start and decision): each is a decision signed for that camera with its own sequence.
    /// Agents install nothing from the manager without one, so an old offer replayed, or another camera's, is refused.
    func desire(_ target: ModelVersionRecord, for row: inout CameraModelRecord, sequence: UInt64) throws(ModelRegistryError) {
        row.desiredVersion = target.version
        var assignment = Loupe_Model_V1_ModelAssignment()
        assignment.cameraID = row.cameraId
        assignment.inspectionType = target.inspectionType
        assignment.version = target.version
        assignment.modelSequence = UInt64(target.sequence)
        assignment.sequence = sequence
        assignment.issuedAtMs = Int64(Date().timeIntervalSince1970 * 1000)
        do {
            let bytes = try assignment.serializedData()
            row.assignment = bytes.hexString
            row.assignmentSignature = try signingKey.signature(for: bytes).hexString
        } catch {
            throw .io("signing an assignment failed: \(error)")
        }
    }

    /// A camera's row as held, or a fresh one for a camera the registry has not seen.
    static func row(_ camera: String, in rows: [String: CameraModelRecord]) -> CameraModelRecord {
        rows[camera] ?? CameraModelRecord(cameraId: camera, updatedAt: Date())
    }

    /// A push (or, with `remember` false, a rollback) of `target` to `cameras`: the rows to write. With
    /// `remember` the version each camera was meant to run so far is kept as its previous version; a rollback
    /// forgets it (the camera has no previous version until its next push). Needs `cameras.count` sequences.
    func assign(
        _ target: ModelVersionRecord, to cameras: [String], rows: [String: CameraModelRecord], remember: Bool,
        firstSequence: UInt64
    ) throws(ModelRegistryError) -> [CameraModelRecord] {
        guard !cameras.isEmpty else { throw .invalid("name at least one camera") }
        var seen = Set<String>()
        var written: [CameraModelRecord] = []
        for (offset, camera) in cameras.enumerated() where seen.insert(camera).inserted {
            var row = Self.row(camera, in: rows)
            if !remember {
                row.previousVersion = nil
            } else if row.desiredVersion != target.version, let earlier = row.desiredVersion {
                row.previousVersion = earlier
            }
            try desire(target, for: &row, sequence: firstSequence + UInt64(offset))
            row.lastError = nil
            row.updatedAt = Date()
            written.append(row)
        }
        return written
    }

    /// What a camera reported after an offer, on its row.
    static func recordInstall(on row: inout CameraModelRecord, version: String, ok: Bool, error: String) {
        if ok {
            row.installedVersion = version
            row.installedAt = Date()
            row.lastError = nil
        } else {
            row.lastError = "\(version): \(error)"
        }
        row.updatedAt = Date()
    }

    /// The checks a rollout's request passes before anything is read.
    static func checkRollout(canaries: [String], policy: CanaryPolicyRecord) throws(ModelRegistryError) {
        guard !canaries.isEmpty else { throw .invalid("a canary rollout needs at least one canary camera") }
        guard policy.observeSeconds >= 0, policy.observeSeconds <= 7 * 86_400 else {
            throw .invalid("observe_seconds must be at most a week")
        }
        guard (0...1).contains(policy.maxDefectRateIncrease) else {
            throw .invalid("max_defect_rate_increase must be a fraction in [0, 1]")
        }
        for (name, bound) in [
            ("max_validation_escape_rate", policy.maxValidationEscapeRate),
            ("max_validation_false_reject_rate", policy.maxValidationFalseRejectRate),
        ] {
            guard let bound else { continue }
            guard (0...1).contains(bound) else { throw .invalid("\(name) must be a fraction in [0, 1] (0: no bound), not \(bound)") }
        }
    }

    /// What an operator asks of a rollout: its canaries, the rest of its cameras, its policy, and the line's defect
    /// rate before it.
    struct RolloutAsk {
        var canaries: [String]
        var remaining: [String]
        var policy: CanaryPolicyRecord
        var priorDefectRate: Double?
    }

    /// What the registry holds as the rollout starts (read in the write that starts it): the rollouts in their canary
    /// phase, the canaries' rows, the new rollout's number, and the first of the `canaries.count` sequences reserved.
    struct RolloutStart {
        var open: [RolloutRecord]
        var rows: [String: CameraModelRecord]
        var number: Int
        var firstSequence: UInt64
    }

    /// A canary rollout, numbered `held.number`: the rollout to insert and the canaries' rows to write (the version
    /// assigned to them now; the rest of the target gets it on promotion). Refused while a rollout in its canary
    /// phase covers any of these cameras, and for a canary with nothing to return to.
    func startRollout(
        _ target: ModelVersionRecord, _ ask: RolloutAsk, holding held: RolloutStart
    ) throws(ModelRegistryError) -> (rollout: RolloutRecord, rows: [CameraModelRecord]) {
        let (canaries, remaining, policy, priorDefectRate) = (ask.canaries, ask.remaining, ask.policy, ask.priorDefectRate)
        let (open, rows, number, firstSequence) = (held.open, held.rows, held.number, held.firstSequence)
        try Self.checkRollout(canaries: canaries, policy: policy)
        let targeted = Set(canaries + remaining)
        if let clash = open.first(where: { $0.state == .canary && !targeted.isDisjoint(with: $0.canaryCameras + $0.remainingCameras) }) {
            throw .invalid(
                "rollout \(clash.id) of \(clash.version) is still in its canary phase for some of these cameras; "
                    + "promote or roll it back first")
        }
        var previous: [String: String] = [:]
        for camera in canaries {
            let current = rows[camera]
            guard let installed = current?.installedVersion ?? current?.desiredVersion else {
                throw .invalid(
                    "canary \(camera) runs no model yet, so a rollback would have nothing to return to; "
                        + "push a first version to it without canaries")
            }
            guard installed != target.version else { throw .invalid("canary \(camera) already runs \(target.version)") }
            previous[camera] = current?.desiredVersion ?? installed
        }
        let rollout = RolloutRecord(
            id: "rollout-\(number)", version: target.version, state: .canary, canaryCameras: canaries.sorted(),
            remainingCameras: remaining.sorted(), previousVersions: previous, policy: policy, startedAt: Date(), countsAtInstall: [:],
            priorDefectRate: priorDefectRate,
            canaryParts: 0, canaryDefectRate: 0, baselineParts: 0, baselineDefectRate: 0,
            reason: policy.automatic ? "canaries installing" : "canaries installing; waiting for an operator's decision")
        var written: [CameraModelRecord] = []
        for (offset, camera) in canaries.enumerated() {
            var row = Self.row(camera, in: rows)
            row.previousVersion = row.desiredVersion
            try desire(target, for: &row, sequence: firstSequence + UInt64(offset))
            row.lastError = nil
            row.updatedAt = Date()
            written.append(row)
        }
        return (rollout, written)
    }

    /// The end of a canary phase: the decided rollout and the cameras that move, with the version each moves to
    /// (on promotion the remaining cameras to the rollout's version; on rollback each canary to its previous one).
    static func decide(
        _ held: RolloutRecord, promote: Bool, reason: String,
        figures: RolloutRecord?
    ) throws(ModelRegistryError) -> (rollout: RolloutRecord, moves: [Move]) {
        guard held.state == .canary else { throw .invalid("rollout \(held.id) was already \(held.state.rawValue)") }
        var rollout = held
        if let figures {
            rollout.canariesInstalledAt = figures.canariesInstalledAt
            rollout.countsAtInstall = figures.countsAtInstall
            rollout.canaryParts = figures.canaryParts
            rollout.canaryDefectRate = figures.canaryDefectRate
            rollout.baselineParts = figures.baselineParts
            rollout.baselineDefectRate = figures.baselineDefectRate
        }
        rollout.state = promote ? .promoted : .rolledBack
        rollout.decidedAt = Date()
        rollout.reason = reason
        let moves: [Move] =
            promote
            ? rollout.remainingCameras.map { ($0, rollout.version) }
            : rollout.canaryCameras.compactMap { camera in rollout.previousVersions[camera].map { (camera, $0) } }
        return (rollout, moves)
    }

    /// The rows a decision's moves write; `versions` holds the record of every version moved to. Needs `moves.count` sequences.
    func move(
        _ moves: [Move], promote: Bool, rows: [String: CameraModelRecord],
        versions: [String: ModelVersionRecord], firstSequence: UInt64
    ) throws(ModelRegistryError) -> [CameraModelRecord] {
        var written: [CameraModelRecord] = []
        for (offset, move) in moves.enumerated() {
            guard let target = versions[move.version] else { throw .notFound("model version \(move.version)") }
            var row = Self.row(move.camera, in: rows)
            if promote {
                if row.desiredVersion != move.version { row.previousVersion = row.desiredVersion }
                row.lastError = nil
            } else {
                row.previousVersion = nil
            }
            try desire(target, for: &row, sequence: firstSequence + UInt64(offset))
            row.updatedAt = Date()
            written.append(row)
        }
        return written
    }

    /// A group's stored form: its name checked, its cameras once each in order (empty: delete the group).
    static func group(_ name: String, cameras: [String]) throws(ModelRegistryError) -> [String] {
        guard FleetName.isValid(name) else { throw .invalid(FleetName.refusal("group name", name)) }
        return Array(Set(cameras)).sorted()
    }

    /// Where a chunk request falls in a model file of `bytes` bytes: the range to read, refused past the end.
    static func chunkRange(of version: ModelVersionRecord, offset: UInt64, length: Int) throws(ModelRegistryError) -> Range<Int> {
        guard offset <= UInt64(version.bytes) else {
            throw .invalid("offset \(offset) is past the end of model \(version.version) (\(version.bytes) bytes)")
        }
        let start = Int(offset)
        return start..<min(version.bytes, start + max(0, length))
    }
}

/// The manager's model-signing key: loaded from its file, or made and written (0600) on first start; the public
/// half is written beside it (`.pub`) for agents. The key never leaves the hosts that hold this file.
enum ModelSigningKey {
    static func loadOrCreate(_ path: String) throws(ModelRegistryError) -> Curve25519.Signing.PrivateKey {
        do {
            let key: Curve25519.Signing.PrivateKey
            if FileManager.default.fileExists(atPath: path) {
                key = try SigningKeyFile.load(path)
            } else {
                key = Curve25519.Signing.PrivateKey()
                try SigningKeyFile.write(key.rawRepresentation, to: path, secret: true)
            }
            try SigningKeyFile.write(key.publicKey.rawRepresentation, to: (path as NSString).deletingPathExtension + ".pub", secret: false)
            return key
        } catch {
            throw .io("model-signing key \(path): \(error)")
        }
    }
}
