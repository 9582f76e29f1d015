import Foundation
import Logging
import LoupePKI
import LoupeProto
import LoupeSegmentation
import LoupeWire
import Synchronization
import LoupeStorage

/// The operator's commands over the wire: models and rollouts, training
/// jobs, datasets and camera groups. Every error names its cause as a typed
/// protocol error (NOT_FOUND, INVALID_ARGUMENT, ...). A command that changes
/// what a camera should run wakes the offers.
struct OperatorCommands: Sendable {
    let models: any ModelRegistryStoring
    let trainingData: any TrainingDataStoring
    let training: TrainingQueue
    let cameras: CameraRegistry
    /// The fleet store other managers share (PostgreSQL), so cameras connected to them are known here too.
    let sharedFleet: (any FleetStoring)?
    let offers: ModelOffers
    let logger: Logger

    /// The fleet as this manager answers for it (`CameraRegistry.view`).
    func fleet() async throws -> [Loupe_V1_CameraStatus] {
        do { return try await cameras.view(sharedWith: sharedFleet) } catch {
            throw WireError.refused(code: .unavailable, message: "cannot read the cameras other managers hold: \(error)")
        }
    }

    func handle(_ body: Envelope.OneOf_Body, connection: WireConnection, peer: PeerIdentity) async throws -> Envelope.OneOf_Body? {
        switch body {
        case .modelListQuery(let query):
            return .modelListReply(try await mapped { try await modelList(query) })
        case .modelPush(let push):
            defer { offers.wake() }
            return .modelPushReply(try await mapped { try await self.push(push, by: peer.name) })
        case .modelRollback(let rollback):
            defer { offers.wake() }
            return .modelPushReply(try await mapped { try await self.rollback(rollback, by: peer.name) })
        case .rolloutDecision(let decision):
            defer { offers.wake() }
            let registry = models
            let rollout = try await mapped {
                try await registry.decide(
                    decision.rolloutID, promote: decision.promote,
                    reason: decision.promote ? "promoted by \(peer.name)" : "rolled back by \(peer.name)", figures: nil)
            }
            logger.notice(
                "rollout decided by operator",
                metadata: ["rollout": "\(rollout.id)", "state": "\(rollout.state.rawValue)", "by": "\(peer.name)"])
            var reply = Loupe_V1_ModelPushReply()
            reply.cameras = decision.promote ? rollout.remainingCameras : rollout.canaryCameras
            reply.rollout = rollout.wire
            return .modelPushReply(reply)
        case .trainingStatusQuery(let query):
            let queue = training
            var reply = Loupe_V1_TrainingStatusReply()
            reply.jobs = try await queue.status(jobId: query.jobID.isEmpty ? nil : query.jobID)
            if query.follow, !query.jobID.isEmpty { await queue.follow(jobId: query.jobID, connection: connection) }
            return .trainingStatusReply(reply)
        case .datasetStatsQuery(let query):
            let store = trainingData
            var reply = Loupe_V1_DatasetStatsReply()
            do {
                reply.datasets = try await store.statistics(
                    inspectionType: query.inspectionType.isEmpty ? nil : query.inspectionType, validationFraction: 0.1)
            } catch {
                throw WireError.refused(code: .internal, message: error.description)
            }
            // Where labels are needed: each camera's unsure Library frames, from its last status.
            let statuses = try await fleet()
            for index in reply.datasets.indices {
                for camera in statuses where camera.status.inspectionType == reply.datasets[index].inspectionType {
                    reply.datasets[index].cameraUnsureFrames[camera.cameraID] = camera.status.libraryUnsureFrames
                }
            }
            return .datasetStatsReply(reply)
        case .cameraGroupSet(let set):
            let registry = models
            try await mapped { try await registry.setGroup(set.name, cameras: set.cameras) }
            logger.notice(
                "camera group set",
                metadata: ["group": "\(set.name)", "cameras": "\(set.cameras.joined(separator: ","))", "by": "\(peer.name)"])
            return .cameraGroupList(try await groupList(registry))
        case .cameraGroupList:
            return .cameraGroupList(try await groupList(models))
        default:
            return nil
        }
    }

