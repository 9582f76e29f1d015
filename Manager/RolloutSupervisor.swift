public import Foundation
public import Logging
import LoupeProto
import LoupeSegmentation
import Prometheus

/// Watches canary rollouts: notes when every canary has installed the new
/// version, measures the canaries' defect rate against the baseline from the
/// cameras' status reports, and (for automatic rollouts) promotes or rolls
/// back once the observation window and part count are reached. A canary
/// that refuses the version rolls the rollout back at once.
public struct RolloutSupervisor {
    let models: any ModelRegistryStoring
    let cameras: CameraRegistry
    let logger: Logger
    let metrics: ManagerMetrics?
    /// The fleet store other managers write cameras' status to, when the registry is shared.
    let sharedFleet: (any FleetStoring)?

    public init(
        models: any ModelRegistryStoring, cameras: CameraRegistry, logger: Logger, metrics: ManagerMetrics?,
        sharedFleet: (any FleetStoring)? = nil
    ) {
        self.models = models
        self.cameras = cameras
        self.logger = logger
        self.metrics = metrics
        self.sharedFleet = sharedFleet
    }

    /// Returns how many rollouts are still in their canary phase.
    @discardableResult
    public func step(now: Date = Date()) async -> Int {
        guard let open = try? await models.rollouts(state: .canary) else { return 0 }
        var stillOpen = 0
        let installs = Dictionary(((try? await models.cameras()) ?? []).map { ($0.cameraId, $0) }) { $1 }
        // Cameras connected to another manager of a shared database count as that manager last stored them
        // (every `CameraRegistry.statusPersistInterval`), a delay that is small beside a canary window.
        let fleet: [Loupe_V1_CameraStatus]
        do { fleet = try await cameras.view(sharedWith: open.isEmpty ? nil : sharedFleet) } catch {
            logger.warning("cannot read other managers' cameras; judging by this manager's", metadata: ["error": "\(error)"])
            fleet = cameras.snapshot()
        }
        let counts = Dictionary(
            uniqueKeysWithValues: fleet.map {
                ($0.cameraID, PartCounts(pass: $0.status.passCount, fail: $0.status.failCount))
            })
        for rollout in open {
            do {
                if try await !supervise(rollout, counts: counts, installs: installs, now: now) { stillOpen += 1 }
            } catch {
                stillOpen += 1
                logger.error("rollout supervision failed", metadata: ["rollout": "\(rollout.id)", "error": "\(error)"])
            }
        }
        return stillOpen
    }

    /// One look at a rollout; true when it was decided.
    private func supervise(
        _ original: RolloutRecord, counts: [String: PartCounts], installs: [String: CameraModelRecord], now: Date
    ) async throws -> Bool {
        var rollout = original
        for canary in rollout.canaryCameras {
            if let error = installs[canary]?.lastError, error.hasPrefix(rollout.version + ":") {
                try await decide(
                    rollout, promote: false,
                    reason:
                        "canary \(canary) refused \(rollout.version): "
                        + "\(error.dropFirst(rollout.version.count + 1).trimmingCharacters(in: .whitespaces))"
                )
                return true
            }
        }
        guard let installedAt = rollout.canariesInstalledAt else {
            if rollout.canaryCameras.allSatisfy({ installs[$0]?.installedVersion == rollout.version }) {
                rollout.canariesInstalledAt = now
                rollout.countsAtInstall = counts.filter { (rollout.canaryCameras + rollout.remainingCameras).contains($0.key) }
                rollout.reason = "observing the canaries"
                try await models.update(rollout)
                logger.info("canaries run the new version", metadata: ["rollout": "\(rollout.id)", "version": "\(rollout.version)"])
            }
            return false
        }
        func judged(_ group: [String]) -> PartCounts {
            group.reduce(PartCounts(pass: 0, fail: 0)) { sum, camera in
                guard let current = counts[camera], let start = rollout.countsAtInstall[camera] else { return sum }
                let delta = current.since(start)
                return PartCounts(pass: sum.pass + delta.pass, fail: sum.fail + delta.fail)
            }
        }
        let canary = judged(rollout.canaryCameras), baseline = judged(rollout.remainingCameras)
        rollout.canaryParts = Int(canary.pass + canary.fail)
        rollout.canaryDefectRate = rollout.canaryParts > 0 ? Double(canary.fail) / Double(rollout.canaryParts) : 0
        rollout.baselineParts = Int(baseline.pass + baseline.fail)
        if rollout.baselineParts > 0 {
            rollout.baselineDefectRate = Double(baseline.fail) / Double(rollout.baselineParts)
        } else {
            rollout.baselineDefectRate = rollout.priorDefectRate ?? 0
        }
        let policy = rollout.policy
        let observed = now.timeIntervalSince(installedAt)
        guard policy.automatic, observed >= Double(policy.observeSeconds), rollout.canaryParts >= max(1, policy.minParts) else {
            if rollout != original { try await models.update(rollout) }
            return false
        }
        let version = try await models.version(rollout.version)
        let increase = rollout.canaryDefectRate - rollout.baselineDefectRate
        let figures = String(
            format: "canary defect rate %.3f over %d parts, baseline %.3f over %d parts%@, validation mIoU %.3f",
            rollout.canaryDefectRate, rollout.canaryParts, rollout.baselineDefectRate, rollout.baselineParts,
            rollout.baselineParts == 0 ? " (the canaries' last hour before the push)" : "", version.validationMIoU)
        if version.validationMIoU < policy.minValidationMIoU {
            try await decide(
                rollout, promote: false,
                reason: String(format: "validation mIoU %.3f is below the bound %.3f; ", version.validationMIoU, policy.minValidationMIoU)
                    + figures)
        } else if let breach = policy.partBoundBreached(by: version.validationParts) {
            try await decide(rollout, promote: false, reason: breach + "; " + figures)
        } else if increase > policy.maxDefectRateIncrease {
            try await decide(
                rollout, promote: false,
                reason: String(format: "defect rate rose by %.3f (bound %.3f); ", increase, policy.maxDefectRateIncrease) + figures)
        } else if policy.defectRateRatio < 1, rollout.baselineDefectRate >= CanaryPolicyRecord.defectRateDropFloor,
            rollout.baselineDefectRate * Double(rollout.canaryParts) >= CanaryPolicyRecord.defectRateDropMinimumExpected,
            rollout.canaryDefectRate < rollout.baselineDefectRate * policy.defectRateRatio
        {
            // A model that stops finding the defects the old one found is as suspect as one that floods.
            try await decide(
                rollout, promote: false,
                reason: String(
                    format: "defect rate fell to %.3f, below %.2f of the baseline: the new model stops finding defects the old one found; ",
                    rollout.canaryDefectRate, policy.defectRateRatio) + figures)
        } else {
            try await decide(rollout, promote: true, reason: "within bounds; " + figures)
        }
        return true
    }

    private func decide(_ rollout: RolloutRecord, promote: Bool, reason: String) async throws {
        let decided = try await models.decide(rollout.id, promote: promote, reason: reason, figures: rollout)
        (promote ? metrics?.rolloutsPromoted : metrics?.rolloutsRolledBack)?.increment()
        logger.notice(
            promote ? "rollout promoted" : "rollout rolled back",
            metadata: [
                "rollout": "\(decided.id)", "version": "\(decided.version)", "reason": "\(reason)",
            ])
    }
}
