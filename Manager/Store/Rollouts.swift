public import Foundation
public import GRDB
public import LoupeProto
public import LoupeSegmentation
import LoupeStorage

/// When a canary rollout is promoted or rolled back (see CanaryPolicy in Proto/loupe.proto).
public struct CanaryPolicyRecord: Codable, Sendable, Equatable {
    public var automatic: Bool
    public var observeSeconds: Int
    public var minParts: Int
    public var maxDefectRateIncrease: Double
    public var minValidationMIoU: Double
    /// Roll back when the canaries' defect rate falls below this fraction of
    /// the baseline's (nil in rollouts recorded before the check: the default).
    public var minDefectRateRatio: Double?
    /// Bounds on the version's validation escape and false-reject rates (nil or 0: none; nil in rollouts recorded
    /// before the check).
    public var maxValidationEscapeRate: Double?
    public var maxValidationFalseRejectRate: Double?

    /// The fraction in force: 0.2 unless the policy names another.
    public var defectRateRatio: Double { minDefectRateRatio.flatMap { $0 > 0 ? $0 : nil } ?? 0.2 }
    /// Below this baseline defect rate a drop says nothing (too few defects to miss).
    public static let defectRateDropFloor = 0.02
    /// A drop is judged only when the baseline's rate predicts at least this many defects among the
    /// canaries' parts: with 3 expected, seeing none by chance is about 5 % likely (Poisson, e^-3);
    /// with one baseline failure in 31 parts and 14 canary parts (0.45 expected) it is 64 %.
    public static let defectRateDropMinimumExpected = 3.0

    /// Why the version's validation part figures break a bound of this policy; nil when within them (or unbounded). A
    /// version without figures, or with no parts of the kind a bound divides by, breaks any bound set on them.
    public func partBoundBreached(by parts: PartFigures?) -> String? {
        let bounds: [(name: String, bound: Double?, rate: (PartFigures) -> Double?)] = [
            ("escape rate", maxValidationEscapeRate, \.escapeRate), ("false-reject rate", maxValidationFalseRejectRate, \.falseRejectRate),
        ]
        for (name, bound, rate) in bounds {
            guard let bound, bound > 0 else { continue }
            guard let parts, let value = rate(parts) else {
                return String(format: "the version has no validation %@ to hold to the bound %.3f", name, bound)
            }
            if value > bound {
                return String(format: "validation %@ %.3f is above the bound %.3f (%@)", name, value, bound, parts.summary)
            }
        }
        return nil
    }

    public init(_ wire: Loupe_V1_CanaryPolicy) {
        automatic = wire.automatic
        observeSeconds = Int(wire.observeSeconds)
        minParts = Int(wire.minParts)
        maxDefectRateIncrease = Double(wire.maxDefectRateIncrease)
        minValidationMIoU = Double(wire.minValidationMiou)
        minDefectRateRatio = Double(wire.minDefectRateRatio)
        maxValidationEscapeRate = Double(wire.maxValidationEscapeRate)
        maxValidationFalseRejectRate = Double(wire.maxValidationFalseRejectRate)
    }

    public var wire: Loupe_V1_CanaryPolicy {
        var policy = Loupe_V1_CanaryPolicy()
        policy.automatic = automatic
        policy.observeSeconds = UInt32(observeSeconds)
        policy.minParts = UInt32(minParts)
        policy.maxDefectRateIncrease = Float(maxDefectRateIncrease)
        policy.minValidationMiou = Float(minValidationMIoU)
        policy.minDefectRateRatio = Float(minDefectRateRatio ?? 0)
        policy.maxValidationEscapeRate = Float(maxValidationEscapeRate ?? 0)
        policy.maxValidationFalseRejectRate = Float(maxValidationFalseRejectRate ?? 0)
        return policy
    }
}

/// Pass and fail counts of one camera at a moment (its cumulative report).
public struct PartCounts: Codable, Sendable, Equatable {
    public var pass: UInt64
    public var fail: UInt64

    public init(pass: UInt64, fail: UInt64) {
        self.pass = pass
        self.fail = fail
    }

    /// Parts judged since `earlier`; a camera restarted in between counts from zero.
    public func since(_ earlier: PartCounts) -> PartCounts {
        if pass < earlier.pass || fail < earlier.fail { return self }
        return PartCounts(pass: pass - earlier.pass, fail: fail - earlier.fail)
    }
}

