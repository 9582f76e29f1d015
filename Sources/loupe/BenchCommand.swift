import ArgumentParser
import Foundation
import LoupeAgent
import LoupeBench
import LoupeManager
import LoupeSegmentation
import LoupeTesting

/// `loupe bench …`: measurements that are checked as benchmarks, not tests.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Run a benchmark and print its figures.",
        subcommands: [
            Wire.self, Fleet.self, Load.self, TrainingMemory.self, Imaging.self, Segmentation.self, Pipeline.self, Trigger.self,
            LoginFlood.self, LoginFloodAttacker.self, WandBench.self, Strokes.self,
        ]
    )

    struct Wire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Loupe's protocol over mutual TLS on loopback against a plain NIOSSL echo (the ceiling).",
            discussion:
                "Prints medians of --rounds rounds and the ratio Loupe / ceiling. Target: 1 MiB payloads at 0.80 of the ceiling or "
                + "better; the exit status is 1 when that is missed."
        )
        @Option(help: "Rounds per figure; the median is reported.") var rounds = 5
        @Option(help: "Seconds per round.") var seconds = 1.0
        @Option(help: "Requests in flight for the pipelined small-message figure.") var window = 32
        @Option(help: "Requests in flight for the 1 MiB figure.") var largeWindow = 8
        @Flag(help: "Print JSON instead of a table.") var json = false

        func run() async throws {
            var options = WireBenchmark.Options()
            options.rounds = rounds
            options.secondsPerRound = seconds
            options.pipelinedWindow = window
            options.largeWindow = largeWindow
            let progress = ProgressBar()
            let rows = try await WireBenchmark(options: options) { progress.update($0) }.run()
            progress.finish()
            let large = rows.last!
            let passed = large.ratio >= 0.8
            if json {
                let objects = rows.map {
                    [
                        "figure": $0.name, "unit": $0.unit, "loupe": $0.loupe, "ceiling": $0.ceiling, "ratio": $0.ratio,
                        "loupe_cpu_share": $0.loupeCPU, "ceiling_cpu_share": $0.ceilingCPU,
                    ] as [String: Any]
                }
                let data = try JSONSerialization.data(
                    withJSONObject: ["rows": objects, "target_met": passed], options: [.prettyPrinted, .sortedKeys])
                print(String(decoding: data, as: UTF8.self))
            } else {
                print(
                    "loupe bench wire: mutual TLS 1.3 on loopback, \(ProcessInfo.processInfo.activeProcessorCount) cores, median of "
                        + "\(rounds) rounds of \(seconds) s"
                )
                print("ceiling: plain NIOSSL echo with the same TLS settings, no framing or protobuf")
                let header = ["figure", "unit", "loupe", "ceiling", "ratio", "cpu loupe", "cpu ceiling"]
                let body = rows.map {
                    [
                        $0.name, $0.unit, String(format: "%.0f", $0.loupe), String(format: "%.0f", $0.ceiling),
                        String(format: "%.2f", $0.ratio),
                        String(format: "%.0f%%", $0.loupeCPU * 100), String(format: "%.0f%%", $0.ceilingCPU * 100),
                    ]
                }
                print(TextTable.render(header: header, rows: body))
                print(
                    "target: \(large.name) at >= 0.80 of the ceiling: \(passed ? "met" : "MISSED") (\(String(format: "%.2f", large.ratio)))"
                )
            }
            if !passed { throw ExitCode(1) }
        }
    }
}

extension BenchCommand {
    struct Imaging: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Per-frame pixel work on 1280x1024 synthetic frames: JPEG decode, alignment, the wand, ROI crops, overlays.",
            discussion:
                "Prints the median of --repetitions runs of each step. Targets: alignment with a +/-15 degree range in 15 ms or less, the "
                + "wand in 150 ms or less; the exit status is 1 when one is missed."
        )
        @Option(help: "Runs per step; the median is reported.") var repetitions = 15
        @Option(
            help: "Write the frames, their masks and the reference image here, for a peer to run on (Tests/Reference/imaging_peers.py).")
        var saveFrames: String?
        @Flag(help: "Print JSON instead of a table.") var json = false

        func run() async throws {
            let progress = ProgressBar()
            let result = try ImagingBenchmark(repetitions: repetitions, saveDirectory: saveFrames) { progress.update($0) }.run()
            progress.finish()
            let rows = result.rows
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(result), as: UTF8.self))
                if !result.targetsMet { throw ExitCode(1) }
                return
            }
            print(
                "loupe bench imaging: 1280x1024 frames from the synthetic camera, \(ProcessInfo.processInfo.activeProcessorCount) cores, "
                    + "median of \(repetitions)"
            )
            print(
                TextTable.render(
                    header: ["step", "median", "target"],
                    rows: rows.map { row in
                        let target =
                            row.targetMilliseconds.map {
                                String(format: "<= %.0f ms: %@", $0, row.medianMilliseconds <= $0 ? "met" : "MISSED")
                            } ?? ""
                        return [row.name, String(format: "%.2f ms", row.medianMilliseconds), target]
                    }))
            print(
                String(
                    format:
                        "wand: mean IoU %.3f over %d clicks, one near the middle of each planted defect (Tests/Reference/imaging_peers.py "
                        + "compares OpenCV)",
                    result.meanIoU, result.clicks.count))
            if !result.targetsMet { throw ExitCode(1) }
        }
    }
}

