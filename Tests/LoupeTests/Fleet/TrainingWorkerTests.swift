import Crypto
import Foundation
import Logging
import LoupeManager
import LoupePKI
import LoupeProto
import LoupeSegmentation
import LoupeStorage
import LoupeTesting
import LoupeWire
import Testing

/// Training workers against a real manager on loopback (SQLite storage, the memory queue): who may send the
/// worker's messages, what a worker may read and send back, leases, and a real `TrainingWorker` training a job.
@Suite struct TrainingWorkerTests {
    /// A manager that leaves training to workers, with `rois` labelled ROIs of "disc" uploaded by camera cam-1.
    static func manager(lease: Double = 30, rois: Int = 6) async throws -> ManagerHarness {
        let manager = try await ManagerHarness.start { config in
            config.trainingConcurrency = 0
            config.trainingLeaseSeconds = lease
        }
        try await WireClient.withConnection(manager.client(try manager.pki.member(.agent, "cam-1"))) { connection, _ in
            for index in 0..<rois {
                let reply = try await connection.request(
                    .roiUpload(try ResourceLimitTests.upload(type: "disc", width: 32, height: 32, shade: UInt8(40 + index * 9))))
                guard case .roiAck(let ack) = reply.body, ack.status == .stored else {
                    throw WireError.unexpectedReply(expected: "stored", received: reply.bodyName)
                }
            }
        }
        return manager
    }

    /// The manager's own registry and training data, opened beside it (SQLite, WAL).
    static func registry(_ manager: ManagerHarness) throws -> ModelRegistry {
        try ModelRegistry(directory: manager.config.dataDir, signingKeyPath: manager.config.signingKeyPath)
    }

    static func datasetHash(_ manager: ManagerHarness, _ type: String) async throws -> String {
        try await TrainingDataStore(path: manager.config.dataDir + "/training-data.sqlite").dataset(
            inspectionType: type, scratchDirectory: NSTemporaryDirectory()
        ).dataset.sha256
    }

    /// Queues a job as operator alice; its id.
    static func queue(_ manager: ManagerHarness, seconds: UInt32 = 2) async throws -> String {
        var start = Loupe_V1_TrainingStart()
        start.inspectionType = "disc"
        start.timeBudgetSeconds = seconds
        start.seed = 5
        let request = start
        return try await WireClient.withConnection(manager.client(try manager.pki.member(.operator, "alice"))) { connection, _ in
            let reply = try await connection.request(.trainingStart(request))
            guard case .trainingProgress(let queued) = reply.body else {
                throw WireError.unexpectedReply(expected: "training_progress", received: reply.bodyName)
            }
            return queued.jobID
        }
    }

    static func job(_ manager: ManagerHarness, _ id: String) async throws -> Loupe_V1_TrainingJob {
        try await WireClient.withConnection(manager.client(try manager.pki.member(.operator, "alice"))) { connection, _ in
            var query = Loupe_V1_TrainingStatusQuery()
            query.jobID = id
            let reply = try await connection.request(.trainingStatusQuery(query))
            guard case .trainingStatusReply(let status) = reply.body, let job = status.jobs.first else {
                throw WireError.unexpectedReply(expected: "training_status_reply", received: reply.bodyName)
            }
            return job
        }
    }

    /// The refusal a request gets (nil when it is answered).
    static func refusal(
        _ body: Envelope.OneOf_Body, on connection: WireConnection
    ) async throws -> (code: Loupe_V1_Error.Code, message: String)? {
        do {
            _ = try await connection.request(body)
            return nil
        } catch WireError.remote(let code, let message) { return (code, message) }
    }

    static func claim(_ connection: WireConnection, waitMs: UInt32 = 3000) async throws -> Loupe_V1_WorkAssignment {
        var claim = Loupe_V1_WorkClaim()
        claim.waitMs = waitMs
        let reply = try await connection.request(.workClaim(claim))
        guard case .workAssignment(let assignment) = reply.body else {
            throw WireError.unexpectedReply(expected: "work_assignment", received: reply.bodyName)
        }
        return assignment
    }

