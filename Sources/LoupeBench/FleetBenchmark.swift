import Crypto
import Foundation
import Logging
import LoupeImaging
import LoupeManager
import LoupePKI
public import LoupeProto
import LoupeSegmentation
import LoupeWire
import NIOCore
import ServiceLifecycle
import Synchronization
import LoupeTesting

/// `loupe bench fleet`: one manager on loopback and many simulated agents
/// (light clients in this process, each with its own agent certificate and
/// connection, speaking the real protocol).
/// - Ingest: every agent uploads labelled ROIs (256x256 PNG image and mask),
///   four in flight as the agent's outbox does; ROIs/s and MB/s until the
///   last acknowledgement (each one after the manager's durable commit),
///   against the plain-TLS ceiling (1 MiB echoes, as in `loupe bench wire`)
///   measured in the same run.
/// - Fan-out: a signed model of the standard shape (about 2 MB) is assigned
///   to every agent; each fetches it in chunks, checks SHA-256 and the
///   Ed25519 signature, and reports it installed; seconds from the
///   assignment until the manager has recorded every install.
public struct FleetBenchmark: Sendable {
    public struct Options: Sendable {
        public var agents = 50
        public var roisPerAgent = 20
        public var roiSide = 256
        public var window = 4
        public var rounds = 3
        public init() {}
    }

    public struct Round: Sendable {
        public var rois: Int
        public var bytes: Int
        public var seconds: Double
        public var ceilingMegabytesPerSecond: Double
        public var fanOutSeconds: Double
        public var roisPerSecond: Double { Double(rois) / seconds }
        public var megabytesPerSecond: Double { Double(bytes) / 1e6 / seconds }
    }

    public struct Result: Sendable {
        public var rounds: [Round]
        public var modelBytes: Int
        public var storedROIs: Int
        public var expectedROIs: Int
        public var installsRecorded: Int
    }

    public let options: Options
    private let progress: @Sendable (String) -> Void

    public init(options: Options, progress: @escaping @Sendable (String) -> Void) {
        self.options = options
        self.progress = progress
    }

    /// What a simulated agent needs to answer model offers.
    private struct Trust: Sendable { let key: Curve25519.Signing.PublicKey }

