public import Crypto
public import Foundation
public import LoupeSegmentation
import LoupeProto
public import LoupeStorage
import LoupeWire
import Synchronization
import SwiftProtobuf

/// Why a model was not installed.
public enum ModelInstallError: Error, Equatable, CustomStringConvertible {
    case hashMismatch(version: String, expected: String, actual: String)
    case badSignature(version: String, reason: String)
    case unreadable(version: String, reason: String)
    case invalidVersion(String)
    case noPreviousModel
    case chunkOutOfOrder(version: String, expected: UInt64, received: UInt64)
    case tooLarge(version: String, bytes: UInt64, limit: UInt64)
    case io(String)
    /// Signed for another inspection type than this camera's recipe.
    case wrongInspectionType(version: String, model: String, recipe: String)
    /// Signed under another version name than the offer gave.
    case mislabelled(version: String, signedAs: String)
    /// Its assignment is no newer than one this camera already accepted: an old offer replayed.
    case replayed(version: String, assignment: UInt64, newest: UInt64)
    /// No signed assignment, or one that does not name this camera and this model.
    case badAssignment(version: String, reason: String)

    public var description: String {
        switch self {
        case .hashMismatch(let version, let expected, let actual):
            "model \(version): SHA-256 is \(actual.prefix(16))…, the offer said \(expected.prefix(16))… (corrupt or tampered); not "
                + "installed"
        case .badSignature(let version, let reason): "model \(version): signature refused: \(reason); not installed"
        case .unreadable(let version, let reason): "model \(version) cannot be read: \(reason)"
        case .invalidVersion(let text): FleetName.refusal("model version", text)
        case .noPreviousModel: "there is no previous model to roll back to"
        case .chunkOutOfOrder(let version, let expected, let received):
            "model \(version): chunk at byte \(received) does not continue the download at byte \(expected)"
        case .tooLarge(let version, let bytes, let limit): "model \(version) is \(bytes) bytes; at most \(limit) are accepted"
        case .io(let reason): reason
        case .wrongInspectionType(let version, let model, let recipe):
            "model \(version) is signed for inspection type \"\(model)\", this camera's recipe is \"\(recipe)\"; not installed"
        case .mislabelled(let version, let signedAs):
            "model \(version) is signed as version \"\(signedAs)\"; an offer cannot relabel a model; not installed"
        case .replayed(let version, let assignment, let newest):
            "model \(version): its assignment (sequence \(assignment)) is no newer than the last this camera accepted (sequence "
                + "\(newest)): "
                + "an old offer replayed; not installed"
        case .badAssignment(let version, let reason): "model \(version): assignment refused: \(reason); not installed"
        }
    }
}

/// An installed model and where it came from.
public struct InstalledModel: Codable, Sendable, Equatable {
    public var version: String
    public var sha256: String
    public var bytes: Int
    public var installedAt: Date
    /// "manager", "local-training" or "file".
    public var origin: String
}

/// The agent's models on disk: `models/<version>.loupe`, and `installed.json`
/// naming the current model and the one before it (for rollback). Every
/// model is checked before it is installed: its SHA-256 against the offer,
/// and its Ed25519 signature against the trusted keys (the manager's, and the
/// agent's own key for models it trained itself). Installing and rolling back
/// replace `installed.json` atomically, so a crash leaves the old choice or
/// the new one. Downloads in progress live in `models/partial/` and resume
/// from their last whole chunk.
public final class ModelShelf: Sendable {
    public struct State: Codable, Sendable, Equatable {
        public var current: InstalledModel?
        public var previous: InstalledModel?
        /// The sequence of the newest manager assignment accepted.
        public var newestAssignment: UInt64?
    }

    /// What a model offered by the manager must match beyond its signature.
    public struct OfferCheck: Sendable {
        /// This camera's id and its recipe's inspection type.
        public var cameraId: String
        public var inspectionType: String
        /// The offer's serialised `ModelAssignment` and the manager's signature over it.
        public var assignment: Data
        public var assignmentSignature: Data

        public init(cameraId: String, inspectionType: String, assignment: Data, assignmentSignature: Data) {
            self.cameraId = cameraId
            self.inspectionType = inspectionType
            self.assignment = assignment
            self.assignmentSignature = assignmentSignature
        }
    }

    public let directory: String
    /// Keys that sign models from the manager; the only ones an offer or a manager model may carry.
    public let managerKeys: [Curve25519.Signing.PublicKey]
    /// The manager's keys and this agent's own (for models it trained itself).
    public let trustedKeys: [Curve25519.Signing.PublicKey]
    /// Signs models this agent trains itself (`models/local-signing.key`, made at first start).
    public let localKey: Curve25519.Signing.PrivateKey
    public static let maximumModelBytes = ModelChunks.maximumFileBytes
    /// Where a model comes from, which decides what it must pass: a model
    /// offered by the manager cannot be installed without its offer's checks.
    public enum Source: Sendable {
        /// Offered by the manager: signed by a manager key, with its provenance and assignment checked against `OfferCheck`.
        case manager(OfferCheck)
        /// Trained on this camera, or installed from a file here: signed by any trusted key, this agent's own included.
        case local(String)

