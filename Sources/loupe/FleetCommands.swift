import ArgumentParser
import Foundation
import LoupeCapture
import LoupeProto
import LoupeWire

/// `loupe train`: central training jobs on the manager, or a local run on a folder.
struct TrainCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train models: jobs on the manager (start, status, cancel, logs) or here on a folder (local, the default).",
        subcommands: [TrainLocalCommand.self, Start.self, Status.self, Cancel.self, Logs.self],
        defaultSubcommand: TrainLocalCommand.self
    )

    struct Start: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start a training job on the manager on every camera's labelled ROIs of an inspection type.",
            discussion:
                "Follows the job with a progress bar (plain lines when not on a terminal) until it ends, unless --detach. A job that "
                + "succeeds becomes a signed model version; push it with `loupe model push`."
        )
        @Option(help: "Inspection type whose ROIs to train on.") var inspectionType: String
        @Option(help: "Passes over the labelled ROIs (the page's \"Number of Iterations\").") var iterations: UInt32 = 0
        @Option(help: "Wall-clock budget in minutes instead of (or as well as) --iterations.") var minutes: Double?
        @Flag(help: "Flip images horizontally and vertically at random.") var flip = false
        @Option(help: "Random rotation range, ± degrees.") var rotation: Float = 0
        @Option(help: "Random brightness range, ± fraction of full scale.") var brightness: Float = 0
        @Option(help: "Random contrast range, ± fraction.") var contrast: Float = 0
        @Option(help: "Random seed.") var seed: UInt64 = 1
        @Flag(help: "Print the job id and return at once.") var detach = false
        @OptionGroup var connection: ManagerConnectionOptions

        func validate() throws {
            guard iterations > 0 || (minutes ?? 0) > 0 else { throw ValidationError("give --iterations N or --minutes M") }
        }

        func run() async throws {
            var start = Loupe_V1_TrainingStart()
            start.inspectionType = inspectionType
            start.iterations = iterations
            start.timeBudgetSeconds = UInt32(((minutes ?? 0) * 60).rounded())
            start.seed = seed
            if flip || rotation > 0 || brightness > 0 || contrast > 0 {
                start.augmentation.flipHorizontal = flip
                start.augmentation.flipVertical = flip
                start.augmentation.rotationDegrees = rotation
                start.augmentation.brightness = brightness
                start.augmentation.contrast = contrast
            }
            let follower = TrainingFollower(printLines: isatty(STDERR_FILENO) != 1)
            let request = start
            let final = try await connection.withManager(handler: follower.handler) { wire in
                let reply = try await wire.request(.trainingStart(request))
                guard case .trainingProgress(let queued) = reply.body else { throw unexpected(reply.body, expected: "training_progress") }
                print("\(queued.jobID) queued (\(inspectionType))")
                if detach { return queued }
                follower.watch(queued.jobID)
                return try await follower.wait(on: wire)
            }
            guard !detach else { return }
            if !follower.printLines { print(TrainingFollower.line(final)) }
            guard final.state == .succeeded else { throw ExitCode(1) }
            print("push it with: loupe model push \(final.modelVersion) --all-of-type")
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the training queue's jobs (the last 100 finished, and every queued or running one), or one job.")
        @Argument(help: "Job id.") var job: String?
        @Flag(help: "Print JSON.") var json = false
        @OptionGroup var connection: ManagerConnectionOptions

        func run() async throws {
            let jobs = try await TrainCommand.jobs(job, follow: false, connection: connection)
            if json { var reply = Loupe_V1_TrainingStatusReply(); reply.jobs = jobs; print(try jsonText(reply)); return }
            print(
                TextTable.render(
                    header: ["JOB", "TYPE", "BY", "QUEUED", "STATE", "PASS", "LOSS", "VAL mIoU", "ETA", "MODEL / MESSAGE"],
                    rows: jobs.map { job in
                        let p = job.progress
                        return [
                            job.jobID, job.inspectionType, job.requester, job.queuedUnixMs.unixDateText,
                            TrainingFollower.stateName(p.state),
                            p.passesTotal > 0 ? "\(p.pass)/\(p.passesTotal)" : "\(p.pass)", String(format: "%.4f", p.loss),
                            String(format: "%.3f", p.validationMiou),
                            p.state == .running ? formatDuration(Double(p.etaSeconds)) : "-",
                            p.modelVersion.isEmpty ? p.message : p.modelVersion,
                        ]
                    }) + (jobs.isEmpty ? "\n(no training jobs since the manager started)" : ""))
        }
    }

    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Cancel a queued or running job; the models in use stay as they are.")
        @Argument(help: "Job id.") var job: String
        @OptionGroup var connection: ManagerConnectionOptions

        func run() async throws {
            var cancel = Loupe_V1_TrainingCancel()
            cancel.jobID = job
            let reply = try await connection.ask(.trainingCancel(cancel))
            guard case .trainingProgress = reply else { throw unexpected(reply, expected: "training_progress") }
            print("\(job) cancelled")
        }
    }

    struct Logs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a job's progress history; with --follow, keep printing until it ends.")
        @Argument(help: "Job id.") var job: String
        @Flag(help: "Keep printing new progress until the job ends.") var follow = false
        @OptionGroup var connection: ManagerConnectionOptions

        func run() async throws {
            let follower = TrainingFollower(printLines: true)
            follower.watch(job)
            let final = try await connection.withManager(handler: follower.handler) { wire -> Loupe_V1_TrainingProgress? in
                var query = Loupe_V1_TrainingStatusQuery()
                query.jobID = job
                query.follow = follow
                let reply = try await wire.request(.trainingStatusQuery(query))
                guard case .trainingStatusReply(let status) = reply.body, let record = status.jobs.first else {
                    throw unexpected(reply.body, expected: "training_status_reply")
                }
                for update in record.history { print(TrainingFollower.line(update)) }
                let ended = [.succeeded, .failed, .cancelled].contains(record.progress.state)
                guard follow, !ended else { return record.progress }
                return try await follower.wait(on: wire)
            }
            if let final, [.failed, .cancelled].contains(final.state) { throw ExitCode(1) }
        }
    }

    static func jobs(_ job: String?, follow: Bool, connection: ManagerConnectionOptions) async throws -> [Loupe_V1_TrainingJob] {
        var query = Loupe_V1_TrainingStatusQuery()
        query.jobID = job ?? ""
        let reply = try await connection.ask(.trainingStatusQuery(query))
        guard case .trainingStatusReply(let status) = reply else { throw unexpected(reply, expected: "training_status_reply") }
        return status.jobs
    }
}

