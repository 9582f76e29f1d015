import Crypto
public import Foundation
import LoupeImaging
public import LoupeSegmentation
import LoupeStorage

/// What a store holds of one inspection type before its images are read.
public struct DatasetHead: Sendable, Equatable {
    public var rois: Int
    /// The newest upload's class names (index 0 = background), as the JSON array stored with it.
    public var classNamesJSON: String

    public init(rois: Int, classNamesJSON: String) {
        (self.rois, self.classNamesJSON) = (rois, classNamesJSON)
    }

    public var classNames: [String] { (try? JSONDecoder().decode([String].self, from: Data(classNamesJSON.utf8))) ?? [] }
}

/// One held ROI with its PNGs, as a page of the training set carries it.
public struct DatasetPiece: Sendable, Equatable {
    public var contentSHA256: String
    public var cameraId: String
    public var imagePNG: Data
    public var maskPNG: Data

    public init(contentSHA256: String, cameraId: String, imagePNG: Data, maskPNG: Data) {
        (self.contentSHA256, self.cameraId, self.imagePNG, self.maskPNG) = (contentSHA256, cameraId, imagePNG, maskPNG)
    }
}

/// Builds the training set from pages of ROIs in content-hash order, wherever they come from (a store on the
/// manager, or a manager over the wire to a worker): each ROI checked as it arrives and its PNGs spooled to an
/// unlinked scratch file in `scratchDirectory` (`SpooledImages`: the trainer reads them back a batch at a time,
/// so neither the PNG bytes nor the pixels of the whole set are ever held), named by its content hash (the
/// train/validation split is made by name hash, so it stays put as data grows), and the dataset hash taken over
/// the content hashes in order. One rule for every trainer, so a worker's model says the same dataset hash as
/// the manager's would.
public struct DatasetAssembler {
    /// ROIs per page a trainer asks for: a few MB of PNGs.
    public static let pageSize = 64

    public let classNames: [String]
    private var spool: ImageSpool
    private var hasher = SHA256()
    private var last: String?

    public init(classNames: [String], scratchDirectory: String) throws(TrainingDataError) {
        self.classNames = classNames
        do {
            spool = try ImageSpool(directory: scratchDirectory, classes: classNames.count)
        } catch {
            throw .invalid("cannot spool the training set: \(error)")
        }
    }

    public var count: Int { spool.count }
    /// The content hash of the last ROI added: where the next page starts.
    public var after: String? { last }

    public mutating func add(_ piece: DatasetPiece) throws(TrainingDataError) {
        if let last, piece.contentSHA256 <= last {
            throw .invalid("ROI \(piece.contentSHA256.prefix(12)) arrived out of order (after \(last.prefix(12)))")
        }
        do {
            try spool.add(name: piece.contentSHA256, imagePNG: piece.imagePNG, maskPNG: piece.maskPNG)
        } catch {
            throw .invalid("stored ROI \(piece.contentSHA256.prefix(12)) from \(piece.cameraId): \(error)")
        }
        hasher.update(data: Data(piece.contentSHA256.utf8))
        last = piece.contentSHA256
    }

    /// The set (named by the hash over its content hashes) and its class names.
    public func finish() -> (dataset: SpooledImages, classNames: [String]) {
        (spool.finish(sha256: hasher.finalize().hexString), classNames)
    }
}