    public func run() async throws -> Result {
        let folder = NSTemporaryDirectory() + "loupe-bench-fleet-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        progress("making \(options.agents) agent certificates")
        let pki = try LocalFleetPKI(folder: folder, organization: "Bench")
        let managerTLS = try pki.manager()
        let agents = try SimulatedAgents(count: options.agents, prefix: "bench-cam", pki: pki)
        let operatorTLS = try pki.member(.operator, "bench-operator")

        let dataDir = folder + "/manager"
        var config = ManagerConfig(managerId: "bench", listen: "127.0.0.1:0", tls: managerTLS, revocationList: nil, dataDir: dataDir)
        config.trainingThreads = 1
        let manager = try await InProcessManager.start(config, logger: WireBenchmark.quietLogger)
        let port = manager.port
        let registry = try ModelRegistry(directory: dataDir, signingKeyPath: config.signingKeyPath)
        let trust = Trust(key: registry.signingKey.publicKey)

        // Connect every agent and keep its connection open for the whole run.
        progress("connecting \(options.agents) agents")
        let connections = Locked<[Int: WireConnection]>([:])
        let stop = Locked(false)
        let failures = Locked<[String]>([])
        let agentTasks = agents.start(
            ports: [port], inspectionType: "bench", capabilities: ["agent-status", "roi-upload", "model-chunks"],
            handler: Self.offerHandler(trust), failed: { index, error in failures.withLock { $0.append("\(agents.ids[index]): \(error)") } }
        ) { index, connection, _ in
            connections.withLock { $0[index] = connection }
            while !stop.withLock({ $0 }) && !connection.isClosed { try await Task.sleep(for: .milliseconds(50)) }
        }
        let deadline = ContinuousClock.now + .seconds(60)
        while connections.withLock({ $0.count }) < options.agents {
            if let first = failures.withLock({ $0.first }) { throw BenchmarkError("an agent could not connect: \(first)") }
            guard ContinuousClock.now < deadline else { throw WireError.requestTimedOut(seconds: 60) }
            try await Task.sleep(for: .milliseconds(20))
        }
        let links = connections.withLock { map in (0..<options.agents).map { map[$0]! } }

        var rounds: [Round] = []
        var modelBytes = 0
        for round in 1...options.rounds {
            progress("round \(round)/\(options.rounds): making \(options.agents * options.roisPerAgent) ROIs")
            let uploads = try (0..<options.agents).map { agent in
                try (0..<options.roisPerAgent).map {
                    try Self.upload(side: options.roiSide, seed: UInt64(round * 1_000_000 + agent * 1000 + $0))
                }
            }
            let bytes = uploads.joined().reduce(0) { $0 + $1.imagePng.count + $1.maskPng.count }
            progress("round \(round)/\(options.rounds): ingest from \(options.agents) agents")
            let start = ContinuousClock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (agent, link) in links.enumerated() {
                    for lane in 0..<options.window {
                        group.addTask {
                            for upload in uploads[agent].enumerated().filter({ $0.offset % options.window == lane }).map(\.element) {
                                let reply = try await link.request(.roiUpload(upload))
                                guard case .roiAck(let ack) = reply.body, ack.status == .stored else {
                                    throw WireError.unexpectedReply(expected: "roi_ack stored", received: reply.bodyName)
                                }
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            let seconds = (ContinuousClock.now - start).seconds

            progress("round \(round)/\(options.rounds): plain-TLS ceiling")
            let echo = try await PlainTLSEcho.start(tls: managerTLS)
            let echoes = try await PlainTLSEcho.withClient(port: echo.port, tls: agents.tls[0], secondsPerRound: 1) { plain in
                try await plain.roundTrips(payloadBytes: 1 << 20, window: 8)
            }
            echo.stop()
            let ceiling = Double(echoes) * Double(1 << 20) / 1e6

            progress("round \(round)/\(options.rounds): fan-out of a model to \(options.agents) agents")
            var model = SegmentationModel(weights: Weights(configuration: .standard, seed: UInt64(round)))
            model.metadata.description = "fan-out benchmark round \(round)"
            let record = try registry.publish(try ModelFile.encode(model), inspectionType: "bench")
            modelBytes = record.bytes
            let pushed = ContinuousClock.now
            // Pushed as an operator does (`loupe model push`): the manager offers at once.
            var push = Loupe_V1_ModelPush()
            push.modelVersion = record.version
            push.target.cameras = agents.ids
            try await WireClient.withConnection(WireClientConfiguration(host: "localhost", port: port, tls: operatorTLS)) {
                [push] connection, _ in
                let reply = try await connection.request(.modelPush(push))
                guard case .modelPushReply = reply.body else {
                    throw WireError.unexpectedReply(expected: "model_push_reply", received: reply.bodyName)
                }
            }
            while try registry.cameras().filter({ $0.installedVersion == record.version }).count < options.agents {
                guard ContinuousClock.now - pushed < .seconds(300) else { throw WireError.requestTimedOut(seconds: 300) }
                try await Task.sleep(for: .milliseconds(10))
            }
            let fanOut = (ContinuousClock.now - pushed).seconds
            rounds.append(
                Round(
                    rois: options.agents * options.roisPerAgent, bytes: bytes, seconds: seconds, ceilingMegabytesPerSecond: ceiling,
                    fanOutSeconds: fanOut))
        }
        let stored = try await TrainingDataStore(path: dataDir + "/training-data.sqlite").count()
        let installs = try registry.cameras().filter { $0.installedVersion != nil }.count
        stop.withLock { $0 = true }
        for task in agentTasks { await task.value }
        await manager.stop()
        return Result(
            rounds: rounds, modelBytes: modelBytes, storedROIs: stored,
            expectedROIs: options.agents * options.roisPerAgent * options.rounds,
            installsRecorded: installs)
    }

    /// A simulated agent's answer to a model offer: fetch, check, report.
    private static func offerHandler(_ trust: Trust) -> RequestHandler {
        { connection, envelope in
            guard case .modelOffer(let offer) = envelope.body else { return nil }
            var data = Data()
            while data.count < Int(offer.sizeBytes) {
                var request = Loupe_V1_ModelChunkRequest()
                request.modelVersion = offer.modelVersion
                request.offset = UInt64(data.count)
                request.length = offer.chunkBytes
                let reply = try await connection.request(.modelChunkRequest(request))
                guard case .modelChunk(let chunk) = reply.body, !chunk.data.isEmpty else { break }
                data.append(chunk.data)
            }
            var installed = Loupe_V1_ModelInstalled()
            installed.modelVersion = offer.modelVersion
            let digest = Data(SHA256.hash(data: data))
            installed.ok = digest == offer.sha256 && trust.key.isValidSignature(offer.signature, for: digest)
            installed.error = installed.ok ? "" : "SHA-256 or signature mismatch"
            try await connection.send(event: .modelInstalled(installed))
            return nil
        }
    }

    /// A labelled ROI as an agent uploads it: a textured image and a mask with a blob.
    public static func upload(side: Int, seed: UInt64) throws -> Loupe_V1_RoiUpload {
        var random = SeededGenerator(seed: seed)
        var image = try Image8(width: side, height: side)
        for index in image.samples.indices { image.samples[index] = UInt8(96 + random.below(64)) }
        var mask = try Image8(width: side, height: side)
        let cx = side / 4 + random.below(side / 2), cy = side / 4 + random.below(side / 2)
        for y in max(0, cy - 8)..<min(side, cy + 8) { for x in max(0, cx - 8)..<min(side, cx + 8) { mask.samples[y * side + x] = 1 } }
        var upload = Loupe_V1_RoiUpload()
        upload.imagePng = try PNGCodec.encode(image)
        upload.maskPng = try PNGCodec.encode(mask)
        var hasher = SHA256()
        hasher.update(data: upload.imagePng)
        hasher.update(data: upload.maskPng)
        upload.contentSha256 = Data(hasher.finalize())
        upload.inspectionType = "bench"
        upload.roiName = "roi"
        upload.classNames = ["background", "scratch"]
        upload.capturedAtUnixMs = UInt64(Date().timeIntervalSince1970 * 1000)
        upload.recipeVersion = "1"
        upload.templateSha256 = Data(repeating: 7, count: 32)
        return upload
    }
}

/// A value shared between tasks.
final class Locked<Value: Sendable>: Sendable {
    private let storage: Mutex<Value>
    init(_ value: Value) { storage = Mutex(value) }
    func withLock<T>(_ body: (inout Value) -> T) -> T { storage.withLock { body(&$0) } }
}
