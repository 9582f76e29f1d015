import Foundation
import LoupeManager
import LoupePKI
public import LoupeProto
import LoupeTesting
import LoupeWire

/// `loupe bench training-memory`: a large training set (ROIs made here, stored
/// in a manager's SQLite store), trained twice by real processes: once by the
/// manager itself, once by a `loupe worker` that reads the set from the manager
/// over the wire. Measured from /proc: each process's peak resident memory
/// (VmHWM), beside what the set would take decoded in memory. The trainer
/// holds one batch of pixels at a time (the set is spooled to disk as it
/// arrives), so the peaks stay far under the decoded size.
public struct TrainingMemoryBenchmark: Sendable {
    public struct Options: Sendable {
        public var rois = 50_000
        public var roiSide = 128
        /// The job's time budget (the set is read before it starts, the validation runs after it).
        public var trainSeconds = 60.0
        public var threads = ProcessInfo.processInfo.activeProcessorCount
        /// The `loupe` executable that runs the manager and the worker.
        public var executable = ""
        /// The resident memory neither process may reach, in MB.
        public var limitMegabytes = 1024
        public init() {}
    }

    /// One job, trained by the manager or by a worker.
    public struct Run: Sendable {
        public var trainer: String
        public var managerPeakKilobytes: Int
        public var workerPeakKilobytes: Int?
        public var jobSeconds: Double
        public var state: Loupe_V1_TrainingProgress.State
        public var message: String
        public var pass: Int
        public var validationMIoU: Float
    }

    public struct Result: Sendable {
        public var rois: Int
        public var roiSide: Int
        public var makeSeconds: Double
        /// PNG bytes stored (images and masks).
        public var storedBytes: Int
        public var runs: [Run]
        /// What the set takes decoded (an 8-bit image and an 8-bit mask per ROI).
        public var decodedBytes: Int { rois * roiSide * roiSide * 2 }
        public func passed(limitMegabytes: Int) -> Bool {
            runs.allSatisfy { run in
                run.state == .succeeded && run.managerPeakKilobytes < limitMegabytes * 1024
                    && (run.workerPeakKilobytes ?? 0) < limitMegabytes * 1024
            }
        }
    }

    public let options: Options
    private let progress: @Sendable (String) -> Void

    public init(options: Options, progress: @escaping @Sendable (String) -> Void) {
        self.options = options
        self.progress = progress
    }

    public func run() async throws -> Result {
        let folder = NSTemporaryDirectory() + "loupe-bench-training-memory-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let pki = try LocalFleetPKI(folder: folder, organization: "Bench")
        let (managerTLS, workerTLS, operatorTLS) = (
            try pki.manager(), try pki.member(.worker, "bench-worker"), try pki.member(.operator, "bench-operator")
        )
        let dataDir = folder + "/manager"
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)

        let makeStart = ContinuousClock.now
        let storedBytes = try await makeROIs(in: dataDir + "/training-data.sqlite")
        let makeSeconds = (ContinuousClock.now - makeStart).seconds

