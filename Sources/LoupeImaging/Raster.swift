/// A picture as rows of interleaved samples: 8-bit grey (1 channel), 8-bit
/// RGB (3 channels) or 16-bit grey (`Raster<UInt16>`, 1 channel).
public struct Raster<Sample: FixedWidthInteger & UnsignedInteger & Sendable>: Sendable, Equatable {
    public let width: Int
    public let height: Int
    public let channels: Int
    /// Row-major, channels interleaved: sample (x, y, c) is at (y * width + x) * channels + c.
    public var samples: [Sample]

    /// A raster filled with one value. (Specialised for the two sample
    /// types: the generic version filled the array one value-witness call at
    /// a time, most of the cost of cropping two ROIs.)
    @_specialize(exported:true,where Sample == UInt8)
    @_specialize(exported:true,where Sample == UInt16)
    public init(width: Int, height: Int, channels: Int = 1, fill: Sample = 0) throws {
        try Self.check(width: width, height: height, channels: channels)
        self.width = width
        self.height = height
        self.channels = channels
        self.samples = Array(repeating: fill, count: width * height * channels)
    }

    /// A raster over existing samples; their count must match the size.
    public init(width: Int, height: Int, channels: Int = 1, samples: [Sample]) throws {
        try Self.check(width: width, height: height, channels: channels)
        guard samples.count == width * height * channels else {
            throw ImageError.sizeMismatch(expected: width * height * channels, actual: samples.count)
        }
        self.width = width
        self.height = height
        self.channels = channels
        self.samples = samples
    }

    /// For a size already known to be valid (taken from another raster, a
    /// checked rectangle or a model's output): an invalid one here is a
    /// programming error, stopped with its reason, not a failure a caller
    /// could handle, so this does not throw.
    public init(validWidth width: Int, height: Int, channels: Int = 1, fill: Sample = 0) {
        precondition(
            width > 0 && height > 0 && (channels == 1 || channels == 3), "raster \(width)x\(height)x\(channels) is not a valid size")
        self.width = width
        self.height = height
        self.channels = channels
        self.samples = Array(repeating: fill, count: width * height * channels)
    }

    /// Existing samples at a size already known to be valid (see `init(validWidth:height:channels:fill:)`).
    public init(validWidth width: Int, height: Int, channels: Int = 1, samples: [Sample]) {
        precondition(
            width > 0 && height > 0 && (channels == 1 || channels == 3) && samples.count == width * height * channels,
            "\(samples.count) samples do not make a \(width)x\(height)x\(channels) raster")
        self.width = width
        self.height = height
        self.channels = channels
        self.samples = samples
    }

    public subscript(x: Int, y: Int, channel: Int = 0) -> Sample {
        get { samples[(y * width + x) * channels + channel] }
        set { samples[(y * width + x) * channels + channel] = newValue }
    }

    /// Number of pixels.
    public var pixelCount: Int { width * height }

    private static func check(width: Int, height: Int, channels: Int) throws {
        guard width > 0, height > 0 else { throw ImageError.emptyImage(width: width, height: height) }
        guard channels == 1 || channels == 3 else { throw ImageError.unsupportedChannels(channels) }
    }
}

/// 8-bit grey (1 channel) or RGB (3 channels).
public typealias Image8 = Raster<UInt8>
/// 16-bit grey.
public typealias Image16 = Raster<UInt16>

/// A decoded file: which of the three kinds it is.
public enum DecodedImage: Sendable, Equatable {
    case gray8(Image8)
    case rgb8(Image8)
    case gray16(Image16)

    public var width: Int {
        switch self {
        case .gray8(let image), .rgb8(let image): return image.width
        case .gray16(let image): return image.width
        }
    }

    public var height: Int {
        switch self {
        case .gray8(let image), .rgb8(let image): return image.height
        case .gray16(let image): return image.height
        }
    }

    /// The image as 8-bit grey: RGB by luma (BT.601), 16-bit by its top byte.
    public var gray8: Image8 {
        switch self {
        case .gray8(let image):
            return image
        case .rgb8(let image):
            var grey = [UInt8](repeating: 0, count: image.pixelCount)
            image.samples.withUnsafeBufferPointer { rgb in
                for index in 0..<grey.count {
                    let r = UInt32(rgb[index * 3]), g = UInt32(rgb[index * 3 + 1]), b = UInt32(rgb[index * 3 + 2])
                    grey[index] = UInt8((r * 299 + g * 587 + b * 114 + 500) / 1000)
                }
            }
            return Image8(validWidth: image.width, height: image.height, samples: grey)
        case .gray16(let image):
            return Image8(validWidth: image.width, height: image.height, samples: image.samples.map { UInt8($0 >> 8) })
        }
    }
}
