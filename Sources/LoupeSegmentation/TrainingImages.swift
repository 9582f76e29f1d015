public import Foundation
import LoupeImaging
import LoupeStorage

/// What the trainer knows of one labelled image without holding its pixels:
/// enough to split, weigh, sample and normalise a set of any size.
public struct ImageSummary: Sendable, Equatable {
    public var name: String
    public var width: Int
    public var height: Int
    public var channels: Int
    /// Pixels of each class in the mask (index 0 = background).
    public var classPixels: [Int]
    /// Per channel, the sum and the sum of squares of the samples scaled to 0…1.
    public var channelSums: [Double]
    public var channelSquares: [Double]

    public init(_ item: LabelledImage, classes: Int) {
        name = item.name
        (width, height, channels) = (item.image.width, item.image.height, item.image.channels)
        var pixels = [Int](repeating: 0, count: classes)
        for value in item.mask.samples { pixels[Int(value)] += 1 }
        classPixels = pixels
        var sums = [Double](repeating: 0, count: channels), squares = sums
        item.image.samples.withUnsafeBufferPointer { samples in
            for i in 0..<samples.count {
                let v = Double(samples[i]) / 255
                sums[i % item.image.channels] += v
                squares[i % item.image.channels] += v * v
            }
        }
        (channelSums, channelSquares) = (sums, squares)
    }

    /// The defect classes the mask shows.
    public var defectClasses: [Int] { classPixels.indices.dropFirst().filter { classPixels[$0] > 0 } }
}

/// Labelled images as the trainer reads them: summaries up front, pixels one
/// image at a time. Held in memory (`SegmentationDataset`) or spooled to disk
/// (`SpooledImages`, for sets larger than memory).
public protocol TrainingImages: Sendable {
    var classes: Int { get }
    /// Images in the set (without computing their summaries).
    var count: Int { get }
    /// One per image, in index order.
    var summaries: [ImageSummary] { get }
    /// Names the set, for the model's metadata.
    var sha256: String { get }
    func image(at index: Int) throws(SegmentationError) -> LabelledImage
}

extension TrainingImages {
    public var isEmpty: Bool { count == 0 }

    /// Pixels per class over all masks.
    public var pixelCounts: [Int] {
        summaries.reduce(into: [Int](repeating: 0, count: classes)) { counts, summary in
            for (c, n) in summary.classPixels.enumerated() { counts[c] += n }
        }
    }

    /// Splits by a hash of each name (`SegmentationDataset.isValidation`), so an image stays on its side as data grows.
    public func split(validationFraction: Double) -> (training: ImageSelection, validation: ImageSelection) {
        let all = summaries
        var training: [Int] = [], validation: [Int] = []
        for (index, summary) in all.enumerated() {
            if SegmentationDataset.isValidation(name: summary.name, fraction: validationFraction) {
                validation.append(index)
            } else {
                training.append(index)
            }
        }
        return (ImageSelection(self, indices: training, of: all), ImageSelection(self, indices: validation, of: all))
    }

    /// Every image, in order (for sets small enough to hold).
    public func all() throws(SegmentationError) -> [LabelledImage] {
        var items: [LabelledImage] = []
        for index in summaries.indices { items.append(try image(at: index)) }
        return items
    }
}

/// Some of a set's images by index: one side of a split.
public struct ImageSelection: TrainingImages {
    public let source: any TrainingImages
    public let indices: [Int]
    public let summaries: [ImageSummary]

    public init(_ source: any TrainingImages, indices: [Int]) {
        self.init(source, indices: indices, of: source.summaries)
    }

    init(_ source: any TrainingImages, indices: [Int], of all: [ImageSummary]) {
        (self.source, self.indices, summaries) = (source, indices, indices.map { all[$0] })
    }

    /// All of a set.
    public init(all source: any TrainingImages) {
        let all = source.summaries
        self.init(source, indices: Array(all.indices), of: all)
    }

    public var classes: Int { source.classes }
    public var count: Int { indices.count }
    public var sha256: String { source.sha256 }
    public func image(at index: Int) throws(SegmentationError) -> LabelledImage { try source.image(at: indices[index]) }
}

extension SegmentationDataset: TrainingImages {
    public var count: Int { items.count }
    /// Computed over every pixel on each call: read it once.
    public var summaries: [ImageSummary] { items.map { ImageSummary($0, classes: classes) } }
    public func image(at index: Int) throws(SegmentationError) -> LabelledImage { items[index] }
}

