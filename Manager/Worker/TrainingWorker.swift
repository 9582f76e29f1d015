import Crypto
import Foundation
public import Logging
import LoupeProto
import LoupeSegmentation
import LoupeStorage
import LoupeWire
public import ServiceLifecycle
import Synchronization

/// `loupe worker`: trains jobs from the plant's training queue on another machine. It connects to a manager
/// with a worker certificate, claims the oldest queued job, reads the job's training set a page at a time,
/// trains it with the manager's own engine (`TrainingQueue.startTraining`), reports progress (each report renews its
/// lease), and sends the unsigned model back; the manager signs and publishes it. A job survives the loss of
/// the link: the worker trains on and reports through the next manager it reaches. On SIGTERM it gives its job
/// back to the queue; killed, its lease runs out and another worker or manager takes the job up.
public final class TrainingWorker: Service, Sendable {
    let config: WorkerConfig
    let logger: Logger

    /// The job being trained, across connections.
    private final class Current: Sendable {
        let assignment: Loupe_V1_WorkAssignment
        let control = TrainingControl()
        /// Updates not yet reported.
        let pending = Mutex<[Loupe_V1_TrainingProgress]>([])
        /// Set once the training thread is done.
        let outcome = Mutex<Result<Data, any Error>?>(nil)
        /// The job is no longer this worker's: its lease ran out and another took it.
        let lost = Atomic<Bool>(false)
        /// Its training thread has started (its set is read).
        let started = Atomic<Bool>(false)

        init(_ assignment: Loupe_V1_WorkAssignment) { self.assignment = assignment }
    }
    private let current = Mutex<Current?>(nil)
    private let stopping = Atomic<Bool>(false)

    public init(config: WorkerConfig, logger: Logger) {
        self.config = config
        self.logger = logger
    }

    private var threads: Int { config.threads ?? ProcessInfo.processInfo.activeProcessorCount }

