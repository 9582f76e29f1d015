import Foundation
import Logging
import LoupeManager
import LoupeProto
import LoupeSegmentation
import LoupeVision
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
        minParts: UInt32 = 100, newModel: SegmentationModel? = nil, bounds: (inout Loupe_V1_CanaryPolicy) -> Void = { _ in }
    ) async throws -> RolloutRecord {
        let backend = try await StoreBackend(kind)
        let registry = try await backend.models()
        let old = try await registry.publish(try ModelFile.encode(ProvenanceTests.model(1)), inspectionType: "disc")
        let new = try await registry.publish(try ModelFile.encode(newModel ?? ProvenanceTests.model(2)), inspectionType: "disc")
        #expect(try await registry.version(new.version).validationParts == newModel?.metadata.partFigures, "the registry keeps them")
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
        bounds(&policy)
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

    /// A version whose validation split let 10 of 40 defective parts through (25 %) and threw 2 of 50 good ones away.
    static func modelWithPartFigures() throws -> SegmentationModel {
        var model = ProvenanceTests.model(2)
        model.metadata.calibratedThreshold = 0.5
        model.metadata.parts = try #require(
            PartVerdicts(
                classes: model.configuration.classes, rule: FailRule(), goodParts: 50,
                defectiveParts: [40] + [Int](repeating: 0, count: model.configuration.classes - 1),
                curve: [
                    PartPoint(
                        threshold: 0.5, escapes: [10] + [Int](repeating: 0, count: model.configuration.classes - 1),
                        falseRejects: [2] + [Int](repeating: 0, count: model.configuration.classes - 1))
                ]))
        return model
    }

    @Test(arguments: StoreBackend.all)
    func aVersionWhoseValidationEscapeRateBreaksTheBoundIsRolledBackWhateverTheLineSays(_ kind: StoreBackend.Kind) async throws {
        let steady = (canary: PartCounts(pass: 182, fail: 18), baseline: PartCounts(pass: 180, fail: 20))
        let model = try Self.modelWithPartFigures()
        #expect(model.metadata.partFigures?.escapeRate == 0.25 && model.metadata.partFigures?.falseRejectRate == 0.04)
        let escaping = try await Self.decide(kind, canary: steady.canary, baseline: steady.baseline, newModel: model) {
            $0.maxValidationEscapeRate = 0.1
        }
        #expect(
            escaping.state == .rolledBack && escaping.reason.contains("validation escape rate 0.250 is above the bound 0.100"),
            "\(escaping.reason)")
        let rejecting = try await Self.decide(kind, canary: steady.canary, baseline: steady.baseline, newModel: model) {
            $0.maxValidationFalseRejectRate = 0.01
        }
        #expect(rejecting.state == .rolledBack && rejecting.reason.contains("false-reject rate 0.040"), "\(rejecting.reason)")
        let within = try await Self.decide(kind, canary: steady.canary, baseline: steady.baseline, newModel: model) {
            $0.maxValidationEscapeRate = 0.3
            $0.maxValidationFalseRejectRate = 0.05
        }
        #expect(within.state == .promoted, "\(within.reason)")
        // A version that cannot show its figures does not pass a bound on them.
        let unknown = try await Self.decide(kind, canary: steady.canary, baseline: steady.baseline) { $0.maxValidationEscapeRate = 0.3 }
        #expect(unknown.state == .rolledBack && unknown.reason.contains("has no validation escape rate"), "\(unknown.reason)")
    }

    @Test func boundsOutsideZeroToOneAreRefusedByName() async throws {
        let backend = try await StoreBackend(.sqlite)
        let registry = try await backend.models()
        let version = try await registry.publish(try ModelFile.encode(ProvenanceTests.model(1)), inspectionType: "disc")
        for bad: Float in [-0.1, 1.5, .nan] {
            var policy = Loupe_V1_CanaryPolicy()
            policy.maxValidationFalseRejectRate = bad
            await #expect(throws: ModelRegistryError.self) {
                _ = try await registry.startRollout(
                    version.version, canaries: ["cam-a"], remaining: [], policy: CanaryPolicyRecord(policy), priorDefectRate: nil)
            }
            do {
                _ = try await registry.startRollout(
                    version.version, canaries: ["cam-a"], remaining: [], policy: CanaryPolicyRecord(policy), priorDefectRate: nil)
            } catch {
                #expect("\(error)".contains("max_validation_false_reject_rate"), "\(error)")
            }
        }
    }
}
