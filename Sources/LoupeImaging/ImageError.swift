/// Why an image could not be read, written or processed, naming the cause
/// and, where there is one, the file.
public enum ImageError: Error, CustomStringConvertible, Equatable {
    case emptyImage(width: Int, height: Int)
    case unsupportedChannels(Int)
    case sizeMismatch(expected: Int, actual: Int)
    /// The data has no bytes at all.
    case emptyData
    /// The bytes are neither PNG nor JPEG.
    case unknownFormat
    /// The header announces more pixels than allowed (a decompression bomb, or a mistake).
    case tooLarge(width: Int, height: Int, limit: ImageLimits)
    /// A JPEG with more scans than allowed (a progressive file built to cost CPU).
    case tooManyScans(count: Int, limit: Int)
    /// The codec refused the data: corrupt or truncated.
    case corrupt(format: String, reason: String)
    /// An encoder failed.
    case encodeFailed(format: String, reason: String)
    /// A rectangle reaches outside the image.
    case outOfBounds(rect: PixelRect, width: Int, height: Int)
    /// A mask's size differs from its image's.
    case maskSizeMismatch(imageWidth: Int, imageHeight: Int, maskWidth: Int, maskHeight: Int)
    /// A file could not be read or written.
    case file(path: String, reason: String)
    /// Any of the above, for this file.
    indirect case inFile(path: String, ImageError)

    public var description: String {
        switch self {
        case .emptyImage(let width, let height):
            return "image of \(width)x\(height) pixels has no pixels"
        case .unsupportedChannels(let channels):
            return "\(channels) channels are not supported (1 for grey, 3 for RGB)"
        case .sizeMismatch(let expected, let actual):
            return "expected \(expected) samples, got \(actual)"
        case .emptyData:
            return "the image data is empty (0 bytes)"
        case .unknownFormat:
            return "not a PNG or JPEG image"
        case .tooLarge(let width, let height, let limit):
            return
                "image of \(width)x\(height) pixels exceeds the limit of \(limit.maxWidth)x\(limit.maxHeight) and \(limit.maxPixels) pixels"
        case .tooManyScans(let count, let limit):
            return "JPEG has \(count) scans; at most \(limit) are decoded (a progressive file built to exhaust the decoder, or a mistake)"
        case .corrupt(let format, let reason):
            return "corrupt or truncated \(format): \(reason)"
        case .encodeFailed(let format, let reason):
            return "cannot encode \(format): \(reason)"
        case .outOfBounds(let rect, let width, let height):
            return "rectangle \(rect.width)x\(rect.height) at (\(rect.x), \(rect.y)) reaches outside the \(width)x\(height) image"
        case .maskSizeMismatch(let imageWidth, let imageHeight, let maskWidth, let maskHeight):
            return "mask of \(maskWidth)x\(maskHeight) does not match its \(imageWidth)x\(imageHeight) image"
        case .file(let path, let reason):
            return "\(path): \(reason)"
        case .inFile(let path, let error):
            return "\(path): \(error)"
        }
    }
}

/// The largest image a decoder accepts. Checked against the file's header
/// before any pixel memory is allocated.
public struct ImageLimits: Sendable, Equatable {
    public var maxWidth: Int
    public var maxHeight: Int
    public var maxPixels: Int
    /// JPEG scans decoded at most (a baseline JPEG has 1, a progressive one about 10).
    public var maxScans: Int

    /// 16384 x 16384 and 100 megapixels: far above industrial cameras, far
    /// below what would exhaust memory. For whole frames: captures and imports.
    public static let standard = ImageLimits(maxWidth: 16_384, maxHeight: 16_384, maxPixels: 100_000_000)
    /// An ROI crop or its mask: at most 4096 on a side, as a recipe allows.
    public static let roi = ImageLimits(maxWidth: 4096, maxHeight: 4096, maxPixels: 4096 * 4096)

    public init(maxWidth: Int, maxHeight: Int, maxPixels: Int, maxScans: Int = 64) {
        self.maxWidth = maxWidth
        self.maxHeight = maxHeight
        self.maxPixels = maxPixels
        self.maxScans = maxScans
    }

    func check(width: Int, height: Int) throws {
        guard width > 0, height > 0 else { throw ImageError.emptyImage(width: width, height: height) }
        guard width <= maxWidth, height <= maxHeight, width * height <= maxPixels else {
            throw ImageError.tooLarge(width: width, height: height, limit: self)
        }
    }
}