    @Test func theWorkersMessagesAreTheWorkersAloneAndAWorkerMaySendNothingElse() async throws {
        let manager = try await Self.manager(rois: 1)
        defer { Task { await manager.stop() } }
        var page = Loupe_V1_DatasetPageQuery()
        page.jobID = "job-1"
        page.limit = 4
        let query = page
        for (role, name) in [(FleetRole.agent, "cam-1"), (.operator, "alice")] {
            try await WireClient.withConnection(manager.client(try manager.pki.member(role, name))) { connection, _ in
                for body: Envelope.OneOf_Body in [
                    .workClaim(Loupe_V1_WorkClaim()), .datasetPageQuery(query), .workProgress(Loupe_V1_WorkProgress()),
                    .workResult(Loupe_V1_WorkResult()),
                ] {
                    let refused = try await Self.refusal(body, on: connection)
                    #expect(
                        refused?.code == .permissionDenied && refused?.message.contains("may not send \(body.name)") == true,
                        "\(role): \(String(describing: refused))")
                }
            }
        }
        try await WireClient.withConnection(manager.client(try manager.pki.member(.worker, "w1"))) { connection, welcome in
            #expect(welcome.peerRole == .worker)
            var start = Loupe_V1_TrainingStart()
            start.inspectionType = "disc"
            for body: Envelope.OneOf_Body in [
                .roiUpload(try ResourceLimitTests.upload(type: "disc")), .trainingStart(start), .trainingCancel(Loupe_V1_TrainingCancel()),
                .fleetStatusQuery(Loupe_V1_FleetStatusQuery()), .modelPush(Loupe_V1_ModelPush()),
                .modelChunkRequest(Loupe_V1_ModelChunkRequest()), .trainingStatusQuery(Loupe_V1_TrainingStatusQuery()),
            ] {
                let refused = try await Self.refusal(body, on: connection)
                #expect(refused?.code == .permissionDenied, "a worker sent \(body.name): \(String(describing: refused))")
            }
            // With nothing queued a claim waits its time and comes back empty.
            let started = ContinuousClock.now
            #expect(try await Self.claim(connection, waitMs: 600).jobID.isEmpty)
            #expect(ContinuousClock.now - started >= .milliseconds(500))
        }
    }

    @Test func aWorkerReadsOnlyTheJobItHoldsAndItsModelIsCheckedBeforeItIsSigned() async throws {
        let manager = try await Self.manager(rois: 6)
        defer { Task { await manager.stop() } }
        let id = try await Self.queue(manager)
        let w2 = try manager.pki.member(.worker, "w2")
        try await WireClient.withConnection(manager.client(try manager.pki.member(.worker, "w1"))) { connection, _ in
            let assignment = try await Self.claim(connection)
            #expect(assignment.jobID == id && assignment.attempt == 1 && assignment.rois == 6 && assignment.requester == "alice")
            #expect(assignment.classNames == ["background", "scratch"] && assignment.request.inspectionType == "disc")
            #expect(try await Self.job(manager, id).progress.message == "on worker w1")

            // Another worker finds nothing to claim, and may not read, report on or end w1's job.
            try await WireClient.withConnection(manager.client(w2)) { other, _ in
                #expect(try await Self.claim(other, waitMs: 300).jobID.isEmpty)
                var page = Loupe_V1_DatasetPageQuery()
                page.jobID = id
                page.limit = 4
                var report = Loupe_V1_WorkProgress()
                report.jobID = id
                var end = Loupe_V1_WorkResult()
                end.jobID = id
                end.last = true
                end.error = "nothing"
                for body: Envelope.OneOf_Body in [.datasetPageQuery(page), .workProgress(report), .workResult(end)] {
                    let refused = try await Self.refusal(body, on: other)
                    #expect(
                        refused?.code == .permissionDenied && refused?.message.contains("not held by worker w2") == true,
                        "\(String(describing: refused))")
                }
            }

            // Pages in content-hash order, bounded by what was asked.
            var query = Loupe_V1_DatasetPageQuery()
            query.jobID = id
            query.limit = 0
            #expect(try await Self.refusal(.datasetPageQuery(query), on: connection)?.code == .invalidArgument)
            query.limit = 4
            guard case .datasetPage(let first) = try await connection.request(.datasetPageQuery(query)).body else {
                throw WireError.unexpectedReply(expected: "dataset_page", received: "?")
            }
            #expect(first.items.count == 4 && !first.last)
            query.after = first.items.last?.contentSha256 ?? ""
            guard case .datasetPage(let second) = try await connection.request(.datasetPageQuery(query)).body else {
                throw WireError.unexpectedReply(expected: "dataset_page", received: "?")
            }
            #expect(second.items.count == 2 && second.last)
            let hashes = (first.items + second.items).map(\.contentSha256)
            #expect(hashes == hashes.sorted() && Set(hashes).count == 6)

            // The model's pieces: consecutive, hashed, and a real model file, or the job fails naming why.
            var piece = Loupe_V1_WorkResult()
            piece.jobID = id
            piece.offset = 5
            piece.data = Data("not a model".utf8)
            let gap = try await Self.refusal(.workResult(piece), on: connection)
            #expect(gap?.code == .invalidArgument && gap?.message.contains("offset 0") == true, "\(String(describing: gap))")
            piece.offset = 0
            piece.last = true
            piece.sha256 = String(repeating: "0", count: 64)
            let mismatch = try await Self.refusal(.workResult(piece), on: connection)
            #expect(mismatch?.code == .invalidArgument && mismatch?.message.contains("SHA-256") == true, "\(String(describing: mismatch))")
            piece.sha256 = SHA256.hash(data: piece.data).hexString
            guard case .trainingProgress(let ended) = try await connection.request(.workResult(piece)).body else {
                throw WireError.unexpectedReply(expected: "training_progress", received: "?")
            }
            #expect(ended.state == .failed && ended.message.contains("the trained model was refused"), "\(ended.message)")
        }
        let record = try await Self.job(manager, id)
        #expect(record.progress.state == .failed)
        // Nothing was signed.
        #expect(try await Self.registry(manager).versions().isEmpty)
    }

    @Test func aWorkerThatStopsReportingLosesItsJobToTheNextClaim() async throws {
        let manager = try await Self.manager(lease: 1, rois: 2)
        defer { Task { await manager.stop() } }
        let id = try await Self.queue(manager)
        let (w1, w2) = (try manager.pki.member(.worker, "w1"), try manager.pki.member(.worker, "w2"))
        try await WireClient.withConnection(manager.client(w1)) { first, _ in
            #expect(try await Self.claim(first).jobID == id)
            try await WireClient.withConnection(manager.client(w2)) { second, _ in
                // w1 says nothing for longer than its lease: w2's claim takes the job over.
                let taken = try await Self.claim(second, waitMs: 5000)
                #expect(taken.jobID == id && taken.attempt == 2)
                var report = Loupe_V1_WorkProgress()
                report.jobID = id
                let late = try await Self.refusal(.workProgress(report), on: first)
                #expect(
                    late?.code == .permissionDenied && late?.message.contains("held by worker w2") == true, "\(String(describing: late))")
                // w2 reports: its lease holds past the first's.
                try await Task.sleep(for: .milliseconds(600))
                guard case .workLease(let lease) = try await second.request(.workProgress(report)).body else {
                    throw WireError.unexpectedReply(expected: "work_lease", received: "?")
                }
                #expect(lease.leaseMs == 1000 && !lease.cancelRequested)
            }
        }
        #expect(try await Self.job(manager, id).progress.message.contains("attempt 2, on worker w2"))
    }

    /// The real worker, in this process, against the manager: it claims, reads the set, trains, and the manager
    /// signs its model; a cancel asked for by an operator stops the next job at the worker.
    @Test func aWorkerTrainsAJobAndTheManagerSignsItsModel() async throws {
        let manager = try await Self.manager(rois: 6)
        defer { Task { await manager.stop() } }
        var config = WorkerConfig(managers: ["localhost:\(manager.port)"], tls: try manager.pki.member(.worker, "w1"), threads: 2)
        config.claimWaitSeconds = 1
        config.reconnectSeconds = 0.5
        var logger = Logger(label: "test.worker")
        logger.logLevel = .warning
        let worker = TrainingWorker(config: config, logger: logger)
        let running = Task { try await worker.run() }
        defer { running.cancel() }
        let id = try await Self.queue(manager, seconds: 2)
        let succeeded = try await eventually(timeout: .seconds(90)) { try await Self.job(manager, id).progress.state == .succeeded }
        let record = try await Self.job(manager, id)
        #expect(succeeded, "\(record.progress)")
        #expect(record.progress.loss > 0 && record.progress.pass > 0, "the end keeps the last figures: \(record.progress)")
        #expect(
            record.history.contains { $0.state == .running && $0.loss > 0 }, "the worker's progress reached the manager: \(record.history)")
        let version = try await Self.registry(manager).version(record.progress.modelVersion)
        #expect(version.description.contains("trained by worker") && version.description.contains("6 ROIs"), "\(version.description)")
        // The worker's dataset hash is the one the manager computes over the same set.
        #expect(version.datasetSHA256 == (try await Self.datasetHash(manager, "disc")))

        // A job cancelled while the worker trains it ends cancelled, and no model is added.
        let long = try await Self.queue(manager, seconds: 60)
        let training = try await eventually(timeout: .seconds(60)) { try await Self.job(manager, long).history.contains { $0.loss > 0 } }
        #expect(training)
        try await WireClient.withConnection(manager.client(try manager.pki.member(.operator, "alice"))) { connection, _ in
            var cancel = Loupe_V1_TrainingCancel()
            cancel.jobID = long
            _ = try await connection.request(.trainingCancel(cancel))
        }
        let cancelled = try await eventually(timeout: .seconds(30)) { try await Self.job(manager, long).progress.state == .cancelled }
        let last = try await Self.job(manager, long).progress
        #expect(cancelled, "\(last)")
        #expect(try await Self.registry(manager).versions().count == 1)
    }
}
