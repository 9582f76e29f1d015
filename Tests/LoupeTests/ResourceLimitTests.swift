import Crypto
import Foundation
import LoupeImaging
import LoupePKI
import LoupeProto
import LoupeWire
import NIOCore
import Testing
import LoupeTesting

/// What one peer may take from the manager: connections, inspection types,
/// training, image sizes; each refused by name past its bound, over mutual
/// TLS on loopback.
@Suite struct ResourceLimitTests {
    /// Opens a connection as `files` and keeps it until `hold` ends; nil, or the refusal.
    static func connect(_ config: WireClientConfiguration) async -> WireError? {
        do {
            _ = try await WireClient.withConnection(config) { _, _ in }
            return nil
        } catch let error as WireError { return error } catch { return .connectionClosed }
    }

    @Test func connectionsAreBoundedInAllAndPerCertificate() async throws {
        let pki = try TestPKI()
        let server = try await WireServer.bind(
            WireServerConfiguration(host: "127.0.0.1", port: 0, tls: try pki.manager(), maxConnections: 3, maxConnectionsPerPeer: 2))
        let serving = Task { try await server.run(handshake: { _, _ in Loupe_V1_Welcome() }, handler: { _, envelope in envelope.body }) }
        let port = try #require(server.localAddress.port)
        func client(_ name: String) throws -> WireClientConfiguration {
            WireClientConfiguration(host: "localhost", port: port, tls: try pki.member(.agent, name), connectTimeout: .seconds(5))
        }
        // Two held connections as cam-a, the most one certificate may have.
        let (released, release) = AsyncStream<Void>.makeStream()
        let (opened, signal) = AsyncStream<Void>.makeStream()
        let held = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<2 {
                    group.addTask {
                        try await WireClient.withConnection(try client("cam-a")) { _, _ in
                            signal.yield()
                            for await _ in released { break }
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        var iterator = opened.makeAsyncIterator()
        _ = await iterator.next()
        _ = await iterator.next()
        // A third cam-a connection is refused at its Hello, naming the bound; another camera still gets in.
        guard case .remote(let code, let message) = await Self.connect(try client("cam-a")) else {
            Issue.record("a third cam-a connection was admitted")
            return
        }
        #expect(code == .resourceExhausted && message.contains("at most 2 per certificate"), "\(message)")
        // cam-b holds the third and last place in all; a fourth connection, from anyone, is closed before TLS.
        let (releasedB, releaseB) = AsyncStream<Void>.makeStream()
        let (openedB, signalB) = AsyncStream<Void>.makeStream()
        let heldB = Task {
            try await WireClient.withConnection(try client("cam-b")) { _, _ in
                signalB.yield()
                for await _ in releasedB { break }
            }
        }
        var iteratorB = openedB.makeAsyncIterator()
        _ = await iteratorB.next()
        #expect(await Self.connect(try client("cam-c")) != nil)
        #expect(server.refusedAtAccept >= 1)
        // Freed places are given again.
        releaseB.yield()
        releaseB.finish()
        try await heldB.value
        let again = try await eventually(timeout: .seconds(5)) { await Self.connect(try client("cam-c")) == nil }
        #expect(again)
        release.yield()
        release.yield()
        release.finish()
        try await held.value
        await server.shutdown()
        try await serving.value
    }

    /// An upload of an image and mask of this size, hashed as an agent would; another `shade` is another ROI.
    static func upload(type: String, width: Int = 16, height: Int = 16, shade: UInt8 = 90) throws -> Loupe_V1_RoiUpload {
        var upload = Loupe_V1_RoiUpload()
        upload.inspectionType = type
        upload.roiName = "hub"
        upload.imagePng = try PNGCodec.encode(
            try Image8(width: width, height: height, samples: [UInt8](repeating: shade, count: width * height)))
        // A labelled square, so a training job has something to learn and runs for its budget.
        upload.maskPng = try PNGCodec.encode(
            try Image8(width: width, height: height, samples: (0..<(width * height)).map { $0 % width < 4 && $0 / width < 4 ? 1 : 0 }))
        upload.classNames = ["background", "scratch"]
        var hasher = SHA256()
        hasher.update(data: upload.imagePng)
        hasher.update(data: upload.maskPng)
        upload.contentSha256 = Data(hasher.finalize())
        return upload
    }

    @Test func camerasKeepToTheirOwnInspectionTypeQuotaAndBudget() async throws {
        let pki = try TestPKI()
        let manager = try await ManagerHarness.start(pki: pki)
        func refusal(_ body: Envelope.OneOf_Body, as camera: String) async throws -> (Loupe_V1_Error.Code, String)? {
            try await WireClient.withConnection(manager.client(try pki.member(.agent, camera))) { connection, _ in
                do {
                    _ = try await connection.request(body)
                    return nil
                } catch WireError.remote(let code, let message) { return (code, message) }
            }
        }
        // cam-a's first upload pins it to "disc"; a "gear" upload, or "gear" training, is refused by name.
        #expect(try await refusal(.roiUpload(try Self.upload(type: "disc")), as: "cam-a") == nil)
        let gear = try await refusal(.roiUpload(try Self.upload(type: "gear")), as: "cam-a")
        #expect(gear?.0 == .permissionDenied && gear?.1.contains("cam-a sends disc") == true, "\(String(describing: gear))")
        var train = Loupe_V1_TrainingStart()
        train.inspectionType = "gear"
        train.timeBudgetSeconds = 1
        #expect(try await refusal(.trainingStart(train), as: "cam-a")?.0 == .permissionDenied)
        // An ROI is not 100 Mpx: an upload past 4096 on a side is refused before its pixels are allocated.
        let huge = try await refusal(.roiUpload(try Self.upload(type: "disc", width: 5000, height: 8)), as: "cam-a")
        #expect(huge?.0 == .invalidArgument && huge?.1.contains("exceeds the limit of 4096x4096") == true, "\(String(describing: huge))")
        // A week of training is over a camera's budget; two jobs are its quota.
        train.inspectionType = "disc"
        train.timeBudgetSeconds = 7 * 86_400
        let budget = try await refusal(.trainingStart(train), as: "cam-a")
        #expect(budget?.0 == .invalidArgument && budget?.1.contains("at most 3600 s") == true, "\(String(describing: budget))")
        // Jobs long enough to still be queued or running when the third is asked for (cancelled below).
        train.timeBudgetSeconds = 60
        let quick = train
        let jobs = try await WireClient.withConnection(manager.client(try pki.member(.agent, "cam-a"))) { connection, _ -> [String] in
            var ids: [String] = []
            for _ in 0..<2 {
                guard case .trainingProgress(let progress) = try await connection.request(.trainingStart(quick)).body else { return ids }
                ids.append(progress.jobID)
            }
            return ids
        }
        #expect(jobs.count == 2)
        let quota = try await refusal(.trainingStart(train), as: "cam-a")
        #expect(quota?.0 == .resourceExhausted, "\(String(describing: quota))")
        // cam-b may not cancel cam-a's job; cam-a may.
        var cancel = Loupe_V1_TrainingCancel()
        cancel.jobID = try #require(jobs.last)
        let foreign = try await refusal(.trainingCancel(cancel), as: "cam-b")
        #expect(foreign?.0 == .permissionDenied && foreign?.1.contains("only its own jobs") == true, "\(String(describing: foreign))")
        let own = try await refusal(.trainingCancel(cancel), as: "cam-a")
        #expect(own == nil, "\(String(describing: own))")
        cancel.jobID = try #require(jobs.first)
        #expect(try await refusal(.trainingCancel(cancel), as: "cam-a") == nil)
        // Stopped before the test returns, so no training thread outlives the process's tests.
        await manager.stop()
    }

    @Test func aJPEGWithThousandsOfScansIsRefusedBeforeItIsDecoded() throws {
        let image = try Image8(width: 16, height: 16, samples: (0..<256).map { UInt8($0) })
        let baseline = try JPEGCodec.encode(image)
        #expect(try JPEGCodec.decode(baseline).gray8.width == 16)
        // The same header followed by 1000 empty scans.
        var crafted = Data(baseline.dropLast(2))
        for _ in 0..<1000 { crafted += Data([0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00, 0x00]) }
        crafted += Data([0xFF, 0xD9])
        #expect(throws: ImageError.tooManyScans(count: 1001, limit: 64)) { try JPEGCodec.decode(crafted) }
        #expect(throws: ImageError.tooManyScans(count: 1001, limit: 64)) { try ImageFile.decode(crafted) }
    }
}