extension BenchCommand {
    struct Pipeline: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The agent's live pipeline (align, crop two 256x256 ROIs, segment, judge) on 1280x1024 synthetic frames.",
            discussion:
                "Prints frames per second and each stage's median and 99th-percentile latency. Target: 20 fps or more; the exit status is "
                + "1 when it is missed."
        )
        @Option(help: "Seconds to measure, after a short warm-up.") var seconds = 15.0
        @Option(help: "fp32 or bf16 (default: the faster on this CPU, timed at start).") var precision: String?
        @Option(help: "oneDNN threads for the segment stage (default: one less than the cores; the align stage has one).") var threads: Int?
        @Option(help: "The camera's rate: frames handed to the pipeline per second.") var cameraFps = 60.0
        @Option(help: "A trained model file (default: an untrained network of the standard shape; same cost per frame).") var model: String?

        func run() async throws {
            var options = PipelineBenchmark.Options()
            options.seconds = seconds
            if let precision {
                guard let chosen = InferencePrecision(rawValue: precision) else {
                    throw ValidationError("--precision must be fp32 or bf16")
                }
                options.precision = chosen
            }
            if let threads { options.threads = threads }
            options.modelPath = model
            options.cameraFramesPerSecond = cameraFps
            let progress = ProgressBar()
            let result = try await PipelineBenchmark(options: options) { progress.update($0) }.run()
            progress.finish()
            let s = result.statistics
            print(
                "loupe bench pipeline: \(options.width)x\(options.height) synthetic frames, two 256x256 ROIs, camera at "
                    + "\(String(format: "%.0f", options.cameraFramesPerSecond)) fps, \(options.precision.rawValue), \(options.threads) "
                    + "threads, \(ProcessInfo.processInfo.activeProcessorCount) cores"
            )
            print("model: \(result.modelDescription)")
            print(
                TextTable.render(
                    header: ["stage", "p50", "p99"],
                    rows: ["capture", "align", "crop", "segment", "judge", "total", "age"].map { stage in
                        [stage, String(format: "%.2f ms", s.p50[stage] ?? 0), String(format: "%.2f ms", s.p99[stage] ?? 0)]
                    }))
            print(
                String(
                    format: "inspected %d frames in %.1f s: %.1f fps; %d frames handed over, %d dropped while busy; %d not aligned",
                    s.framesInspected, result.seconds, result.framesPerSecond, s.framesCaptured, s.framesDropped, s.notAlignedCount))
            let met = result.framesPerSecond >= 20
            print("target: 20 fps or more: \(met ? "met" : "MISSED") (\(String(format: "%.1f", result.framesPerSecond)) fps)")
            if !met { throw ExitCode(1) }
        }
    }
}