/// `loupe dataset stats`: what labelled data the manager holds.
struct DatasetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dataset", abstract: "The labelled ROIs the manager holds.", subcommands: [Stats.self])

    struct Stats: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Per inspection type: ROIs, the train/validation split, ROIs and pixels per class, ROIs and unsure Library frames per "
                + "camera."
        )
        @Option(help: "Only this inspection type.") var inspectionType: String?
        @Flag(help: "Print JSON.") var json = false
        @OptionGroup var connection: ManagerConnectionOptions

        func run() async throws {
            var query = Loupe_V1_DatasetStatsQuery()
            query.inspectionType = inspectionType ?? ""
            let reply = try await connection.ask(.datasetStatsQuery(query))
            guard case .datasetStatsReply(let stats) = reply else { throw unexpected(reply, expected: "dataset_stats_reply") }
            if json { print(try jsonText(stats)); return }
            if stats.datasets.isEmpty { print("(no labelled ROIs have been uploaded\(inspectionType.map { " for \($0)" } ?? ""))"); return }
            for d in stats.datasets {
                print(
                    "\(d.inspectionType): \(d.rois) ROIs (\(d.trainingRois) training, \(d.validationRois) validation), dataset "
                        + "\(d.datasetSha256.shortHex)…, newest upload \(d.newestUploadUnixMs.unixDateText)"
                )
                let classes = max(d.classNames.count, d.classRois.count)
                print(
                    TextTable.render(
                        header: ["  CLASS", "NAME", "ROIS", "PIXELS"],
                        rows: (0..<classes).map { index in
                            [
                                "  \(index)", index < d.classNames.count ? d.classNames[index] : "?",
                                index < d.classRois.count ? "\(d.classRois[index])" : "0",
                                index < d.classPixels.count ? "\(d.classPixels[index])" : "0",
                            ]
                        }))
                let cameras = Set(d.cameraRois.keys).union(d.cameraUnsureFrames.keys).sorted()
                print(
                    TextTable.render(
                        header: ["  CAMERA", "ROIS", "UNSURE FRAMES TO REVIEW"],
                        rows: cameras.map { camera in
                            ["  \(camera)", "\(d.cameraRois[camera] ?? 0)", d.cameraUnsureFrames[camera].map { "\($0)" } ?? "-"]
                        }))
            }
        }
    }
}

