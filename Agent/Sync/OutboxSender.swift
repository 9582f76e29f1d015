import Foundation
public import Logging
import LoupeProto
import LoupeStorage
public import LoupeWire

/// Drains the label outbox to the manager over a live connection: each
/// labelled ROI goes as a RoiUpload request, and leaves the outbox only when
/// the manager's RoiAck says it is durably stored (or already held). So an
/// item is sent at least once, and the content hash makes a repeat harmless:
/// nothing is lost or doubled across disconnects and restarts.
public struct OutboxSender: Sendable {
    public let store: LabelStore
    /// Uploads in flight at once.
    public var window = 4
    /// Optional cap on upload bytes per second.
    public var bytesPerSecond: Double?
    let logger: Logger

    public init(store: LabelStore, bytesPerSecond: Double?, logger: Logger) {
        self.store = store
        self.bytesPerSecond = bytesPerSecond
        self.logger = logger
    }

    /// Runs until the connection closes.
    public func run(over connection: WireConnection) async throws {
        var refused: Set<Int64> = []
        var limiter = RateLimiter(bytesPerSecond: bytesPerSecond)
        while !connection.isClosed {
            let (store, limit, skipping) = (self.store, window * 4, refused)
            let batch = try await store.pendingUploads(limit: limit, skipping: skipping)
            if batch.isEmpty {
                try await Task.sleep(for: .seconds(1))
                continue
            }
            var sent = 0
            try await withThrowingTaskGroup(of: (Int64, String, Result<Loupe_V1_RoiAck, any Error>).self) { group in
                var index = 0
                func launch() async throws {
                    let item = batch[index]
                    index += 1
                    let upload = try await BlockingIO.run { try makeUpload(item) }
                    let itemID = try item.rowID()
                    group.addTask {
                        do {
                            let reply = try await connection.request(.roiUpload(upload))
                            guard case .roiAck(let ack) = reply.body else {
                                throw WireError.unexpectedReply(expected: "roi_ack", received: reply.bodyName)
                            }
                            guard ack.contentSha256 == upload.contentSha256 else {
                                throw WireError.unexpectedReply(expected: "an ack for this upload", received: "an ack for another")
                            }
                            return (itemID, item.contentHash, .success(ack))
                        } catch {
                            return (itemID, item.contentHash, .failure(error))
                        }
                    }
                    let size = upload.imagePng.count + upload.maskPng.count
                    if let delay = limiter.delay(for: size) { try await Task.sleep(for: delay) }
                }
                while index < min(window, batch.count) { try await launch() }
                while let (id, hash, result) = try await group.next() {
                    switch result {
                    case .success:
                        try await store.acknowledge(contentHash: hash)
                        sent += 1
                    case .failure(let error):
                        if let message = Self.permanentRefusal(error) {
                            // The manager will never take this one: keep it, say why, and move on.
                            refused.insert(id)
                            try? await store.recordAttempt(outboxID: id, error: message)
                            logger.error("manager refused a labelled ROI", metadata: ["outbox": "\(id)", "reason": "\(message)"])
                        } else {
                            let reason = "\(error)"
                            try? await store.recordAttempt(outboxID: id, error: reason)
                            throw error
                        }
                    }
                    if index < batch.count { try await launch() }
                }
            }
            if sent > 0 { logger.debug("outbox uploads acknowledged", metadata: ["count": "\(sent)"]) }
        }
    }

    /// Why the manager will never take an upload (it was refused as invalid, or its frame is over the manager's
    /// announced limit), or nil when sending it again may succeed.
    static func permanentRefusal(_ error: any Error) -> String? {
        guard let wire = error as? WireError else { return nil }
        switch wire {
        case .remote(let code, let message) where code == .invalidArgument || code == .frameTooLarge: return message
        case .frameTooLarge: return "\(wire) (the manager's frame limit)"
        default: return nil
        }
    }

    /// The upload for one queued labelled ROI, as it was frozen when it was queued.
    func makeUpload(_ item: OutboxRecord) throws -> Loupe_V1_RoiUpload {
        var upload = Loupe_V1_RoiUpload()
        upload.imagePng = try store.blobs.get(item.cropHash)
        upload.maskPng = try store.blobs.get(item.maskHash)
        upload.contentSha256 = Data(hexString: item.contentHash) ?? Data()
        upload.inspectionType = item.inspectionType
        upload.roiName = item.roiName
        upload.capturedAtUnixMs = UInt64(max(0, item.capturedAt.timeIntervalSince1970 * 1000))
        upload.recipeVersion = String(item.recipeVersion)
        upload.templateSha256 = Data(hexString: item.templateSHA256) ?? Data()
        upload.classNames = item.classNames
        return upload
    }
}

/// A token bucket: lets `bytesPerSecond` through on average, in bursts of up to one second's worth.
struct RateLimiter {
    let bytesPerSecond: Double?
    private var allowance: Double
    private var last = ContinuousClock.now

    init(bytesPerSecond: Double?) {
        self.bytesPerSecond = bytesPerSecond
        allowance = bytesPerSecond ?? 0
    }

    /// How long to wait after sending `bytes`, if at all.
    mutating func delay(for bytes: Int) -> Duration? {
        guard let rate = bytesPerSecond, rate > 0 else { return nil }
        let now = ContinuousClock.now
        allowance = min(rate, allowance + (now - last).seconds * rate)
        last = now
        allowance -= Double(bytes)
        guard allowance < 0 else { return nil }
        return .seconds(-allowance / rate)
    }
}