extension BenchCommand {
    struct Trigger: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Triggered inspection through a GenICam camera: software trigger to result at 1280x1024 with two 256x256 ROIs, and the "
                + "highest trigger rate held with no miss.",
            discussion: """
                The camera is a real one (--camera) or Aravis' GigE Vision simulator on loopback streaming a synthetic part \
                (--fake-gige, after `make -C Tests/FakeGigE`). The camera alone (trigger to frame, no inspection) is measured \
                in the same run: the floor under the pipeline's latency.
                """
        )
        @Option(help: "A GenICam camera: serial number, address or id.") var camera: String?
        @Option(help: "The fake GigE camera helper, e.g. Tests/FakeGigE/build/loupe-fake-gige.") var fakeGige: String?
        @Option(help: "Triggers one at a time, for the latency.") var triggers = 60
        @Option(help: "Seconds at each trigger rate.") var secondsPerRate = 4.0
        @Option(help: "fp32 or bf16 (default: the faster on this CPU, timed at start).") var precision: String?
        @Option(help: "A trained model file (default: an untrained network of the standard shape; same cost per frame).") var model: String?

        func run() async throws {
            var options = TriggerBenchmark.Options()
            options.camera = camera
            options.fakeCamera = fakeGige
            options.triggers = triggers
            options.secondsPerRate = secondsPerRate
            options.modelPath = model
            if let precision {
                guard let chosen = InferencePrecision(rawValue: precision) else {
                    throw ValidationError("--precision must be fp32 or bf16")
                }
                options.precision = chosen
            }
            let progress = ProgressBar()
            let result = try await TriggerBenchmark(options: options) { progress.update($0) }.run()
            progress.finish()
            print(
                "loupe bench trigger: \(options.width)x\(options.height), two 256x256 ROIs, \(options.precision.rawValue), "
                    + "\(options.threads) threads, \(ProcessInfo.processInfo.activeProcessorCount) cores"
            )
            print("camera: \(result.device); model: \(result.modelDescription)")
            print(
                TextTable.render(
                    header: ["path", "p50", "p99", "n"],
                    rows: [
                        [
                            "camera alone (trigger to frame)", String(format: "%.1f ms", result.cameraOnly.p50),
                            String(format: "%.1f ms", result.cameraOnly.p99), "\(result.cameraOnly.count)",
                        ],
                        [
                            "trigger to result", String(format: "%.1f ms", result.triggerToResult.p50),
                            String(format: "%.1f ms", result.triggerToResult.p99), "\(result.triggerToResult.count)",
                        ],
                    ]))
            print(
                String(
                    format: "inspection's share over the camera: %.1f ms at p50 (ratio %.2f)",
                    result.triggerToResult.p50 - result.cameraOnly.p50,
                    result.cameraOnly.p50 > 0 ? result.triggerToResult.p50 / result.cameraOnly.p50 : 0))
            print(
                "pipeline stage medians: "
                    + ["capture", "align", "crop", "segment", "judge", "total"].map {
                        "\($0) " + String(format: "%.1f ms", result.stages[$0] ?? 0)
                    }.joined(separator: ", "))
            print(
                TextTable.render(
                    header: ["triggers/s", "fired", "missed"],
                    rows: result.steps.map { [String(format: "%.0f", $0.rate), "\($0.fired)", "\($0.missed)"] }))
            print(String(format: "highest rate held with no miss: %.0f triggers/s", result.highestRateHeld))
        }
    }

    struct Fleet: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A manager on loopback and many simulated agents: ROI ingest (against the plain-TLS ceiling) and model fan-out.",
            discussion: """
                Each simulated agent is a light client in this process with its own agent certificate and connection, \
                speaking the real protocol: ROI uploads four in flight (acknowledged after the manager's durable commit), \
                and for a pushed model chunked fetches, SHA-256 and Ed25519 checks and a ModelInstalled report. \
                Prints each round and the medians; the exit status is 1 if an ROI or an install went missing.
                """
        )
        @Option(help: "Simulated agents.") var agents = 50
        @Option(help: "ROIs each agent uploads per round.") var roisPerAgent = 20
        @Option(help: "Side of each ROI, pixels.") var roiSide = 256
        @Option(help: "Rounds; medians are reported.") var rounds = 3

        func run() async throws {
            var options = FleetBenchmark.Options()
            options.agents = agents
            options.roisPerAgent = roisPerAgent
            options.roiSide = roiSide
            options.rounds = rounds
            let progress = ProgressBar()
            let result = try await FleetBenchmark(options: options) { progress.update($0) }.run()
            progress.finish()
            print(
                "loupe bench fleet: \(agents) simulated agents on loopback, mutual TLS 1.3, \(roisPerAgent) ROIs of \(roiSide)x\(roiSide) "
                    + "per agent per round, 4 in flight per agent, \(ProcessInfo.processInfo.activeProcessorCount) cores"
            )
            print(
                TextTable.render(
                    header: ["round", "ROIs", "seconds", "ROIs/s", "MB/s", "plain TLS MB/s", "ratio", "fan-out s"],
                    rows: result.rounds.enumerated().map { index, r in
                        [
                            "\(index + 1)", "\(r.rois)", String(format: "%.2f", r.seconds), String(format: "%.0f", r.roisPerSecond),
                            String(format: "%.1f", r.megabytesPerSecond),
                            String(format: "%.0f", r.ceilingMegabytesPerSecond),
                            String(format: "%.3f", r.megabytesPerSecond / r.ceilingMegabytesPerSecond),
                            String(format: "%.2f", r.fanOutSeconds),
                        ]
                    }))
            let ingest = median(result.rounds.map(\.roisPerSecond)), megabytes = median(result.rounds.map(\.megabytesPerSecond))
            let ceiling = median(result.rounds.map(\.ceilingMegabytesPerSecond)), fanOut = median(result.rounds.map(\.fanOutSeconds))
            print(
                String(
                    format:
                        "median: ingest %.0f ROIs/s, %.1f MB/s = %.3f of the plain-TLS ceiling (%.0f MB/s); fan-out of a %.2f MB model to "
                        + "%d agents in %.2f s",
                    ingest, megabytes, megabytes / ceiling, ceiling, Double(result.modelBytes) / 1e6, agents, fanOut))
            print("ROIs stored: \(result.storedROIs) of \(result.expectedROIs); installs recorded: \(result.installsRecorded) of \(agents)")
            if result.storedROIs != result.expectedROIs || result.installsRecorded != agents { throw ExitCode(1) }
        }
    }

    struct Load: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A real manager process under load: many simulated agents, each reporting every second and uploading ROIs.",
            discussion: """
                The manager runs as its own `loupe manager` process; the agents are light clients in this process, each with its own \
                agent certificate and mutual-TLS connection, speaking the real protocol. Reports the manager's memory per connection and \
                CPU, ROIs/s and acknowledgement latency; checks that every upload was acknowledged, every acknowledged ROI is stored \
                exactly once, and every agent's latest report reached the manager. The exit status is 1 if any check fails.
                """
        )
        @Option(help: "Simulated agents.") var agents = 500
        @Option(help: "Seconds of load.") var seconds = 30.0
        @Option(help: "Seconds between one agent's ROI uploads.") var uploadInterval = 5.0
        @Option(help: "Side of each ROI, pixels.") var roiSide = 64
        @Option(
            help: """
                Where the manager keeps the fleet and the training data: sqlite, postgres, or both (one run each, side by side). \
                postgres uses --database-url, else a PostgreSQL cluster of the benchmark's own (Debian's postgresql).
                """) var storage = "sqlite"
        @Option(help: "An existing, empty PostgreSQL database (postgres://USER@HOST:PORT/DB; password from LOUPE_DATABASE_PASSWORD).")
        var databaseURL: String?
        @Option(help: "Manager processes sharing the PostgreSQL database, the agents spread over them (the SQLite run has one).")
        var managers = 1

        func validate() throws {
            guard (1...8).contains(managers) else { throw ValidationError("--managers must be 1…8") }
            guard managers == 1 || storage != "sqlite" else {
                throw ValidationError("--managers above 1 needs --storage postgres or both: SQLite serves one manager")
            }
        }

        func run() async throws {
            let kinds: [String] =
                switch storage {
                case "sqlite", "postgres": [storage]
                case "both": ["sqlite", "postgres"]
                default: throw ValidationError("--storage must be sqlite, postgres or both, not \(storage)")
                }
            // Each agent holds a connection (and the manager one per agent): lift the soft descriptor limit.
            var limit = rlimit()
            if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max {
                limit.rlim_cur = limit.rlim_max
                setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
            }
            var server: PostgresServer?
            defer { server?.discard() }
            var results: [(String, LoadBenchmark.Result)] = []
            for kind in kinds {
                var options = LoadBenchmark.Options()
                options.agents = agents
                options.seconds = seconds
                options.uploadInterval = uploadInterval
                options.roiSide = roiSide
                options.executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
                let label = kind == "postgres" ? (managers > 1 ? "PostgreSQL, \(managers) managers" : "PostgreSQL") : "SQLite"
                if kind == "postgres" {
                    options.managers = managers
                    if let databaseURL {
                        options.postgres = PostgresSettings(url: databaseURL)
                    } else {
                        if server == nil {
                            server = try await PostgresServer.start(
                                folder: NSTemporaryDirectory() + "loupe-bench-pg-\(UUID().uuidString.prefix(8))")
                        }
                        options.postgres = try await server?.createDatabase()
                    }
                }
                let progress = ProgressBar()
                let r = try await LoadBenchmark(options: options) { progress.update("\(label): \($0)") }.run()
                progress.finish()
                results.append((label, r))
            }
            let served = managers > 1 ? "\(managers) loupe manager processes (memory and CPU summed)" : "a loupe manager process"
            print(
                "loupe bench load: \(served), \(agents) simulated agents on loopback (mutual TLS 1.3), each a status report every second "
                    + "and an ROI of \(roiSide)x\(roiSide) every \(uploadInterval) s, for \(seconds) s; "
                    + "\(ProcessInfo.processInfo.activeProcessorCount) cores"
            )
            let figures: [(String, (LoadBenchmark.Result) -> String)] = [
                ("agents connected", { String(format: "%d in %.1f s", $0.agents, $0.connectSeconds) }),
                (
                    "manager memory: before / all connected / end",
                    { "\($0.baselineKilobytes / 1024) / \($0.connectedKilobytes / 1024) / \($0.endKilobytes / 1024) MB" }
                ),
                ("manager memory per connection", { String(format: "%.0f kB", $0.kilobytesPerConnection) }),
                ("manager CPU under load", { String(format: "%.0f %% of one core", $0.managerCPUPercent) }),
                ("database server CPU under load", { String(format: "%.0f %% of one core", $0.databaseCPUPercent) }),
                (
                    "status reports sent",
                    { "\($0.statusReportsSent) (\(String(format: "%.0f", Double($0.statusReportsSent) / $0.loadSeconds))/s)" }
                ),
                (
                    "ROIs acknowledged / sent",
                    { "\($0.uploadsAcknowledged) / \($0.uploadsSent) (\(String(format: "%.1f", $0.roisPerSecond)) ROIs/s)" }
                ),
                (
                    "acknowledgement p50 / p99 / slowest",
                    {
                        String(
                            format: "%.1f / %.1f / %.1f ms", $0.ackMillisecondsP50, $0.ackMillisecondsP99, $0.slowestAgentAckMilliseconds)
                    }
                ),
                ("uploads per agent, fewest / most", { "\($0.fewestUploadsPerAgent) / \($0.mostUploadsPerAgent)" }),
                ("ROIs stored by the manager", { "\($0.storedROIs) (lost: \($0.lost))" }),
                ("agents whose latest report the manager holds", { "\($0.agentsCurrent) of \($0.agents) (online: \($0.agentsOnline))" }),
            ]
            print(
                TextTable.render(
                    header: ["figure"] + results.map(\.0), rows: figures.map { name, value in [name] + results.map { value($0.1) } }))
            for (label, r) in results {
                for error in r.uploadErrors.prefix(10) { print("error (\(label)): \(error)") }
            }
            if results.contains(where: { !$0.1.passed }) {
                print("FAILED: an upload was refused or unanswered, an acknowledged ROI is missing, or an agent's report did not arrive")
                throw ExitCode(1)
            }
            print("passed: nothing dropped, nothing lost, no agent starved")
        }
    }
}