        var runs: [Run] = []
        for trainer in ["the manager", "a worker"] {
            let byWorker = trainer == "a worker"
            let manager = try await ServiceProcess.manager(
                executable: options.executable, folder: folder, name: "manager",
                config: [
                    "managerId": "memory-bench", "listen": "127.0.0.1:0", "dataDir": dataDir,
                    "tls": ["ca": managerTLS.ca, "cert": managerTLS.cert, "key": managerTLS.key],
                    "trainingConcurrency": byWorker ? 0 : 1, "trainingThreads": options.threads,
                ])
            var worker: ServiceProcess?
            if byWorker {
                worker = try ServiceProcess.worker(
                    executable: options.executable, folder: folder, name: "worker",
                    config: [
                        "managers": ["127.0.0.1:\(manager.port)"], "threads": options.threads,
                        "scratchDirectory": folder + "/worker-scratch",
                        "tls": ["ca": workerTLS.ca, "cert": workerTLS.cert, "key": workerTLS.key],
                    ])
            }
            do {
                runs.append(try await train(by: trainer, manager: manager, worker: worker, operatorTLS: operatorTLS))
            } catch {
                await worker?.stop()
                await manager.stop()
                throw error
            }
            await worker?.stop()
            await manager.stop()
        }
        return Result(rois: options.rois, roiSide: options.roiSide, makeSeconds: makeSeconds, storedBytes: storedBytes, runs: runs)
    }

    /// Stores `rois` labelled ROIs (noise with a labelled square, each different) as cameras' uploads would be stored.
    private func makeROIs(in path: String) async throws -> Int {
        let store = try TrainingDataStore(path: path)
        let (total, side) = (options.rois, options.roiSide)
        let lanes = max(2, ProcessInfo.processInfo.activeProcessorCount * 2)
        let made = Locked((count: 0, bytes: 0))
        let reporter = progress
        try await withThrowingTaskGroup(of: Void.self) { group in
            for lane in 0..<lanes {
                group.addTask {
                    for index in stride(from: lane, to: total, by: lanes) {
                        let upload = try FleetBenchmark.upload(side: side, seed: 0xB16_5E7 + UInt64(index))
                        _ = try await store.store(upload, from: "bench-cam-\(index % 10)")
                        let count = made.withLock { made in
                            made.count += 1
                            made.bytes += upload.imagePng.count + upload.maskPng.count
                            return made.count
                        }
                        if count % 1000 == 0 { reporter("making the training set: \(count) of \(total) ROIs stored") }
                    }
                }
            }
            try await group.waitForAll()
        }
        return made.withLock { $0.bytes }
    }

    /// Starts a job through an operator's connection and follows it to its end, sampling both processes' memory.
    private func train(by trainer: String, manager: ServiceProcess, worker: ServiceProcess?, operatorTLS: TLSFiles) async throws -> Run {
        var client = WireClientConfiguration(host: "localhost", port: manager.port, tls: operatorTLS, capabilities: [])
        client.connection.requestTimeout = .seconds(120)
        let budget = options.trainSeconds
        let reporter = progress
        let started = ContinuousClock.now
        let final = try await WireClient.withConnection(client, handler: WireClient.refuseAll) {
            connection, _ -> Loupe_V1_TrainingProgress in
            var start = Loupe_V1_TrainingStart()
            start.inspectionType = "bench"
            start.timeBudgetSeconds = UInt32(budget.rounded(.up))
            start.seed = 1
            let reply = try await connection.request(.trainingStart(start))
            guard case .trainingProgress(let queued) = reply.body else {
                throw WireError.unexpectedReply(expected: "training_progress", received: reply.bodyName)
            }
            var query = Loupe_V1_TrainingStatusQuery()
            query.jobID = queued.jobID
            while true {
                try await Task.sleep(for: .seconds(1))
                let status = try await connection.request(.trainingStatusQuery(query))
                guard case .trainingStatusReply(let jobs) = status.body, let job = jobs.jobs.first else {
                    throw WireError.unexpectedReply(expected: "training_status_reply", received: status.bodyName)
                }
                let p = job.progress
                let memory =
                    "manager \(manager.memory.kilobytes / 1024) MB" + (worker.map { ", worker \($0.memory.kilobytes / 1024) MB" } ?? "")
                let elapsed = Int((ContinuousClock.now - started).seconds)
                reporter(
                    "\(trainer) trains \(queued.jobID): "
                        + "\(p.state == .queued ? "queued" : p.pass == 0 ? "reading the set" : "pass \(p.pass)"), \(elapsed) s; resident "
                        + "\(memory)"
                )
                if [.succeeded, .failed, .cancelled].contains(p.state) { return p }
                guard worker?.process.isRunning ?? true, manager.process.isRunning else {
                    throw WireError.refused(
                        code: .internal, message: "the \(worker?.process.isRunning == false ? "worker" : "manager") process stopped mid-job"
                    )
                }
            }
        }
        return Run(
            trainer: trainer, managerPeakKilobytes: manager.memory.peakKilobytes, workerPeakKilobytes: worker?.memory.peakKilobytes,
            jobSeconds: (ContinuousClock.now - started).seconds, state: final.state,
            message: final.message.isEmpty ? final.modelVersion : final.message,
            pass: Int(final.pass), validationMIoU: final.validationMiou)
    }
}