    /// Runs registry work, turning its errors into protocol errors.
    static func mapped<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as ModelRegistryError {
            switch error {
            case .notFound(let what): throw WireError.refused(code: .notFound, message: "\(what) does not exist")
            case .invalid(let why): throw WireError.refused(code: .invalidArgument, message: why)
            case .database, .io: throw WireError.refused(code: .internal, message: error.description)
            case .diskFull: throw WireError.refused(code: .unavailable, message: error.description)
            }
        }
    }

    func mapped<T>(_ body: () async throws -> T) async throws -> T { try await Self.mapped(body) }

    func groupList(_ registry: any ModelRegistryStoring) async throws -> Loupe_V1_CameraGroupList {
        var list = Loupe_V1_CameraGroupList()
        for (name, cameras) in try await mapped({ try await registry.groups() }) as [String: [String]] {
            var members = Loupe_V1_CameraGroupMembers()
            members.cameras = cameras
            list.groups[name] = members
        }
        return list
    }

    func modelList(_ query: Loupe_V1_ModelListQuery) async throws -> Loupe_V1_ModelListReply {
        let registry = models
        var versions = try await registry.versions(inspectionType: query.inspectionType.isEmpty ? nil : query.inspectionType)
        if !query.version.isEmpty { versions = [try await registry.version(query.version)] }
        let cameras = try await registry.cameras()
        var reply = Loupe_V1_ModelListReply()
        reply.versions = versions.map { record in
            var info = Loupe_V1_ModelVersionInfo()
            info.version = record.version
            info.inspectionType = record.inspectionType
            info.sizeBytes = UInt64(record.bytes)
            info.sha256 = Data(hexString: record.sha256) ?? Data()
            info.parentVersion = record.parentVersion ?? ""
            info.description_p = record.description
            info.validationMiou = Float(record.validationMIoU)
            info.datasetSha256 = Data(hexString: record.datasetSHA256) ?? Data()
            info.createdUnixMs = record.createdAt.millisecondsSince1970
            info.installedOn = cameras.filter { $0.installedVersion == record.version }.map(\.cameraId)
            if let parts = record.validationParts { info.parts = parts.wire }
            return info
        }
        let shown = Set(versions.map(\.version))
        reply.cameras = cameras.filter {
            query.version.isEmpty || shown.contains($0.desiredVersion ?? "") || shown.contains($0.installedVersion ?? "")
        }.map { camera in
            var info = Loupe_V1_CameraModelInfo()
            info.cameraID = camera.cameraId
            info.desiredVersion = camera.desiredVersion ?? ""
            info.installedVersion = camera.installedVersion ?? ""
            info.previousVersion = camera.previousVersion ?? ""
            info.lastError = camera.lastError ?? ""
            info.updatedUnixMs = camera.updatedAt.millisecondsSince1970
            return info
        }
        reply.rollouts = try await registry.rollouts().filter { query.version.isEmpty || shown.contains($0.version) }.prefix(20).map(\.wire)
        return reply
    }

    /// The cameras a target names; each must have connected at least once.
    func resolve(_ target: Loupe_V1_CameraTarget, inspectionType: String?) async throws -> [String] {
        let known = try await fleet()
        let chosen = [!target.cameras.isEmpty, !target.inspectionType.isEmpty, !target.group.isEmpty].filter { $0 }.count
        guard chosen == 1 else {
            throw ModelRegistryError.invalid("name the target cameras one way: a list of cameras, an inspection type or a group")
        }
        var cameras: [String]
        if !target.inspectionType.isEmpty {
            if let inspectionType, inspectionType != target.inspectionType {
                throw ModelRegistryError.invalid("the version is for inspection type \(inspectionType), not \(target.inspectionType)")
            }
            cameras = known.filter { $0.status.inspectionType == target.inspectionType }.map(\.cameraID)
            guard !cameras.isEmpty else {
                throw ModelRegistryError.invalid("no camera has reported inspection type \(target.inspectionType) yet")
            }
        } else if !target.group.isEmpty {
            cameras = try await models.group(target.group)
        } else {
            cameras = target.cameras
        }
        cameras = Array(Set(cameras)).sorted()
        for camera in cameras {
            guard let status = known.first(where: { $0.cameraID == camera }) else {
                throw ModelRegistryError.invalid(
                    "camera \(camera) has never connected to a manager of this fleet (check the id; `loupe camera list` shows the known "
                        + "ones)"
                )
            }
            // A camera without a recipe yet (version 0) takes a model of any type.
            let hasRecipe = !["", "0"].contains(status.status.recipeVersion)
            if let inspectionType, hasRecipe, status.status.inspectionType != inspectionType {
                throw ModelRegistryError.invalid(
                    "camera \(camera) inspects \(status.status.inspectionType), but the version is for \(inspectionType)")
            }
        }
        return cameras
    }

    func push(_ push: Loupe_V1_ModelPush, by operatorName: String) async throws -> Loupe_V1_ModelPushReply {
        let registry = models
        let version = try await registry.version(push.modelVersion)
        let target = try await resolve(push.target, inspectionType: version.inspectionType)
        var reply = Loupe_V1_ModelPushReply()
        if push.canaryCameras.isEmpty {
            try await registry.assign(version.version, to: target)
            reply.cameras = target
            logger.notice(
                "model pushed",
                metadata: ["version": "\(version.version)", "cameras": "\(target.joined(separator: ","))", "by": "\(operatorName)"])
            return reply
        }
        let canaries = Array(Set(push.canaryCameras)).sorted()
        if let outside = canaries.first(where: { !target.contains($0) }) {
            throw ModelRegistryError.invalid("canary \(outside) is not one of the target cameras")
        }
        // The canaries' own defect rate over the last hour: the baseline if the rest of the target judges nothing.
        let statuses = try await fleet().filter { canaries.contains($0.cameraID) }
        let pass = statuses.reduce(0) { $0 + $1.status.passCountLastHour }, fail = statuses.reduce(0) { $0 + $1.status.failCountLastHour }
        let prior = pass + fail > 0 ? Double(fail) / Double(pass + fail) : nil
        let rollout = try await registry.startRollout(
            version.version, canaries: canaries, remaining: target.filter { !canaries.contains($0) },
            policy: CanaryPolicyRecord(push.policy), priorDefectRate: prior)
        logger.notice(
            "canary rollout started",
            metadata: [
                "rollout": "\(rollout.id)", "version": "\(version.version)", "canaries": "\(canaries.joined(separator: ","))",
                "by": "\(operatorName)",
            ])
        reply.cameras = canaries
        reply.rollout = rollout.wire
        return reply
    }

    func rollback(_ rollback: Loupe_V1_ModelRollback, by operatorName: String) async throws -> Loupe_V1_ModelPushReply {
        let registry = models
        var toType: String?
        if !rollback.toVersion.isEmpty { toType = try await registry.version(rollback.toVersion).inspectionType }
        let cameras = try await resolve(rollback.target, inspectionType: toType)
        var moves: [(String, String)] = []
        for camera in cameras {
            if !rollback.toVersion.isEmpty {
                moves.append((camera, rollback.toVersion))
            } else if let previous = try await registry.camera(camera)?.previousVersion {
                moves.append((camera, previous))
            } else {
                throw ModelRegistryError.invalid(
                    "camera \(camera) has no earlier version recorded; name one with --to VERSION (`loupe model list` shows them)")
            }
        }
        for (version, group) in Dictionary(grouping: moves, by: \.1) {
            try await registry.assign(version, to: group.map(\.0), remember: false)
        }
        logger.notice(
            "model rollback", metadata: ["cameras": "\(moves.map { "\($0.0)->\($0.1)" }.joined(separator: ","))", "by": "\(operatorName)"])
        var reply = Loupe_V1_ModelPushReply()
        reply.cameras = moves.map(\.0)
        return reply
    }
}
