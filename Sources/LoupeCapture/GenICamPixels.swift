import Foundation
public import LoupeImaging

/// The GenICam (PFNC) pixel formats Loupe takes from industrial cameras, and
/// their conversion to the pipeline's 8-bit grey.
///
/// The mapping, the same for every camera (docs/line-integration.md):
/// - Mono8: as is.
/// - Mono10, Mono12, Mono14, Mono16 (unpacked, two bytes a pixel, little
///   endian): the top eight of the format's significant bits, `v >> (bits - 8)`,
///   linear (no gamma, no auto-levels, so a threshold means the same on every
///   frame); values above the format's range (a camera that sends garbage in
///   the unused bits) saturate at 255.
/// - Bayer 8-bit (GR, RG, GB, BG): each pixel the mean of the 2x2 block that
///   starts at it (the last row and column use the block before them). Every
///   2x2 block of any Bayer pattern holds one red, two green and one blue
///   site, so this is `(R + 2G + B) / 4` at full resolution whatever the order.
/// - RGB8: ITU-R BT.601 luma, `(77 R + 150 G + 29 B + 128) >> 8`.
/// Packed formats (Mono10p, Mono12Packed) are refused at open with the list of
/// those offered; set the camera to an unpacked one.
public enum GenICamPixelFormat: String, Sendable, CaseIterable, Codable {
    case mono8 = "Mono8"
    case mono10 = "Mono10"
    case mono12 = "Mono12"
    case mono14 = "Mono14"
    case mono16 = "Mono16"
    case bayerGR8 = "BayerGR8"
    case bayerRG8 = "BayerRG8"
    case bayerGB8 = "BayerGB8"
    case bayerBG8 = "BayerBG8"
    case rgb8 = "RGB8"

    /// The order Loupe asks for them when the config names none: grey first
    /// (what the pipeline inspects), the deepest grey before colour.
    public static let preference: [GenICamPixelFormat] = [
        .mono8, .mono16, .mono14, .mono12, .mono10, .bayerRG8, .bayerGR8, .bayerGB8, .bayerBG8, .rgb8,
    ]

    public var bytesPerPixel: Int {
        switch self {
        case .mono8, .bayerGR8, .bayerRG8, .bayerGB8, .bayerBG8: return 1
        case .mono10, .mono12, .mono14, .mono16: return 2
        case .rgb8: return 3
        }
    }

    /// Significant bits of a grey sample.
    var bits: Int {
        switch self {
        case .mono10: return 10
        case .mono12: return 12
        case .mono14: return 14
        case .mono16: return 16
        default: return 8
        }
    }

    /// Converts one frame of `width` x `height` pixels, rows `stride` bytes
    /// apart (0: packed rows), to grey.
    public func grey(from bytes: UnsafeRawBufferPointer, width: Int, height: Int, stride: Int = 0) throws -> Image8 {
        let rowBytes = width * bytesPerPixel
        let stride = stride > 0 ? stride : rowBytes
        guard width > 0, height > 0, bytes.count >= stride * (height - 1) + rowBytes else {
            throw ImageError.sizeMismatch(expected: stride * height, actual: bytes.count)
        }
        var grey = [UInt8](repeating: 0, count: width * height)
        grey.withUnsafeMutableBufferPointer { out in
            let source = bytes.bindMemory(to: UInt8.self)
            switch self {
            case .mono8:
                for y in 0..<height {
                    for x in 0..<width { out[y * width + x] = source[y * stride + x] }
                }
            case .mono10, .mono12, .mono14, .mono16:
                let shift = bits - 8
                for y in 0..<height {
                    let row = y * stride
                    for x in 0..<width {
                        let value = Int(source[row + 2 * x]) | Int(source[row + 2 * x + 1]) << 8
                        out[y * width + x] = UInt8(min(255, value >> shift))
                    }
                }
            case .bayerGR8, .bayerRG8, .bayerGB8, .bayerBG8:
                for y in 0..<height {
                    let top = min(y, max(0, height - 2)) * stride
                    let bottom = height > 1 ? top + stride : top
                    for x in 0..<width {
                        let left = min(x, max(0, width - 2))
                        let right = width > 1 ? left + 1 : left
                        let sum =
                            Int(source[top + left]) + Int(source[top + right]) + Int(source[bottom + left]) + Int(source[bottom + right])
                        out[y * width + x] = UInt8((sum + 2) / 4)
                    }
                }
            case .rgb8:
                for y in 0..<height {
                    let row = y * stride
                    for x in 0..<width {
                        let r = Int(source[row + 3 * x]), g = Int(source[row + 3 * x + 1]), b = Int(source[row + 3 * x + 2])
                        out[y * width + x] = UInt8((77 * r + 150 * g + 29 * b + 128) >> 8)
                    }
                }
            }
        }
        return try Image8(width: width, height: height, samples: grey)
    }
}