extension BenchCommand {
    struct TrainingMemory: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "training-memory",
            abstract:
                "Train on a large set (50,000 ROIs by default) by a manager process and by a worker process; report each one's peak "
                + "memory.",
            discussion: """
                The ROIs are made here and stored in a manager's SQLite store; the same job (a time budget) is then trained by the \
                `loupe manager` process itself and by a `loupe worker` process reading the set from it over mutual TLS. Each \
                process's peak resident memory (VmHWM) is printed beside what the set takes decoded. The exit status is 1 if a job \
                fails or a peak reaches --limit-mb.
                """
        )
        @Option(help: "ROIs in the set.") var rois = 50_000
        @Option(help: "Side of each ROI, pixels.") var roiSide = 128
        @Option(help: "Seconds each job trains (the set is read before, the validation split scored after).") var trainSeconds = 60.0
        @Option(help: "Training threads (default: every core).") var threads: Int?
        @Option(help: "The peak resident memory neither process may reach, MB.") var limitMb = 1024

        func run() async throws {
            var options = TrainingMemoryBenchmark.Options()
            options.rois = rois
            options.roiSide = roiSide
            options.trainSeconds = trainSeconds
            if let threads { options.threads = threads }
            options.limitMegabytes = limitMb
            options.executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
            let progress = ProgressBar()
            let r = try await TrainingMemoryBenchmark(options: options) { progress.update($0) }.run()
            progress.finish()
            let mb = { (kilobytes: Int) in String(format: "%.0f MB", Double(kilobytes) / 1024) }
            print(
                String(
                    format:
                        "loupe bench training-memory: %d ROIs of %dx%d (made and stored in %.0f s): %.0f MB of PNG stored, %.0f MB "
                        + "decoded; %d cores, %d training threads",
                    r.rois, r.roiSide, r.roiSide, r.makeSeconds, Double(r.storedBytes) / 1_048_576, Double(r.decodedBytes) / 1_048_576,
                    ProcessInfo.processInfo.activeProcessorCount, options.threads))
            let figures: [(String, (TrainingMemoryBenchmark.Run) -> String)] = [
                ("manager peak resident", { mb($0.managerPeakKilobytes) }),
                ("worker peak resident", { $0.workerPeakKilobytes.map(mb) ?? "-" }),
                (
                    "largest peak / decoded set",
                    {
                        String(
                            format: "%.2f",
                            Double(max($0.managerPeakKilobytes, $0.workerPeakKilobytes ?? 0)) * 1024 / Double(r.decodedBytes))
                    }
                ),
                ("job: read, \(Int(trainSeconds)) s of training, validation", { String(format: "%.0f s", $0.jobSeconds) }),
                ("job outcome", { "\(TrainingFollower.stateName($0.state)) (\($0.message))" }),
                ("passes begun, validation mIoU", { String(format: "%d, %.3f", $0.pass, $0.validationMIoU) }),
            ]
            print(
                TextTable.render(
                    header: ["figure"] + r.runs.map { "\($0.trainer) trains" },
                    rows: figures.map { name, value in [name] + r.runs.map(value) }))
            guard r.passed(limitMegabytes: limitMb) else {
                print("FAILED: a job did not succeed or a process reached \(limitMb) MB resident")
                throw ExitCode(1)
            }
            print("passed: both jobs succeeded, each process under \(limitMb) MB resident")
        }
    }

    struct LoginFlood: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "login-flood",
            abstract: "The live pipeline's frame rate while the agent's sign-in is flooded (docs/security.md).",
            discussion: """
                The agent's real HTTP stack and live pipeline in one process; an attacker process (this program, every \
                thread at nice 19, standing in for a machine elsewhere on the network) sends wrong passwords from ever new \
                loopback addresses. Alternating rounds: no flood, the flood against the page as shipped (the sign-in \
                guard, the page's threads at nice 10), and the flood against an unbounded page at full priority. Prints median fps per \
                condition and the \
                ratios to the quiet one; the exit status is 1 when the page as shipped keeps less than 0.8 of the quiet rate.
                """
        )
        @Option(help: "Rounds of each condition; medians are reported.") var rounds = 3
        @Option(help: "Seconds of each round.") var seconds = 10.0
        @Option(help: "Flooding clients, each a connection at a time.") var clients = 32
        @Option(help: "Sign-in attempts a second, all clients together; 0 sends as fast as answers come.") var rate = 200.0
        @Flag(help: "Flood from this process instead of an attacker process (its cost then counts against the pipeline).")
        var inProcess = false
        @Flag(help: "Print the report as JSON.") var json = false

        func run() async throws {
            var options = LoginFloodBenchmark.Options()
            options.rounds = rounds
            options.secondsPerRound = seconds
            options.clients = clients
            options.rate = rate
            if !inProcess {
                options.attacker = [
                    try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"), "bench", "login-flood-attacker",
                ]
            }
            let progress = ProgressBar()
            let report = try await LoginFloodBenchmark(options: options) { progress.update($0) }.run()
            progress.finish()
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(report), as: UTF8.self))
            } else {
                print(
                    "loupe bench login-flood: \(options.pipeline.width)x\(options.pipeline.height), two ROIs, "
                        + "\(options.pipeline.precision.rawValue), "
                        + "\(clients) flooding clients offering \(rate > 0 ? "\(Int(rate))/s" : "all they can") "
                        + "\(inProcess ? "from this process" : "from a process at nice 19"), \(rounds) rounds of \(Int(seconds)) s, "
                        + "\(ProcessInfo.processInfo.activeProcessorCount) cores"
                )
                print(
                    TextTable.render(
                        header: ["round", "condition", "fps", "sign-in answers/s"],
                        rows: report.rounds.enumerated().map { index, round in
                            [
                                String(index / LoginFloodBenchmark.Condition.allCases.count + 1), round.condition,
                                String(format: "%.1f", round.framesPerSecond),
                                round.answersPerSecond.sorted { $0.key < $1.key }.map { String(format: "%@: %.0f", $0.key, $0.value) }
                                    .joined(separator: ", "),
                            ]
                        }))
                for condition in LoginFloodBenchmark.Condition.allCases {
                    print(String(format: "median %@: %.1f fps", condition.rawValue, report.medianFPS[condition.rawValue] ?? 0))
                }
                print(
                    String(
                        format: "ratio to no flood: page as shipped %.2f, unbounded at full priority %.2f", report.gatedRatio,
                        report.openRatio))
            }
            let met = report.gatedRatio >= 0.8
            print("target: the page as shipped keeps 0.8 of the quiet frame rate or more: \(met ? "met" : "MISSED")")
            if !met { throw ExitCode(1) }
        }
    }
}