/// `loupe camera list | show | group`: the cameras the manager knows.
struct CameraCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "camera", abstract: "The cameras the manager knows, and named groups of them.",
        subcommands: [List.self, Show.self, Group.self, Groups.self, Discover.self])

    struct Discover: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The GigE Vision and USB3 Vision cameras this machine can reach (Aravis discovery), to name in an agent's config.",
            discussion: "An agent opens one with camera.source \"genicam\" and camera.device set to its serial number, address or id.")
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let devices = AravisCamera.discover()
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(devices), as: UTF8.self))
                return
            }
            print(
                TextTable.render(
                    header: ["ID", "VENDOR", "MODEL", "SERIAL", "ADDRESS", "TRANSPORT"],
                    rows: devices.map { [$0.id, $0.vendor, $0.model, $0.serial, $0.address, $0.transport] })
                    + (devices.isEmpty
                        ? "\n(no camera answered: check power, cabling, the subnet of this machine's interfaces, and that no other "
                            + "program holds it)"
                        : ""))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every known camera: state, address, software, inspection type, models.")
        @Flag(help: "Print JSON.") var json = false
        @OptionGroup var connection: ManagerConnectionOptions

        func run() async throws {
            let (fleet, models) = try await CameraCommand.fetch(connection)
            if json { print(try jsonText(fleet)); return }
            print(
                TextTable.render(
                    header: ["CAMERA", "STATE", "ADDRESS", "SOFTWARE", "TYPE", "RUNS", "MEANT TO RUN", "FIRST SEEN", "LAST SEEN"],
                    rows: fleet.cameras.map { c in
                        let model = models.cameras.first { $0.cameraID == c.cameraID }
                        return [
                            c.cameraID, c.online ? "online" : "offline", c.address, c.softwareVersion,
                            c.status.inspectionType.isEmpty ? "-" : c.status.inspectionType,
                            c.status.modelVersion.isEmpty ? "-" : c.status.modelVersion,
                            model?.desiredVersion.isEmpty == false ? model!.desiredVersion : "-",
                            c.firstSeenUnixMs.unixDateText, c.online ? "now" : c.lastSeenUnixMs.unixDateText,
                        ]
                    }) + (fleet.cameras.isEmpty ? "\n(no cameras have connected yet)" : ""))
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Everything the manager knows about one camera.")
        @Argument(help: "Camera id.") var camera: String
        @OptionGroup var connection: ManagerConnectionOptions

        func run() async throws {
            let (fleet, models) = try await CameraCommand.fetch(connection)
            guard let c = fleet.cameras.first(where: { $0.cameraID == camera }) else {
                throw FleetCommandError(
                    message: "the manager knows no camera \(camera)",
                    hint:
                        "`loupe camera list` shows the cameras that have connected; a new camera needs its certificate and config "
                        + "(Deploy/RUNBOOK.md)"
                )
            }
            let s = c.status, model = models.cameras.first { $0.cameraID == camera }
            let groups =
                (try? await CameraCommand.groups(connection).groups.filter { $0.value.cameras.contains(camera) }.keys.sorted()) ?? []
            let lines: [(String, String)] = [
                ("camera", c.cameraID), ("state", c.online ? "online" : "offline, last seen \(c.lastSeenUnixMs.unixDateText)"),
                ("address", c.address), ("software", c.softwareVersion), ("first seen", c.firstSeenUnixMs.unixDateText),
                ("inspection type", s.inspectionType), ("recipe", s.recipeVersion),
                ("model running", s.modelVersion.isEmpty ? "-" : s.modelVersion), ("model meant to run", model?.desiredVersion ?? "-"),
                ("previous model", model?.previousVersion ?? "-"),
                ("last install error", model?.lastError.isEmpty == false ? model!.lastError : "-"),
                ("frames/s", String(format: "%.1f", s.framesPerSecond)),
                ("latency p50 / p99", String(format: "%.1f / %.1f ms", s.latencyP50Ms, s.latencyP99Ms)),
                ("pass / fail, last hour", "\(s.passCountLastHour) / \(s.failCountLastHour)"),
                ("pass / fail, since start", "\(s.passCount) / \(s.failCount)"),
                ("labelled ROIs to sync", "\(s.outboxDepth)"),
                ("disk free", ByteCountFormatter.string(fromByteCount: Int64(s.diskFreeBytes), countStyle: .file)),
                ("uptime", formatDuration(Double(s.uptimeSeconds))), ("groups", groups.isEmpty ? "-" : groups.joined(separator: ", ")),
                ("camera", s.cameraError.isEmpty ? "streaming" : s.cameraError),
                (
                    "camera stream",
                    "\(s.cameraIncompleteFrames) incomplete frames, \(s.cameraMissingPackets) packets missing, \(s.cameraResentPackets) "
                        + "resent, \(s.cameraReconnects) reconnections"
                ),
            ]
            let width = lines.map(\.0.count).max() ?? 0
            for (key, value) in lines { print(key.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + value) }
        }
    }

    struct Group: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Define a named group of cameras for pushes and rollbacks (no cameras: delete it).")
        @Argument(help: "Group name.") var name: String
        @Argument(help: "Camera ids.") var cameras: [String] = []
        @OptionGroup var connection: ManagerConnectionOptions

        func run() async throws {
            var set = Loupe_V1_CameraGroupSet()
            set.name = name
            set.cameras = cameras
            let reply = try await connection.ask(.cameraGroupSet(set))
            guard case .cameraGroupList(let list) = reply else { throw unexpected(reply, expected: "camera_group_list") }
            print(cameras.isEmpty ? "group \(name) deleted" : "group \(name): \(list.groups[name]?.cameras.joined(separator: ", ") ?? "")")
        }
    }

    struct Groups: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the named camera groups.")
        @OptionGroup var connection: ManagerConnectionOptions

        func run() async throws {
            let list = try await CameraCommand.groups(connection)
            print(
                TextTable.render(
                    header: ["GROUP", "CAMERAS"],
                    rows: list.groups.keys.sorted().map { [$0, list.groups[$0]!.cameras.joined(separator: ", ")] }))
        }
    }

    static func fetch(_ connection: ManagerConnectionOptions) async throws -> (Loupe_V1_FleetStatusReply, Loupe_V1_ModelListReply) {
        let replies = try await connection.withManager { wire in
            (
                try await wire.request(.fleetStatusQuery(Loupe_V1_FleetStatusQuery())).body,
                try await wire.request(.modelListQuery(Loupe_V1_ModelListQuery())).body
            )
        }
        guard case .fleetStatusReply(let fleet) = replies.0 else { throw unexpected(replies.0, expected: "fleet_status_reply") }
        guard case .modelListReply(let models) = replies.1 else { throw unexpected(replies.1, expected: "model_list_reply") }
        return (fleet, models)
    }

    static func groups(_ connection: ManagerConnectionOptions) async throws -> Loupe_V1_CameraGroupList {
        let reply = try await connection.ask(.cameraGroupList(Loupe_V1_CameraGroupList()))
        guard case .cameraGroupList(let list) = reply else { throw unexpected(reply, expected: "camera_group_list") }
        return list
    }
}