/// A training set written to an unlinked scratch file as it arrives, each
/// image and mask as its PNG, and read back one image at a time: its
/// summaries stay in memory (a few hundred bytes an image), its pixels do
/// not. The file is unlinked as soon as it is made, so a crash leaves
/// nothing behind; it goes when the last reader does.
public final class SpooledImages: TrainingImages {
    public let classes: Int
    public let summaries: [ImageSummary]
    public let sha256: String
    public var count: Int { summaries.count }
    private let file: SpoolFile
    private let extents: [(offset: Int64, image: Int, mask: Int)]

    fileprivate init(
        classes: Int, summaries: [ImageSummary], sha256: String, file: SpoolFile, extents: [(offset: Int64, image: Int, mask: Int)]
    ) {
        (self.classes, self.summaries, self.sha256, self.file, self.extents) = (classes, summaries, sha256, file, extents)
    }

    /// Bytes of PNG on disk.
    public var spooledBytes: Int64 { extents.last.map { $0.offset + Int64($0.image + $0.mask) } ?? 0 }

    public func image(at index: Int) throws(SegmentationError) -> LabelledImage {
        let extent = extents[index]
        let name = summaries[index].name
        do {
            let bytes = try file.read(at: extent.offset, count: extent.image + extent.mask)
            return try Self.decode(
                name: name, image: Data(bytes.prefix(extent.image)), mask: Data(bytes.suffix(extent.mask)), classes: classes)
        } catch let error as SegmentationError {
            throw error
        } catch {
            throw .unreadableFile(file: "spooled image \(name)", reason: "\(error)")
        }
    }

    /// The one rule for a stored ROI's PNGs: the image as grey, the mask's classes checked.
    static func decode(name: String, image: Data, mask: Data, classes: Int) throws -> LabelledImage {
        try LabelledImage(name: name, image: try PNGCodec.decode(image).gray8, mask: try PNGCodec.decode(mask).gray8, classes: classes)
    }
}

/// Writes a `SpooledImages` set: each image checked and summarised as it is
/// added, its PNG bytes appended to the scratch file.
public struct ImageSpool {
    public let classes: Int
    private let file: SpoolFile
    private var summaries: [ImageSummary] = []
    private var extents: [(offset: Int64, image: Int, mask: Int)] = []
    private var end: Int64 = 0

    /// Makes the scratch file in `directory` (created if missing).
    public init(directory: String, classes: Int) throws(SegmentationError) {
        self.classes = classes
        file = try SpoolFile(directory: directory)
    }

    public var count: Int { summaries.count }

    /// Decodes and checks the PNGs (a bad one is refused here, by name, not mid-training), then appends them.
    public mutating func add(name: String, imagePNG: Data, maskPNG: Data) throws(SegmentationError) {
        let item: LabelledImage
        do {
            item = try SpooledImages.decode(name: name, image: imagePNG, mask: maskPNG, classes: classes)
        } catch let error as SegmentationError {
            throw error
        } catch {
            throw .unreadableFile(file: name, reason: "\(error)")
        }
        var bytes = imagePNG
        bytes.append(maskPNG)
        try file.write(bytes, at: end)
        extents.append((end, imagePNG.count, maskPNG.count))
        summaries.append(ImageSummary(item, classes: classes))
        end += Int64(bytes.count)
    }

    /// The set, named by `sha256`.
    public func finish(sha256: String) -> SpooledImages {
        SpooledImages(classes: classes, summaries: summaries, sha256: sha256, file: file, extents: extents)
    }
}

/// An unlinked file read and written by offset (`pread`/`pwrite`: no shared
/// position, so readers on several threads need no lock).
private final class SpoolFile: Sendable {
    private let descriptor: Int32

    init(directory: String) throws(SegmentationError) {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw .unreadableFile(file: directory, reason: "cannot make the training scratch directory: \(error.localizedDescription)")
        }
        var template = Array((directory + "/loupe-training-XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            throw .unreadableFile(file: directory, reason: "cannot make a training scratch file: \(String(cString: strerror(errno)))")
        }
        unlink(template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
        descriptor = fd
    }

    deinit { close(descriptor) }

    func write(_ data: Data, at offset: Int64) throws(SegmentationError) {
        if let failure = FileWrite.all(descriptor, data, at: off_t(offset)) {
            throw .unreadableFile(
                file: "the training scratch file",
                reason: "cannot write: \(FileWrite.describe(failure))")
        }
    }

    func read(at offset: Int64, count: Int) throws(SegmentationError) -> Data {
        var data = Data(count: count)
        var done = 0
        while done < count {
            let got = data.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress! + done, count - done, off_t(offset) + off_t(done)) }
            if got < 0, errno == EINTR { continue }
            guard got > 0 else {
                throw .unreadableFile(
                    file: "the training scratch file", reason: got == 0 ? "it ends early" : String(cString: strerror(errno)))
            }
            done += got
        }
        return data
    }
}