    public func run() async throws {
        logger.info("worker starting", metadata: ["managers": "\(config.managers.joined(separator: ","))", "threads": "\(threads)"])
        let loop = Task { await self.loop() }
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await loop.value
            } onGracefulShutdown: {
                self.logger.info("worker stopping; a job it holds goes back to the queue")
                self.stopping.store(true, ordering: .relaxed)
                // Training stops at its next step and the job is given back; a wait for a job just ends.
                if let job = self.current.withLock({ $0 }), job.started.load(ordering: .relaxed) {
                    job.control.cancel()
                } else {
                    loop.cancel()
                }
            }
        } onCancel: {
            loop.cancel()
        }
        logger.info("worker stopped")
    }

    private func loop() async {
        var index = 0
        var failedInARow = 0
        while !stopping.load(ordering: .relaxed), !Task.isCancelled {
            let address = config.managers[index % config.managers.count]
            do {
                try await connect(address)
                failedInARow = 0
            } catch {
                if stopping.load(ordering: .relaxed) || Task.isCancelled { break }
                logger.warning("manager link failed", metadata: ["manager": "\(address)", "error": "\(error)"])
                failedInARow += 1
                index += 1
                // The next manager at once; a pause only after every one failed.
                if failedInARow % config.managers.count == 0 {
                    try? await Task.sleep(for: .seconds(fraction: config.reconnectSeconds ?? 2))
                }
            }
        }
        await giveBackAtExit()
    }

    /// How the worker reaches a manager at `address`.
    private func client(_ address: String) throws -> WireClientConfiguration {
        let (host, port) = try parseAddress(address)
        var client = WireClientConfiguration(
            host: host, port: port, tls: config.tls,
            connection: ConnectionSettings(heartbeatSeconds: config.heartbeatSeconds, idleTimeoutSeconds: config.idleTimeoutSeconds),
            capabilities: ["training-worker"])
        client.connection.requestTimeout = .seconds(120)
        return client
    }

    private func connect(_ address: String) async throws {
        try await WireClient.withConnection(try client(address)) { connection, welcome in
            self.logger.info("connected to manager", metadata: ["manager": "\(welcome.managerID)", "address": "\(address)"])
            try await self.serve(connection, maxFrameBytes: Int(welcome.maxFrameBytes))
        }
    }

    /// Claims and trains jobs over one connection until it drops or the worker stops.
    private func serve(_ connection: WireConnection, maxFrameBytes: Int) async throws {
        while !stopping.load(ordering: .relaxed) {
            let job: Current
            if let held = current.withLock({ $0 }) {
                job = held
            } else {
                var claim = Loupe_V1_WorkClaim()
                claim.waitMs = UInt32((config.claimWaitSeconds ?? 20) * 1000)
                let reply = try await connection.request(
                    .workClaim(claim), timeout: .seconds(fraction: (config.claimWaitSeconds ?? 20) + 30))
                guard case .workAssignment(let assignment) = reply.body else {
                    throw WireError.unexpectedReply(expected: "work_assignment", received: reply.bodyName)
                }
                guard !assignment.jobID.isEmpty else { continue }
                logger.info(
                    "claimed a training job",
                    metadata: [
                        "job": "\(assignment.jobID)", "type": "\(assignment.request.inspectionType)", "rois": "\(assignment.rois)",
                        "attempt": "\(assignment.attempt)",
                    ])
                job = Current(assignment)
                current.withLock { $0 = job }
            }
            if !job.started.load(ordering: .relaxed) {
                start(job, dataset: try await load(job.assignment, over: connection))
            }
            try await report(job, over: connection)
            try await finish(job, over: connection, maxFrameBytes: maxFrameBytes)
            current.withLock { $0 = nil }
        }
    }

    /// The job's training set, a page at a time, checked and spooled to the scratch directory as it arrives.
    private func load(
        _ assignment: Loupe_V1_WorkAssignment,
        over connection: WireConnection
    ) async throws -> (dataset: SpooledImages, classNames: [String]) {
        var assembler = try DatasetAssembler(classNames: assignment.classNames, scratchDirectory: config.scratchPath)
        var lastRenewal = ContinuousClock.now
        let lease = Duration.milliseconds(Int64(assignment.leaseMs))
        while true {
            var query = Loupe_V1_DatasetPageQuery()
            query.jobID = assignment.jobID
            query.after = assembler.after ?? ""
            query.limit = UInt32(DatasetAssembler.pageSize)
            let reply = try await connection.request(.datasetPageQuery(query))
            guard case .datasetPage(let page) = reply.body else {
                throw WireError.unexpectedReply(expected: "dataset_page", received: reply.bodyName)
            }
            for item in page.items {
                try assembler.add(
                    DatasetPiece(contentSHA256: item.contentSha256, cameraId: item.cameraID, imagePNG: item.imagePng, maskPNG: item.maskPng)
                )
            }
            if ContinuousClock.now - lastRenewal > lease / 4 {
                var renewal = Loupe_V1_WorkProgress()
                renewal.jobID = assignment.jobID
                _ = try await connection.request(.workProgress(renewal))
                lastRenewal = .now
            }
            if page.last || page.items.isEmpty { break }
        }
        logger.info("training set read", metadata: ["job": "\(assignment.jobID)", "rois": "\(assembler.count)"])
        return assembler.finish()
    }

    /// Trains on a thread of its own; the outcome is the model file (unsigned), or why there is none.
    private func start(_ job: Current, dataset: (dataset: SpooledImages, classNames: [String])) {
        let assignment = job.assignment
        var record = TrainingJobRecord(
            id: assignment.jobID, request: assignment.request, requester: assignment.requester, requesterIsCamera: false)
        record.progress.state = .running
        job.started.store(true, ordering: .relaxed)
        do {
            let training = try TrainingQueue.startTraining(
                record, dataset: dataset.dataset, classNames: dataset.classNames, threads: threads,
                trainer: "worker \(ProcessInfo.processInfo.hostName)", control: job.control
            ) { update in
                job.pending.withLock { $0.append(update) }
            }
            Task {
                let outcome = TrainingQueue.modelFile(await training.outcome())
                job.outcome.withLock { $0 = outcome }
            }
        } catch {
            job.outcome.withLock { $0 = .failure(error) }
        }
    }

    /// Reports progress until the training thread is done: every report renews the lease; a cancel asked for on
    /// any manager stops the training; a lost lease stops it for good.
    private func report(_ job: Current, over connection: WireConnection) async throws {
        let lease = Duration.milliseconds(Int64(job.assignment.leaseMs))
        let every = max(.milliseconds(250), min(.seconds(2), lease / 4))
        while true {
            let done = job.outcome.withLock { $0 != nil }
            let updates = job.pending.withLock { pending in
                defer { pending = [] }
                return pending
            }
            var report = Loupe_V1_WorkProgress()
            report.jobID = job.assignment.jobID
            report.updates = updates
            do {
                let reply = try await connection.request(.workProgress(report))
                if case .workLease(let granted) = reply.body, granted.cancelRequested, !job.control.isCancelled {
                    logger.info("training job cancelled at the manager", metadata: ["job": "\(job.assignment.jobID)"])
                    job.control.cancel()
                }
            } catch WireError.remote(let code, let message) where code == .permissionDenied || code == .notFound {
                logger.warning(
                    "training job no longer ours; stopping it", metadata: ["job": "\(job.assignment.jobID)", "why": "\(message)"])
                job.lost.store(true, ordering: .relaxed)
                job.control.cancel()
            } catch {
                // Unreported updates go out through the next connection.
                job.pending.withLock { $0.insert(contentsOf: updates, at: 0) }
                throw error
            }
            if done || job.lost.load(ordering: .relaxed) { break }
            try await Task.sleep(for: every)
        }
        // The thread ends soon after a cancel; wait for it without reporting.
        while job.outcome.withLock({ $0 == nil }) { try await Task.sleep(for: .milliseconds(50)) }
    }

    /// Sends the model (or why there is none) and waits for the job's end.
    private func finish(_ job: Current, over connection: WireConnection, maxFrameBytes: Int) async throws {
        guard !job.lost.load(ordering: .relaxed), let outcome = job.outcome.withLock({ $0 }) else { return }
        let id = job.assignment.jobID
        var piece = Loupe_V1_WorkResult()
        piece.jobID = id
        piece.last = true
        switch outcome {
        case .failure(let error):
            if stopping.load(ordering: .relaxed) {
                piece.giveBack = true
            } else if job.control.isCancelled {
                piece.cancelled = true
            } else {
                piece.error = "\(error)"
            }
            let reply = try await connection.request(.workResult(piece))
            logger.info("training job ended without a model", metadata: ["job": "\(id)", "reply": "\(reply.bodyName)", "why": "\(error)"])
        case .success(let file):
            // Pieces well inside the manager's frame limit.
            let size = max(64 << 10, min(Int(ModelChunks.maximumBytes), maxFrameBytes / 2))
            var offset = 0
            var final: Loupe_V1_TrainingProgress?
            repeat {
                let end = min(file.count, offset + size)
                piece.offset = UInt64(offset)
                piece.data = file.subdata(in: offset..<end)
                piece.last = end == file.count
                piece.sha256 = piece.last ? SHA256.hash(data: file).hexString : ""
                let reply = try await connection.request(.workResult(piece))
                if case .trainingProgress(let progress) = reply.body { final = progress }
                offset = end
            } while offset < file.count
            if let final {
                logger.info(
                    "training job done",
                    metadata: [
                        "job": "\(id)", "state": "\(final.state)", "version": "\(final.modelVersion)", "message": "\(final.message)",
                    ])
            }
        }
    }

    /// A job still held when the worker stops (its link was down at the time) goes back once, through any manager.
    private func giveBackAtExit() async {
        guard let job = current.withLock({ $0 }), !job.lost.load(ordering: .relaxed) else { return }
        job.control.cancel()
        while job.started.load(ordering: .relaxed), job.outcome.withLock({ $0 == nil }) { try? await Task.sleep(for: .milliseconds(50)) }
        for address in config.managers {
            guard var client = try? client(address) else { continue }
            client.connectTimeout = .seconds(5)
            var piece = Loupe_V1_WorkResult()
            piece.jobID = job.assignment.jobID
            piece.last = true
            piece.giveBack = true
            let message = piece
            if (try? await WireClient.withConnection(client) { connection, _ in _ = try await connection.request(.workResult(message)) })
                != nil
            {
                logger.info("training job given back to the queue", metadata: ["job": "\(job.assignment.jobID)"])
                return
            }
        }
    }
}
