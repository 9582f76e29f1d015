import Foundation
public import LoupeImaging

/// The camera pixel formats Loupe negotiates, in order of preference, and
/// their conversion to 8-bit grey.
public enum CameraPixelFormat: String, Sendable, CaseIterable, Codable {
    /// Motion JPEG: each buffer is a JPEG (least USB bandwidth).
    case mjpeg = "MJPG"
    /// YUV 4:2:2, two pixels per four bytes: Y0 U Y1 V.
    case yuyv = "YUYV"
    /// 8-bit grey, one byte per pixel.
    case grey = "GREY"

    /// The V4L2 four-character code.
    public var fourCC: UInt32 {
        let bytes = Array(rawValue.utf8)
        return UInt32(bytes[0]) | UInt32(bytes[1]) << 8 | UInt32(bytes[2]) << 16 | UInt32(bytes[3]) << 24
    }

    /// The name of a four-character code, for messages.
    public static func name(of fourCC: UInt32) -> String {
        String(decoding: [0, 8, 16, 24].map { UInt8((fourCC >> UInt32($0)) & 0xFF) }, as: UTF8.self)
    }

    /// Converts one captured buffer of `width` x `height` pixels to grey.
    public func grey(from bytes: UnsafeRawBufferPointer, width: Int, height: Int, bytesPerLine: Int = 0) throws -> Image8 {
        switch self {
        case .mjpeg:
            return try JPEGCodec.decode(Data(bytes)).gray8
        case .yuyv:
            let stride = bytesPerLine > 0 ? bytesPerLine : width * 2
            guard bytes.count >= stride * (height - 1) + width * 2 else {
                throw ImageError.sizeMismatch(expected: stride * height, actual: bytes.count)
            }
            var grey = [UInt8](repeating: 0, count: width * height)
            for y in 0..<height {
                for x in 0..<width { grey[y * width + x] = bytes[y * stride + x * 2] }
            }
            return try Image8(width: width, height: height, samples: grey)
        case .grey:
            let stride = bytesPerLine > 0 ? bytesPerLine : width
            guard bytes.count >= stride * (height - 1) + width else {
                throw ImageError.sizeMismatch(expected: stride * height, actual: bytes.count)
            }
            var grey = [UInt8](repeating: 0, count: width * height)
            for y in 0..<height {
                for x in 0..<width { grey[y * width + x] = bytes[y * stride + x] }
            }
            return try Image8(width: width, height: height, samples: grey)
        }
    }
}
