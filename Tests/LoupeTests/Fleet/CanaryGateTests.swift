import Foundation
import Logging
import LoupeManager
import LoupeProto
import LoupeSegmentation
import Testing

/// The canary gate on real registries (SQLite and PostgreSQL): a canary that floods is rolled back,
/// and so is one whose defect rate falls to near nothing while the old model
/// still finds defects (a model that stops seeing them); one that keeps the
/// rate is promoted.
@Suite struct CanaryGateTests {
    /// Runs one automatic rollout of a second version on cam-a (canary) with cam-b
    /// on the old one as the baseline, after the given parts, and returns it decided.
    static func decide(
        _ kind: StoreBackend.Kind, canary: PartCounts, baseline: PartCounts,
        minParts: UInt32 = 100
    ) async throws -> RolloutRecord {
        let backend = try await StoreBackend(kind)
        let registry = try await backend.models()
        let old = try await registry.publish(try ModelFile.encode(ProvenanceTests.model(1)), inspectionType: "disc")
        let new = try await registry.publish(try ModelFile.encode(ProvenanceTests.model(2)), inspectionType: "disc")
        let cameras = CameraRegistry()
        for camera in ["cam-a", "cam-b"] {
            cameras.connected(cameraId: camera, address: "127.0.0.1", softwareVersion: "test")
            try await registry.assign(old.version, to: [camera], remember: true)
            try await registry.recordInstall(cameraId: camera, version: old.version, ok: true, error: "")
        }
        func report(_ camera: String, _ counts: PartCounts) {
            var status = Loupe_V1_AgentStatus()
            status.passCount = counts.pass
            status.failCount = counts.fail
            cameras.report(cameraId: camera, status: status)
        }
        report("cam-a", PartCounts(pass: 1000, fail: 50))
        report("cam-b", PartCounts(pass: 1000, fail: 50))
        var policy = Loupe_V1_CanaryPolicy()
        policy.automatic = true
        policy.minParts = minParts
        policy.maxDefectRateIncrease = 0.05
        _ = try await registry.startRollout(
            new.version, canaries: ["cam-a"], remaining: ["cam-b"], policy: CanaryPolicyRecord(policy),
            priorDefectRate: nil)
        try await registry.recordInstall(cameraId: "cam-a", version: new.version, ok: true, error: "")
        let supervisor = RolloutSupervisor(models: registry, cameras: cameras, logger: Logger(label: "test"), metrics: nil)
        // The canary has installed: the counts from here on are the observation.
        #expect(await supervisor.step() == 1)
        report("cam-a", PartCounts(pass: 1000 + canary.pass, fail: 50 + canary.fail))
        report("cam-b", PartCounts(pass: 1000 + baseline.pass, fail: 50 + baseline.fail))
        #expect(await supervisor.step() == 0)
        return try #require(try await registry.rollouts(state: nil).first)
    }

    @Test(arguments: StoreBackend.all) func aCanaryThatStopsFindingDefectsIsRolledBack(_ kind: StoreBackend.Kind) async throws {
        // The old model fails 10 % of parts; the canary suddenly none.
        let rollout = try await Self.decide(kind, canary: PartCounts(pass: 200, fail: 0), baseline: PartCounts(pass: 180, fail: 20))
        #expect(rollout.state == .rolledBack)
        #expect(rollout.reason.contains("stops finding defects"), "\(rollout.reason)")
    }

    @Test(arguments: StoreBackend.all)
    func aCanaryThatFloodsIsRolledBackAndOneThatKeepsTheRateIsPromoted(_ kind: StoreBackend.Kind) async throws {
        let flood = try await Self.decide(kind, canary: PartCounts(pass: 100, fail: 100), baseline: PartCounts(pass: 180, fail: 20))
        #expect(flood.state == .rolledBack && flood.reason.contains("defect rate rose"), "\(flood.reason)")
        let steady = try await Self.decide(kind, canary: PartCounts(pass: 182, fail: 18), baseline: PartCounts(pass: 180, fail: 20))
        #expect(steady.state == .promoted, "\(steady.reason)")
        // One baseline failure in 31 parts predicts 0.45 among 14 canary parts: none is no evidence of a drop.
        let thin = try await Self.decide(kind, canary: PartCounts(pass: 14, fail: 0), baseline: PartCounts(pass: 30, fail: 1), minParts: 4)
        #expect(thin.state == .promoted, "\(thin.reason)")
        // On a clean line (no defects to miss) a canary that finds none is fine.
        let clean = try await Self.decide(kind, canary: PartCounts(pass: 200, fail: 0), baseline: PartCounts(pass: 200, fail: 0))
        #expect(clean.state == .promoted, "\(clean.reason)")
    }
}
