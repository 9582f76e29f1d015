import ArgumentParser
import Crypto
import Foundation
import Logging
import LoupeManager
import LoupeProto
import LoupeSegmentation
import LoupeWire

/// Which cameras a push or rollback is for, as flags.
struct CameraTargetOptions: ParsableArguments {
    @Option(help: "Comma-separated camera ids.") var cameras: String?
    @Option(help: "Every camera whose latest report names this inspection type.") var inspectionType: String?
    @Option(help: "A named camera group (`loupe camera group`).") var group: String?

    func target() throws -> Loupe_V1_CameraTarget {
        var target = Loupe_V1_CameraTarget()
        target.cameras = commaList(cameras)
        target.inspectionType = inspectionType ?? ""
        target.group = group ?? ""
        let chosen = [!target.cameras.isEmpty, !target.inspectionType.isEmpty, !target.group.isEmpty].filter { $0 }.count
        guard chosen == 1 else {
            throw ValidationError("give exactly one of --cameras IDS, --inspection-type TYPE (or --all-of-type) or --group NAME")
        }
        return target
    }
}

func commaList(_ text: String?) -> [String] {
    (text ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
}

/// Registry commands. `publish` runs on the manager's host, against its data
/// directory; the others talk to the manager over mutual TLS as an operator.
extension ModelCommand {
    struct ManagerOptions: ParsableArguments {
        @Option(help: "The manager's JSON config file (its data directory holds the registry).") var managerConfig: String

        /// The registry the manager's config names (its data directory, or its PostgreSQL database).
        func registry() async throws -> any ModelRegistryStoring {
            let config = try ManagerConfig.load(path: managerConfig)
            return try await ManagerStorage.open(config, logger: Logger(label: "loupe.model")).models
        }
    }

    struct Publish: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Sign a model trained elsewhere with the manager's key and add it to the registry as a new version (on the manager's "
                + "host).",
            discussion: "Models trained by the manager's own jobs are published automatically."
        )
        @Argument(help: "Model file (from `loupe train`).") var file: String
        @Option(help: "Inspection type the model is for.") var inspectionType: String
        @OptionGroup var manager: ManagerOptions

        func run() async throws {
            let data = try Data(contentsOf: URL(fileURLWithPath: file))
            let record = try await manager.registry().publish(data, inspectionType: inspectionType)
            print(
                "published \(record.version): \(record.bytes) bytes, sha256 \(record.sha256.prefix(16))…, parent "
                    + "\(record.parentVersion ?? "-")"
            )
        }
    }

    struct Push: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send a model version to cameras: all at once, or to canaries first.",
            discussion: """
                Connected cameras are offered the version within a second; offline ones get it when they reconnect. \
                With --canary the listed cameras get it first and the rest of the target only on promotion: \
                automatically with --auto (after --observe seconds and --min-parts judged parts, if the canaries' \
                defect rate rose by at most --max-defect-rate-increase, did not fall below --min-defect-rate-ratio of the \
                baseline's, the version's validation mIoU is at least --min-validation-miou, and its validation escape and \
                false-reject rates are within --max-validation-escape-rate and --max-validation-false-reject-rate; otherwise \
                the canaries roll back), or by \
                `loupe model rollout ID --promote`.
                """
        )
        @Argument(help: "Model version, e.g. disc-v3.") var version: String
        @OptionGroup var target: CameraTargetOptions
        @Flag(help: "Every camera of the version's own inspection type.") var allOfType = false
        @Option(help: "Comma-separated canary cameras (part of the target).") var canary: String?
        @Flag(help: "Promote or roll back the canary rollout automatically.") var auto = false
        @Option(help: "Seconds the canaries run the version before the decision.") var observe: UInt32 = 300
        @Option(help: "Parts the canaries must judge before the decision.") var minParts: UInt32 = 100
        @Option(help: "Largest allowed rise of the canaries' defect rate (fraction).") var maxDefectRateIncrease: Float = 0.05
        @Option(help: "Smallest allowed validation mIoU of the version.") var minValidationMiou: Float = 0
        @Option(help: "Largest allowed validation escape rate of the version (defective parts judged good, fraction); 0: none.")
        var maxValidationEscapeRate: Float = 0
        @Option(help: "Largest allowed validation false-reject rate of the version (good parts judged bad, fraction); 0: none.")
        var maxValidationFalseRejectRate: Float = 0
        @Option(
            help:
                ArgumentHelp(
                    "Roll back if the canaries' defect rate falls below this fraction of the baseline's (a model that stops finding "
                        + "defects); "
                        + "1 turns it off.")
        )
        var minDefectRateRatio: Float = 0.2
        @Flag(help: "Wait until every camera assigned now reports the version installed.") var wait = false
        @Option(help: "Seconds to wait with --wait.") var timeout: Double = 600
        @OptionGroup var connection: ManagerConnectionOptions

        func run() async throws {
            var push = Loupe_V1_ModelPush()
            push.modelVersion = version
            if allOfType {
                guard target.cameras == nil, target.group == nil, target.inspectionType == nil else {
                    throw ValidationError("--all-of-type takes no other target")
                }
                push.target.inspectionType = try await ModelCommand.versionInfo(version, connection: connection).inspectionType
            } else {
                push.target = try target.target()
            }
            push.canaryCameras = commaList(canary)
            push.policy.automatic = auto
            push.policy.observeSeconds = observe
            push.policy.minParts = minParts
            push.policy.maxDefectRateIncrease = maxDefectRateIncrease
            push.policy.minValidationMiou = minValidationMiou
            push.policy.minDefectRateRatio = minDefectRateRatio
            for (name, bound) in [
                ("--max-validation-escape-rate", maxValidationEscapeRate),
                ("--max-validation-false-reject-rate", maxValidationFalseRejectRate),
            ] {
                guard (0...1).contains(bound) else { throw ValidationError("\(name) must be a fraction in 0…1, not \(bound)") }
            }
            push.policy.maxValidationEscapeRate = maxValidationEscapeRate
            push.policy.maxValidationFalseRejectRate = maxValidationFalseRejectRate
            let reply = try await connection.ask(.modelPush(push))
            guard case .modelPushReply(let pushed) = reply else { throw unexpected(reply, expected: "model_push_reply") }
            if pushed.hasRollout {
                let r = pushed.rollout
                print(
                    "\(r.rolloutID): \(version) to canaries \(r.canaryCameras.joined(separator: ", ")); then "
                        + "\(r.remainingCameras.isEmpty ? "no other cameras" : r.remainingCameras.joined(separator: ", ")) on promotion "
                        + "(\(auto ? "automatic" : "by `loupe model rollout \(r.rolloutID) --promote`"))"
                )
            } else {
                print("\(version) assigned to \(pushed.cameras.joined(separator: ", "))")
            }
            if wait { try await ModelCommand.waitForInstall(version, cameras: pushed.cameras, timeout: timeout, connection: connection) }
        }
    }

    struct Rollback: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send cameras back to an earlier model version.",
            discussion: "Without --to, each camera returns to the version it was meant to run before its current one."
        )
        @OptionGroup var target: CameraTargetOptions
        @Option(help: "The version to return to (any earlier version of their inspection type).") var to: String?
        @Flag(help: "Wait until the cameras report it installed (with --to).") var wait = false
        @Option(help: "Seconds to wait with --wait.") var timeout: Double = 600
        @OptionGroup var connection: ManagerConnectionOptions

        func run() async throws {
            var rollback = Loupe_V1_ModelRollback()
            rollback.target = try target.target()
            rollback.toVersion = to ?? ""
            let reply = try await connection.ask(.modelRollback(rollback))
            guard case .modelPushReply(let done) = reply else { throw unexpected(reply, expected: "model_push_reply") }
            let list = try await ModelCommand.list(connection: connection)
            for camera in done.cameras {
                print("\(camera): now meant to run \(list.cameras.first { $0.cameraID == camera }?.desiredVersion ?? "?")")
            }
            if wait, let to { try await ModelCommand.waitForInstall(to, cameras: done.cameras, timeout: timeout, connection: connection) }
        }
    }

    struct Rollout: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a canary rollout, or promote or roll it back by hand.")
        @Argument(help: "Rollout id, e.g. rollout-3.") var id: String
        @Flag(help: "Push the version to the rest of the target.") var promote = false
        @Flag(help: "Return the canaries to their previous versions.") var rollBack = false
        @OptionGroup var connection: ManagerConnectionOptions

        func validate() throws {
            guard !(promote && rollBack) else { throw ValidationError("give at most one of --promote and --roll-back") }
        }

        func run() async throws {
            if promote || rollBack {
                var decision = Loupe_V1_RolloutDecision()
                decision.rolloutID = id
                decision.promote = promote
                let reply = try await connection.ask(.rolloutDecision(decision))
                guard case .modelPushReply(let done) = reply else { throw unexpected(reply, expected: "model_push_reply") }
                print(ModelCommand.describe(done.rollout))
                return
            }
            let list = try await ModelCommand.list(connection: connection)
            guard let rollout = list.rollouts.first(where: { $0.rolloutID == id }) else {
                throw FleetCommandError(message: "no rollout \(id)", hint: "`loupe model list` shows the recent rollouts")
            }
            print(ModelCommand.describe(rollout))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List model versions, what each camera runs, and recent rollouts.")
        @Option(help: "Only versions of this inspection type.") var inspectionType: String?
        @Flag(help: "Print JSON.") var json = false
        @OptionGroup var connection: ManagerConnectionOptions

        func run() async throws {
            let list = try await ModelCommand.list(inspectionType: inspectionType, connection: connection)
            if json { print(try jsonText(list)); return }
            print(
                TextTable.render(
                    header: [
                        "VERSION", "TYPE", "BYTES", "VAL mIoU", "VAL ESCAPES", "VAL FALSE REJECTS", "PARENT", "CREATED", "INSTALLED ON",
                    ],
                    rows: list.versions.map {
                        let parts = $0.hasParts ? PartFigures($0.parts) : nil
                        return [
                            $0.version, $0.inspectionType, "\($0.sizeBytes)", String(format: "%.3f", $0.validationMiou),
                            PartVerdicts.percent(parts?.escapeRate), PartVerdicts.percent(parts?.falseRejectRate),
                            $0.parentVersion.isEmpty ? "-" : $0.parentVersion,
                            $0.createdUnixMs.unixDateText, $0.installedOn.isEmpty ? "-" : $0.installedOn.joined(separator: ","),
                        ]
                    }))
            print("")
            print(
                TextTable.render(
                    header: ["CAMERA", "DESIRED", "INSTALLED", "PREVIOUS", "LAST ERROR"],
                    rows: list.cameras.map {
                        [
                            $0.cameraID, $0.desiredVersion.isEmpty ? "-" : $0.desiredVersion,
                            $0.installedVersion.isEmpty ? "-" : $0.installedVersion,
                            $0.previousVersion.isEmpty ? "-" : $0.previousVersion, $0.lastError,
                        ]
                    }))
            if !list.rollouts.isEmpty {
                print("")
                print(list.rollouts.map(ModelCommand.describe).joined(separator: "\n"))
            }
        }
    }

    static func list(
        inspectionType: String? = nil, version: String? = nil, connection: ManagerConnectionOptions
    ) async throws -> Loupe_V1_ModelListReply {
        var query = Loupe_V1_ModelListQuery()
        query.inspectionType = inspectionType ?? ""
        query.version = version ?? ""
        let reply = try await connection.ask(.modelListQuery(query))
        guard case .modelListReply(let list) = reply else { throw unexpected(reply, expected: "model_list_reply") }
        return list
    }

    static func versionInfo(_ version: String, connection: ManagerConnectionOptions) async throws -> Loupe_V1_ModelVersionInfo {
        guard let info = try await list(version: version, connection: connection).versions.first else {
            throw FleetCommandError(message: "the manager has no model version \(version)", hint: "`loupe model list` shows them")
        }
        return info
    }

    static func describe(_ r: Loupe_V1_Rollout) -> String {
        let state =
            switch r.state {
            case .canary: "canary";
            case .promoted: "promoted";
            case .rolledBack: "rolled back";
            default: "?"
            }
        var text =
            "\(r.rolloutID) \(r.modelVersion): \(state); canaries \(r.canaryCameras.joined(separator: ",")), then "
            + "\(r.remainingCameras.isEmpty ? "-" : r.remainingCameras.joined(separator: ","))"
        if r.canariesInstalledUnixMs > 0, r.state == .canary {
            text += String(
                format: "; canary defect rate %.3f over %d parts, baseline %.3f over %d", r.canaryDefectRate, r.canaryParts,
                r.baselineDefectRate, r.baselineParts)
        }
        return text + (r.reason.isEmpty ? "" : " — \(r.reason)")
    }

    /// Shows installs as they are reported, until every camera runs the version.
    static func waitForInstall(_ version: String, cameras: [String], timeout: Double, connection: ManagerConnectionOptions) async throws {
        let bar = ProgressBar()
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let list = try await ModelCommand.list(connection: connection)
            let states = cameras.map { camera in list.cameras.first { $0.cameraID == camera } }
            let done = states.filter { $0?.installedVersion == version }.count
            if let refused = states.compactMap({ $0 }).first(where: { $0.lastError.hasPrefix(version + ":") }) {
                bar.finish()
                throw FleetCommandError(
                    message: "\(refused.cameraID) refused \(refused.lastError)",
                    hint: "the camera keeps its current model; check the version's signature and the camera's modelKeys")
            }
            bar.update(
                fraction: Double(done) / Double(max(1, cameras.count)), "\(version) installed on \(done) of \(cameras.count) cameras")
            if done == cameras.count { bar.finish(); print("\(version) installed on \(cameras.joined(separator: ", "))"); return }
            guard Date() < deadline else {
                bar.finish()
                let waiting = zip(cameras, states).filter { $0.1?.installedVersion != version }.map(\.0)
                throw FleetCommandError(
                    message: "after \(Int(timeout)) s \(waiting.joined(separator: ", ")) do not run \(version) yet",
                    hint: "offline cameras get it when they reconnect; `loupe status` shows which are offline")
            }
            try await Task.sleep(for: .milliseconds(500))
        }
    }

    /// A version's file from the manager, fetched in chunks and checked against its SHA-256.
    static func download(_ version: String, connection: ManagerConnectionOptions) async throws -> Data {
        let info = try await versionInfo(version, connection: connection)
        let bar = ProgressBar()
        let data = try await connection.withManager { wire in
            var data = Data()
            while data.count < Int(info.sizeBytes) {
                var request = Loupe_V1_ModelChunkRequest()
                request.modelVersion = version
                request.offset = UInt64(data.count)
                request.length = 1 << 20
                let reply = try await wire.request(.modelChunkRequest(request))
                guard case .modelChunk(let chunk) = reply.body else { throw unexpected(reply.body, expected: "model_chunk") }
                guard !chunk.data.isEmpty else { break }
                data.append(chunk.data)
                bar.update(
                    fraction: Double(data.count) / Double(max(1, info.sizeBytes)),
                    "fetching \(version): \(data.count / 1024) of \(info.sizeBytes / 1024) KiB")
                if chunk.last { break }
            }
            return data
        }
        bar.finish()
        guard Data(SHA256.hash(data: data)) == info.sha256 else {
            throw FleetCommandError(
                message: "the file of \(version) fetched from the manager does not match its SHA-256",
                hint: "the registry's copy may be damaged; check the manager's data directory")
        }
        return data
    }
}