/// A canary rollout: the canaries run the new version first; the rest of
/// the target gets it on promotion; on rollback the canaries return to the
/// versions they were meant to run before.
public struct RolloutRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "rollout"
    public enum State: String, Codable, Sendable { case canary, promoted, rolledBack = "rolled-back" }
    public var id: String
    public var version: String
    public var state: State
    public var canaryCameras: [String]
    public var remainingCameras: [String]
    /// Camera -> the version it was meant to run before the rollout.
    public var previousVersions: [String: String]
    public var policy: CanaryPolicyRecord
    public var startedAt: Date
    public var canariesInstalledAt: Date?
    public var decidedAt: Date?
    /// Every target camera's cumulative counts when the last canary installed.
    public var countsAtInstall: [String: PartCounts]
    /// The canaries' own last-hour defect rate when the push was made.
    public var priorDefectRate: Double?
    public var canaryParts: Int
    public var canaryDefectRate: Double
    public var baselineParts: Int
    public var baselineDefectRate: Double
    public var reason: String

    public var wire: Loupe_V1_Rollout {
        var rollout = Loupe_V1_Rollout()
        rollout.rolloutID = id
        rollout.modelVersion = version
        rollout.state =
            switch state {
            case .canary: .canary;
            case .promoted: .promoted;
            case .rolledBack: .rolledBack
            }
        rollout.canaryCameras = canaryCameras
        rollout.remainingCameras = remainingCameras
        rollout.policy = policy.wire
        rollout.startedUnixMs = startedAt.millisecondsSince1970
        rollout.canariesInstalledUnixMs = canariesInstalledAt?.millisecondsSince1970 ?? 0
        rollout.decidedUnixMs = decidedAt?.millisecondsSince1970 ?? 0
        rollout.canaryParts = UInt64(canaryParts)
        rollout.canaryDefectRate = Float(canaryDefectRate)
        rollout.baselineParts = UInt64(baselineParts)
        rollout.baselineDefectRate = Float(baselineDefectRate)
        rollout.reason = reason
        return rollout
    }
}

extension Date {
    var millisecondsSince1970: UInt64 { UInt64(max(0, timeIntervalSince1970 * 1000)) }
}

/// Named groups of cameras, stored with the registry.
struct CameraGroupRecord: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "cameraGroup"
    var name: String
    var cameras: [String]
}

extension ModelRegistry {
    /// Defines a group, or deletes it when `cameras` is empty.
    public func setGroup(_ name: String, cameras: [String]) throws(ModelRegistryError) {
        let members = try RegistryRules.group(name, cameras: cameras)
        try write { db in
            if members.isEmpty {
                _ = try CameraGroupRecord.deleteOne(db, key: name)
            } else {
                try CameraGroupRecord(name: name, cameras: members).save(db)
            }
        }
    }

    public func groups() throws(ModelRegistryError) -> [String: [String]] {
        try read { db in
            Dictionary(uniqueKeysWithValues: try CameraGroupRecord.fetchAll(db).map { ($0.name, $0.cameras) })
        }
    }

    /// Starts a canary rollout (`RegistryRules.startRollout`): assigns the version to the canaries now and
    /// records the rest of the target for promotion.
    public func startRollout(
        _ version: String, canaries: [String], remaining: [String], policy: CanaryPolicyRecord,
        priorDefectRate: Double?
    ) throws(ModelRegistryError) -> RolloutRecord {
        let target = try self.version(version)
        try RegistryRules.checkRollout(canaries: canaries, policy: policy)
        return try write { db in
            let open = try RolloutRecord.filter(Column("state") == RolloutRecord.State.canary.rawValue).fetchAll(db)
            let (rollout, written) = try rules.startRollout(
                target, .init(canaries: canaries, remaining: remaining, policy: policy, priorDefectRate: priorDefectRate),
                holding: .init(
                    open: open, rows: try rows(canaries, db), number: try RolloutRecord.fetchCount(db) + 1,
                    firstSequence: try reserveSequences(canaries.count, db)))
            try rollout.insert(db)
            for row in written { try row.save(db) }
            return rollout
        }
    }

    public func rollouts(state: RolloutRecord.State?) throws(ModelRegistryError) -> [RolloutRecord] {
        try read { db in
            var request = RolloutRecord.order(Column("startedAt").desc)
            if let state { request = request.filter(Column("state") == state.rawValue) }
            return try request.fetchAll(db)
        }
    }

    /// Saves the observation figures of a rollout still in its canary phase (a decided one is left as decided).
    public func update(_ rollout: RolloutRecord) throws(ModelRegistryError) {
        try write { db in
            guard try RolloutRecord.fetchOne(db, key: rollout.id)?.state == .canary else { return }
            try rollout.update(db)
        }
    }

    /// Ends a canary phase (`RegistryRules.decide`): promotion assigns the version to the remaining cameras;
    /// rollback returns each canary to its previous version.
    public func decide(_ id: String, promote: Bool, reason: String, figures: RolloutRecord?) throws(ModelRegistryError) -> RolloutRecord {
        try write { db in
            guard let held = try RolloutRecord.fetchOne(db, key: id) else { throw ModelRegistryError.notFound("rollout \(id)") }
            let (rollout, moves) = try RegistryRules.decide(held, promote: promote, reason: reason, figures: figures)
            let targets = try ModelVersionRecord.fetchAll(db, keys: Set(moves.map(\.version)))
            let versions = Dictionary(uniqueKeysWithValues: targets.map { ($0.version, $0) })
            let written = try rules.move(
                moves, promote: promote, rows: try rows(moves.map(\.camera), db), versions: versions,
                firstSequence: try reserveSequences(moves.count, db))
            try rollout.update(db)
            for row in written { try row.save(db) }
            return rollout
        }
    }

    /// Only this manager opens these files: it leads, and nothing changes behind its back but `loupe model
    /// publish` on this host, which the poll picks up.
    public func watch(_ event: @escaping @Sendable (RegistryEvent) -> Void) async { event(.leading(true)) }
}