extension BenchCommand {
    /// The attacker of `loupe bench login-flood`, a process of its own.
    struct LoginFloodAttacker: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "login-flood-attacker",
            abstract: "Floods an agent's sign-in until standard input closes, then prints the answers by status as JSON.",
            shouldDisplay: false
        )
        @Option(help: "The agent's HTTP port on 127.0.0.1.") var port: Int
        @Option(help: "Clients, each a connection at a time.") var clients = 32
        @Option(help: "Attempts a second, all clients together; 0 sends as fast as answers come.") var rate = 200.0
        @Option(help: "The nice value of every thread the attacker uses.") var nice: Int32 = 19

        func run() async throws {
            let answers = LoginFloodBenchmark.AnswerCounts()
            let stdinClosed = Thread {
                _ = FileHandle.standardInput.readDataToEndOfFile()
                answers.stop()
            }
            stdinClosed.start()
            let counts = await LoginFloodBenchmark.attack(port: port, clients: clients, rate: rate, nice: nice, answers: answers)
            print(String(decoding: try JSONEncoder().encode(counts), as: UTF8.self))
        }
    }
}

extension BenchCommand {
    struct WandBench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "wand",
            abstract:
                "A scripted operator labels NEU-Seg's test split and the synthetic camera's defects with the learned wand, today's "
                + "rule-based wand and OpenCV's floodFill.",
            discussion: """
                Per image and defect class: click 1 at the most interior pixel of the class's largest region, then up to 9 corrections, \
                each at the most interior pixel of the largest error (a label click on a miss, an unlabel click on a false area). \
                Prints mean IoU after 1, 3 and 5 clicks, NoC@85 (clicks to reach 0.85 IoU, the limit when never), the share never \
                reaching it, \
                click latency, and the click latency at 1280x1024 (target: p99 <= 150 ms; the exit status is 1 when it is missed).
                """
        )
        @Option(help: "NEU-Seg's folder; skipped with a message when absent.") var dataset = "../shared/datasets/neu-seg"
        @Option(help: "Every n-th test image (1: the whole official test split).") var every = 1
        @Option(help: "Clicks per target.") var clicks = 10
        @Option(help: "Synthetic frames (640x512).") var syntheticFrames = 20
        @Option(
            help:
                ArgumentHelp(
                    "A Python with opencv-python-headless and numpy, to run OpenCV's floodFill (Tests/Reference/wand_peers.py) on the same "
                        + "targets.")
        )
        var opencvPython: String?
        @Option(help: "The peer script.") var peerScript = "Tests/Reference/wand_peers.py"
        @Flag(help: "Print JSON instead of a table.") var json = false

        func run() async throws {
            var options = WandBenchmark.Options()
            options.neuSeg = dataset
            options.every = every
            options.clicks = clicks
            options.syntheticFrames = syntheticFrames
            let targets = opencvPython.map { _ in
                FileManager.default.temporaryDirectory.appendingPathComponent("loupe-wand-\(getpid())").path
            }
            options.saveTargets = targets
            defer { if let targets { try? FileManager.default.removeItem(atPath: targets) } }
            let progress = ProgressBar()
            var result = try WandBenchmark(options: options) { progress.update($0) }.run()
            progress.finish()
            if let opencvPython, let targets {
                result.rows += try WandBenchmark.peerRows(python: opencvPython, script: peerScript, directory: targets, options: options)
            }
            let met = (result.latency?.clickP99Milliseconds ?? 0) <= 150
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(result), as: UTF8.self))
                if !met { throw ExitCode(1) }
                return
            }
            print(
                "loupe bench wand: scripted operator, \(clicks) clicks per target, tolerance \(options.tolerance), "
                    + "\(ProcessInfo.processInfo.activeProcessorCount) cores"
            )
            if let skipped = result.neuSegSkipped { print("skipped: \(skipped)") }
            if opencvPython == nil { print("OpenCV floodFill: not run (give --opencv-python)") }
            func figure(_ value: Double) -> String { String(format: "%.3f", value) }
            print(
                TextTable.render(
                    header: [
                        "method", "data", "targets", "IoU@1", "IoU@3", "IoU@5", "NoC@85", "never 0.85", "0-click", "click p50", "click p99",
                    ],
                    rows: result.rows.map { row in
                        [
                            row.method, row.data, "\(row.targets)", figure(row.iouAfter.first ?? 0),
                            figure(row.iouAfter.dropFirst(2).first ?? 0),
                            figure(row.iouAfter.dropFirst(4).first ?? 0), String(format: "%.2f", row.nocAt85),
                            String(format: "%.0f%%", row.neverAt85 * 100),
                            row.zeroClickIoU.map(figure) ?? "-", String(format: "%.1f ms", row.clickP50Milliseconds),
                            String(format: "%.1f ms", row.clickP99Milliseconds),
                        ]
                    }))
            if let latency = result.latency {
                print(
                    String(
                        format:
                            "learned wand at %dx%d: features (\"preparing\") p50 %.0f ms, max %.0f ms; click p50 %.0f ms, p99 %.0f ms "
                            + "over %d clicks",
                        latency.width, latency.height, latency.featuresP50Milliseconds, latency.featuresMaxMilliseconds,
                        latency.clickP50Milliseconds, latency.clickP99Milliseconds, latency.clicks))
                print("target: click p99 <= 150 ms at 1280x1024: \(met ? "met" : "MISSED")")
            }
            if !met { throw ExitCode(1) }
        }
    }
}

