import Crypto
import Foundation
public import Logging
public import LoupeProto
import LoupeSegmentation
import LoupeStorage
public import LoupeWire
import Synchronization

/// Takes model offers from the manager: fetches the file in chunks (resuming
/// from the first byte not yet held, across reconnections and restarts),
/// checks the offer's signature, the SHA-256 and the file's own signature,
/// installs it between frames with the old model kept for rollback, and
/// reports the outcome with a ModelInstalled event.
public final class ModelReceiver: Sendable {
    let runtime: AgentRuntime
    let logger: Logger
    private let downloading = Mutex<String?>(nil)

    public init(runtime: AgentRuntime, logger: Logger) {
        self.runtime = runtime
        self.logger = logger
    }

    /// Serves one ModelOffer.
    public func handle(_ connection: WireConnection, _ offer: Loupe_V1_ModelOffer) async throws -> Envelope.OneOf_Body? {
        let claimed = downloading.withLock { current -> Bool in
            guard current == nil else { return false }
            current = offer.modelVersion
            return true
        }
        guard claimed else {
            logger.info("model offer ignored while another download runs", metadata: ["version": "\(offer.modelVersion)"])
            return nil
        }
        defer { downloading.withLock { $0 = nil } }
        var report = Loupe_V1_ModelInstalled()
        report.modelVersion = offer.modelVersion
        do {
            try await receive(offer, over: connection)
            report.ok = true
        } catch let error as WireError {
            // The link dropped mid-download: what arrived is kept, and the next offer resumes it.
            logger.warning(
                "model download interrupted",
                metadata: [
                    "version": "\(offer.modelVersion)", "held": "\(runtime.shelf.downloaded(offer.modelVersion))", "error": "\(error)",
                ])
            throw error
        } catch {
            report.ok = false
            report.error = "\(error)"
            logger.error("model refused", metadata: ["version": "\(offer.modelVersion)", "error": "\(error)"])
        }
        try await connection.send(event: .modelInstalled(report))
        return nil
    }

    private func receive(_ offer: Loupe_V1_ModelOffer, over connection: WireConnection) async throws {
        let shelf = runtime.shelf
        let version = offer.modelVersion
        if shelf.state.current?.version == version {
            return
        }
        guard offer.sha256.count == 32 else {
            throw ModelInstallError.badSignature(version: version, reason: "the offer's sha256 is \(offer.sha256.count) bytes, not 32")
        }
        guard offer.sizeBytes > 0, offer.sizeBytes <= ModelShelf.maximumModelBytes else {
            throw ModelInstallError.tooLarge(version: version, bytes: offer.sizeBytes, limit: ModelShelf.maximumModelBytes)
        }
        // The offer itself must be signed by the manager's key (never this agent's own), before a byte is fetched.
        guard shelf.managerKeys.contains(where: { $0.isValidSignature(offer.signature, for: offer.sha256) }) else {
            throw ModelInstallError.badSignature(version: version, reason: "the offer is not signed by a trusted manager key")
        }
        // Another inspection type is refused before a byte is fetched too (the signed payload is checked again after).
        // The recipe the pipeline runs (what the status report names), not a second read of the store.
        let recipeType = runtime.pipeline.currentInspector.recipe.inspectionType
        guard offer.inspectionType == recipeType else {
            throw ModelInstallError.wrongInspectionType(version: version, model: offer.inspectionType, recipe: recipeType)
        }
        var offset = shelf.downloaded(version)
        if offset > offer.sizeBytes {
            shelf.discardDownload(version)
            offset = 0
        }
        if offset > 0 {
            logger.info("resuming model download", metadata: ["version": "\(version)", "from": "\(offset)", "size": "\(offer.sizeBytes)"])
        }
        let chunkBytes = min(ModelChunks.maximumBytes, offer.chunkBytes == 0 ? ModelChunks.suggestedBytes : offer.chunkBytes)
        while offset < offer.sizeBytes {
            var request = Loupe_V1_ModelChunkRequest()
            request.modelVersion = version
            request.offset = offset
            request.length = UInt32(min(UInt64(chunkBytes), offer.sizeBytes - offset))
            let reply = try await connection.request(.modelChunkRequest(request))
            guard case .modelChunk(let chunk) = reply.body else {
                throw WireError.unexpectedReply(expected: "model_chunk", received: reply.bodyName)
            }
            guard chunk.modelVersion == version, chunk.offset == offset, !chunk.data.isEmpty || chunk.last else {
                throw ModelInstallError.chunkOutOfOrder(version: version, expected: offset, received: chunk.offset)
            }
            let at = offset
            try await BlockingIO.run { () throws(ModelInstallError) in try shelf.append(chunk.data, to: version, at: at) }
            offset += UInt64(chunk.data.count)
            if chunk.last { break }
        }
        guard let data = await BlockingIO.run({ shelf.downloadedData(version) }), UInt64(data.count) == offer.sizeBytes else {
            shelf.discardDownload(version)
            throw ModelInstallError.unreadable(version: version, reason: "the download ended at \(offset) of \(offer.sizeBytes) bytes")
        }
        do {
            let check = ModelShelf.OfferCheck(
                cameraId: runtime.config.cameraId, inspectionType: recipeType,
                assignment: offer.assignment, assignmentSignature: offer.assignmentSignature)
            let (runtime, expected) = (self.runtime, offer.sha256)
            _ = try await BlockingIO.run { try runtime.install(data, version: version, expectedSHA256: expected, from: .manager(check)) }
        } catch {
            // A file that fails its checks is not kept: the next offer fetches it afresh.
            shelf.discardDownload(version)
            throw error
        }
    }
}
