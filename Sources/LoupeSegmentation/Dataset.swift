import Crypto
import Foundation
public import LoupeImaging
import LoupeStorage

/// An image with its class mask (one class index per pixel, 0 = background).
public struct LabelledImage: Sendable {
    public var name: String
    public var image: Image8
    public var mask: Image8

    /// Checks that the mask fits the image and the model's classes.
    public init(name: String, image: Image8, mask: Image8, classes: Int) throws(SegmentationError) {
        guard mask.width == image.width, mask.height == image.height, mask.channels == 1 else {
            throw .maskSizeMismatch(
                file: name, image: "\(image.width)x\(image.height)", mask: "\(mask.width)x\(mask.height)x\(mask.channels)")
        }
        if let worst = mask.samples.max(), Int(worst) >= classes {
            throw .classOutOfRange(file: name, value: Int(worst), classes: classes)
        }
        self.name = name
        self.image = image
        self.mask = mask
    }
}

/// Labelled images for training or evaluation.
public struct SegmentationDataset: Sendable {
    public var items: [LabelledImage]
    public let classes: Int

    public init(items: [LabelledImage], classes: Int) {
        self.items = items
        self.classes = classes
    }

    /// Reads `DIR/images/SPLIT/NAME.{jpg,png}` with `DIR/annotations/SPLIT/NAME.png`
    /// (NEU-Seg's layout), or `DIR/images` with `DIR/masks` when there is no split.
    public static func load(
        directory: String, split: String?, channels: Int, classes: Int, limit: Int? = nil, progress: ((Int, Int) -> Void)? = nil
    ) throws(SegmentationError) -> SegmentationDataset {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw .unreadableFile(file: directory, reason: "no such directory")
        }
        let imageDir = [directory, "images", split].compactMap { $0 }.joined(separator: "/")
        let maskDir =
            ["annotations", "masks"].lazy.map { [directory, $0, split].compactMap { $0 }.joined(separator: "/") }
            .first { fm.fileExists(atPath: $0) } ?? [directory, "annotations", split].compactMap { $0 }.joined(separator: "/")
        guard let names = try? fm.contentsOfDirectory(atPath: imageDir) else {
            throw .unreadableFile(
                file: imageDir, reason: "no images directory (expected images/\(split ?? "") with annotations/\(split ?? "") beside it)")
        }
        var imageFiles = names.filter { [".jpg", ".jpeg", ".png"].contains(where: $0.lowercased().hasSuffix) }.sorted()
        if let limit { imageFiles = Array(imageFiles.prefix(limit)) }
        guard !imageFiles.isEmpty else { throw .emptyDataset("\(imageDir) holds no .jpg or .png images") }
        var items: [LabelledImage] = []
        items.reserveCapacity(imageFiles.count)
        for (index, file) in imageFiles.enumerated() {
            let stem = (file as NSString).deletingPathExtension
            let imagePath = imageDir + "/" + file
            let maskPath = maskDir + "/" + stem + ".png"
            let image = try read(imagePath, channels: channels)
            guard fm.fileExists(atPath: maskPath) else {
                throw .unreadableFile(file: maskPath, reason: "the mask for \(imagePath) is missing")
            }
            let mask = try read(maskPath, channels: 1)
            items.append(try LabelledImage(name: imagePath, image: image, mask: mask, classes: classes))
            progress?(index + 1, imageFiles.count)
        }
        return SegmentationDataset(items: items, classes: classes)
    }

    static func read(_ path: String, channels: Int) throws(SegmentationError) -> Image8 {
        let decoded: DecodedImage
        do { decoded = try ImageFile.read(path) } catch { throw .unreadableFile(file: path, reason: "\(error)") }
        if channels == 1 { return decoded.gray8 }
        switch decoded {
        case .rgb8(let image): return image
        default:
            let grey = decoded.gray8
            return Image8(validWidth: grey.width, height: grey.height, channels: 3, samples: grey.samples.flatMap { [$0, $0, $0] })
        }
    }

    /// SHA-256 (hex) over every image and mask, in name order.
    public var sha256: String {
        var hash = SHA256()
        for item in items.sorted(by: { $0.name < $1.name }) {
            hash.update(data: Data(item.image.samples))
            hash.update(data: Data(item.mask.samples))
        }
        return hash.finalize().hexString
    }

    /// Which side of the split an image of this name falls on.
    public static func isValidation(name: String, fraction: Double) -> Bool {
        let digest = SHA256.hash(data: Data((name as NSString).lastPathComponent.utf8))
        let bucket = digest.withUnsafeBytes { Double($0.loadUnaligned(as: UInt32.self)) / Double(UInt32.max) }
        return bucket < fraction
    }
}

/// Per-class IoU and the confusion matrix of predictions against ground truth.
public struct ConfusionMatrix: Sendable, Equatable {
    public let classes: Int
    /// counts[truth * classes + predicted]
    public private(set) var counts: [Int]

    /// A matrix from its counts, row-major by truth (a model file's); nil when they do not make one of `classes`.
    public init?(classes: Int, counts: [Int]) {
        guard classes > 0, counts.count == classes * classes, counts.allSatisfy({ $0 >= 0 }) else { return nil }
        self.classes = classes
        self.counts = counts
    }

    public init(classes: Int) {
        self.classes = classes
        counts = [Int](repeating: 0, count: classes * classes)
    }

    public mutating func add(truth: [UInt8], predicted: [UInt8]) {
        for (t, p) in zip(truth, predicted) { counts[Int(t) * classes + Int(p)] += 1 }
    }

    public func count(truth: Int, predicted: Int) -> Int { counts[truth * classes + predicted] }

    /// IoU per class; a class absent from both truth and prediction scores 1.
    public var iou: [Float] {
        (0..<classes).map { c in
            let tp = count(truth: c, predicted: c)
            let truthTotal = (0..<classes).reduce(0) { $0 + count(truth: c, predicted: $1) }
            let predictedTotal = (0..<classes).reduce(0) { $0 + count(truth: $1, predicted: c) }
            let union = truthTotal + predictedTotal - tp
            return union == 0 ? 1 : Float(tp) / Float(union)
        }
    }

    public var meanIoU: Float { iou.reduce(0, +) / Float(classes) }

    public var pixelAccuracy: Float {
        let total = counts.reduce(0, +)
        return total == 0 ? 0 : Float((0..<classes).reduce(0) { $0 + count(truth: $1, predicted: $1) }) / Float(total)
    }
}