extension BenchCommand {
    struct Strokes: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "strokes",
            abstract:
                "Strokes on the Label & Train API of a real agent process: each one's round trip, and the agent's heartbeat meanwhile.",
            discussion: """
                Starts a manager in this process and a `loupe agent` process connected to it over mutual TLS, imports a WxH \
                capture with one ROI over all of it, and paints as the page does: one POST per stroke, whose answer carries \
                the edited mask and its labelling check. Prints the stroke round trip (one at a time) beside the peer, the \
                same client's GET /api/v1/health in the same run; then the longest silence the manager heard from the agent, \
                quiet and while --operators operators send strokes back to back on the same ROI. The exit status is 1 if \
                that silence reaches three heartbeat intervals (a heartbeat missed twice).
                """
        )
        @Option(help: "Capture size, WxH.") var size = "1600x1200"
        @Option(help: "Strokes one at a time, and per operator in the burst.") var strokes = 40
        @Option(help: "Points per stroke.") var points = 61
        @Option(help: "Operators painting at once in the burst.") var operators = 4
        @Option(help: "Heartbeat interval of the agent and the manager, seconds.") var heartbeatSeconds = 0.5

        func run() async throws {
            var options = StrokeBenchmark.Options()
            let parts = size.split(separator: "x").compactMap { Int($0) }
            guard parts.count == 2, parts.allSatisfy({ (64...8192).contains($0) }) else {
                throw ValidationError("--size is WxH, each 64…8192, not \(size)")
            }
            (options.width, options.height) = (parts[0], parts[1])
            options.strokes = strokes
            options.points = points
            options.operators = operators
            options.heartbeatSeconds = heartbeatSeconds
            options.executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
            let progress = ProgressBar()
            let r = try await StrokeBenchmark(options: options) { progress.update($0) }.run()
            progress.finish()
            print(
                "loupe bench strokes: a \(options.width)x\(options.height) capture, one ROI over all of it, strokes of \(points) points "
                    + "(\(r.bytesPerStroke) bytes; the ROI's whole mask as PNG: \(r.maskPNGBytes) bytes), "
                    + "\(ProcessInfo.processInfo.activeProcessorCount) cores")
            let ms = { (values: [Double]) in String(format: "%.1f / %.1f ms", median(values), percentile(values, 0.99)) }
            print(
                TextTable.render(
                    header: ["figure", "value"],
                    rows: [
                        ["stroke round trip, one at a time, median / p99", ms(r.strokeMilliseconds)],
                        ["peer: GET /api/v1/health, median / p99", ms(r.healthMilliseconds)],
                        [
                            "ratio stroke / peer (medians)",
                            String(format: "%.1f", median(r.strokeMilliseconds) / median(r.healthMilliseconds)),
                        ],
                        [
                            "burst: \(r.burstStrokeMilliseconds.count) strokes from \(operators) operators, round trip median / p99",
                            ms(r.burstStrokeMilliseconds),
                        ],
                        [
                            "burst: strokes stored per second",
                            String(format: "%.1f", Double(r.burstStrokeMilliseconds.count) / r.burstSeconds),
                        ],
                        ["heartbeat interval", String(format: "%.2f s", r.heartbeatSeconds)],
                        ["longest silence from the agent, quiet", String(format: "%.3f s", r.quietLongestSilence)],
                        ["longest silence from the agent, during the burst", String(format: "%.3f s", r.burstLongestSilence)],
                        ["labelled pixels after the burst", "\(r.labelledPixels)"],
                    ]))
            guard r.burstLongestSilence < 3 * r.heartbeatSeconds else {
                print(String(format: "FAILED: the manager heard nothing from the agent for %.2f s during the burst", r.burstLongestSilence))
                throw ExitCode(1)
            }
            print(
                String(
                    format: "passed: the agent's heartbeat held (longest silence %.2f s) while strokes were stored", r.burstLongestSilence))
        }
    }
}