        /// `InstalledModel.origin`.
        public var origin: String {
            switch self {
            case .manager: "manager"
            case .local(let origin): origin
            }
        }
    }
    private let lock = Mutex(())

    public init(directory: String, managerKeys: [Curve25519.Signing.PublicKey]) throws(StoreError) {
        self.directory = directory
        do {
            try FileManager.default.createDirectory(atPath: directory + "/partial", withIntermediateDirectories: true)
        } catch {
            throw .io(path: directory, reason: "\(error)")
        }
        let keyPath = directory + "/local-signing.key"
        if let raw = FileManager.default.contents(atPath: keyPath) {
            guard let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw) else {
                throw .invalid("\(keyPath) is not a 32-byte Ed25519 private key")
            }
            localKey = key
        } else {
            localKey = Curve25519.Signing.PrivateKey()
            try BlobStore.replaceDurably(keyPath, with: localKey.rawRepresentation, mode: 0o600)
        }
        self.managerKeys = managerKeys
        trustedKeys = managerKeys + [localKey.publicKey]
    }

    public var state: State {
        lock.withLock { _ in readState() }
    }

    private func readState() -> State {
        guard let data = FileManager.default.contents(atPath: directory + "/installed.json"),
            let state = try? JSONDecoder.iso.decode(State.self, from: data)
        else { return State() }
        return state
    }

    private func writeState(_ state: State) throws(ModelInstallError) {
        do {
            let encoded = try JSONEncoder.iso.encode(state)
            try BlobStore.replaceDurably(directory + "/installed.json", with: encoded)
        } catch {
            throw .io("cannot record the installed model: \(error)")
        }
    }

    private func path(of version: String) -> String { directory + "/\(version).loupe" }

    /// The current model, read and verified again from disk.
    public func loadCurrent() throws(ModelInstallError) -> (SegmentationModel, InstalledModel)? {
        guard let current = state.current else { return nil }
        return (try load(current), current)
    }

    private func load(_ installed: InstalledModel) throws(ModelInstallError) -> SegmentationModel {
        guard let data = FileManager.default.contents(atPath: path(of: installed.version)) else {
            throw .unreadable(version: installed.version, reason: "\(path(of: installed.version)) is missing")
        }
        return try verify(data, version: installed.version, expectedSHA256: nil)
    }

    /// Checks a model file: SHA-256 (when the offer gave one) and a signature
    /// by one of `keys` (all trusted keys unless told otherwise).
    public func verify(
        _ data: Data, version: String, expectedSHA256: Data?,
        keys: [Curve25519.Signing.PublicKey]? = nil
    ) throws(ModelInstallError) -> SegmentationModel {
        if let expectedSHA256 {
            let actual = Data(SHA256.hash(data: data))
            guard actual == expectedSHA256 else {
                throw .hashMismatch(version: version, expected: expectedSHA256.hexString, actual: actual.hexString)
            }
        }
        do {
            return try ModelFile.decode(data, name: "model \(version)", trustedKeys: keys ?? trustedKeys).0
        } catch {
            if case .signatureRefused(_, let reason) = error { throw .badSignature(version: version, reason: reason) }
            throw .unreadable(version: version, reason: "\(error)")
        }
    }

    /// Verifies and installs a model; the one it replaces becomes the rollback
    /// target. A model from the manager must be signed by a manager key (never
    /// this agent's own), for the recipe's inspection type, under the offered
    /// name, and come with the manager's signed assignment of it to this
    /// camera, newer than any assignment accepted before.
    @discardableResult
    public func install(
        _ data: Data, version: String, expectedSHA256: Data?,
        from source: Source
    ) throws(ModelInstallError) -> (SegmentationModel, InstalledModel) {
        guard FleetName.isValid(version) else { throw .invalidVersion(version) }
        var offer: OfferCheck?
        if case .manager(let check) = source { offer = check }
        let model = try verify(data, version: version, expectedSHA256: expectedSHA256, keys: offer == nil ? nil : managerKeys)
        return try lock.withLock { _ throws(ModelInstallError) -> (SegmentationModel, InstalledModel) in
            var state = readState()
            if let offer {
                state.newestAssignment = try checkProvenance(
                    model.metadata.provenance, version: version, offer: offer, newest: state.newestAssignment ?? 0)
            }
            do {
                try BlobStore.replaceDurably(path(of: version), with: data)
            } catch {
                throw .io("cannot write model \(version): \(error)")
            }
            let installed = InstalledModel(
                version: version, sha256: Data(SHA256.hash(data: data)).hexString, bytes: data.count, installedAt: Date(),
                origin: source.origin)
            if state.current?.version != version { state.previous = state.current }
            state.current = installed
            try writeState(state)
            try? FileManager.default.removeItem(atPath: partialPath(version))
            return (model, installed)
        }
    }

    /// The provenance checks of a manager model; returns the assignment's sequence, the newest after accepting it.
    private func checkProvenance(
        _ provenance: ModelProvenance, version: String, offer: OfferCheck,
        newest: UInt64
    ) throws(ModelInstallError) -> UInt64 {
        guard provenance.versionName == version else { throw .mislabelled(version: version, signedAs: provenance.versionName) }
        guard !provenance.inspectionType.isEmpty, provenance.inspectionType == offer.inspectionType else {
            throw .wrongInspectionType(version: version, model: provenance.inspectionType, recipe: offer.inspectionType)
        }
        guard !offer.assignment.isEmpty else { throw .badAssignment(version: version, reason: "the offer carries no signed assignment") }
        guard managerKeys.contains(where: { $0.isValidSignature(offer.assignmentSignature, for: offer.assignment) }) else {
            throw .badAssignment(version: version, reason: "not signed by the manager's model-signing key")
        }
        let assignment: Loupe_Model_V1_ModelAssignment
        do { assignment = try Loupe_Model_V1_ModelAssignment(serializedBytes: offer.assignment) } catch {
            throw .badAssignment(version: version, reason: "does not parse: \(error)")
        }
        guard assignment.cameraID == offer.cameraId else {
            throw .badAssignment(version: version, reason: "it assigns camera \(assignment.cameraID), not this camera (\(offer.cameraId))")
        }
        guard assignment.version == version, assignment.modelSequence == provenance.sequence,
            assignment.inspectionType == provenance.inspectionType
        else {
            throw .badAssignment(
                version: version,
                reason: "it names \(assignment.version) (sequence \(assignment.modelSequence), type \(assignment.inspectionType)), "
                    + "not this model (sequence \(provenance.sequence), type \(provenance.inspectionType))")
        }
        guard assignment.sequence > newest else {
            throw .replayed(version: version, assignment: assignment.sequence, newest: newest)
        }
        return assignment.sequence
    }

    /// Goes back to the model before the current one (which becomes the new "previous").
    public func rollback() throws(ModelInstallError) -> (SegmentationModel, InstalledModel) {
        try lock.withLock { _ throws(ModelInstallError) -> (SegmentationModel, InstalledModel) in
            var state = readState()
            guard let previous = state.previous else { throw .noPreviousModel }
            let model = try load(previous)
            state.previous = state.current
            state.current = previous
            try writeState(state)
            return (model, previous)
        }
    }

    // MARK: Resumable downloads

    private func partialPath(_ version: String) -> String { directory + "/partial/\(version).part" }

    /// Bytes of `version` already downloaded: the offset to ask for next.
    public func downloaded(_ version: String) -> UInt64 {
        guard FleetName.isValid(version),
            let attributes = try? FileManager.default.attributesOfItem(atPath: partialPath(version)),
            let size = attributes[.size] as? NSNumber
        else { return 0 }
        return size.uint64Value
    }

    /// Appends a chunk (flushed to disk) to a download in progress.
    public func append(_ data: Data, to version: String, at offset: UInt64) throws(ModelInstallError) {
        guard FleetName.isValid(version) else { throw .invalidVersion(version) }
        let have = downloaded(version)
        guard offset == have else { throw .chunkOutOfOrder(version: version, expected: have, received: offset) }
        guard have + UInt64(data.count) <= Self.maximumModelBytes else {
            throw .tooLarge(version: version, bytes: have + UInt64(data.count), limit: Self.maximumModelBytes)
        }
        let path = partialPath(version)
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw .io("\(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let failure = FileWrite.all(fd, data) ?? (fsync(fd) == 0 ? nil : errno)
        if let failure {
            // Cut back to the last whole chunk so the download resumes cleanly.
            _ = ftruncate(fd, off_t(have))
            throw .io("\(path): \(FileWrite.describe(failure))")
        }
    }

    /// The whole download, once it is complete.
    public func downloadedData(_ version: String) -> Data? {
        FileManager.default.contents(atPath: partialPath(version))
    }

    /// Forgets a download (after it failed verification).
    public func discardDownload(_ version: String) {
        guard FleetName.isValid(version) else { return }
        try? FileManager.default.removeItem(atPath: partialPath(version))
    }
}

extension JSONEncoder {
    static let iso: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()
}

extension JSONDecoder {
    public static let iso: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }()
}
