import CSPNG
public import Foundation

/// PNG through libspng. Decoding checks the header against `ImageLimits`
/// before allocating pixels and bounds chunk memory, so a hostile file cannot
/// make it allocate gigabytes. 8-bit grey, RGB and 16-bit grey round-trip
/// exactly.
public enum PNGCodec {
    static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    /// Decodes grey (1–8 bit) to `.gray8`, 16-bit grey to `.gray16`, anything
    /// in colour to `.rgb8`. Alpha is dropped.
    public static func decode(_ data: Data, limits: ImageLimits = .standard) throws -> DecodedImage {
        guard !data.isEmpty else { throw ImageError.emptyData }
        guard let context = spng_ctx_new(0) else { throw ImageError.corrupt(format: "PNG", reason: "out of memory") }
        defer { spng_ctx_free(context) }
        return try data.withUnsafeBytes { bytes in
            try check(spng_set_png_buffer(context, bytes.baseAddress, bytes.count))
            try check(
                spng_set_image_limits(
                    context, UInt32(min(limits.maxWidth, Int(UInt32.max >> 1))), UInt32(min(limits.maxHeight, Int(UInt32.max >> 1)))))
            // Ancillary chunks (text, ICC) may not take more than 8 MiB.
            try check(spng_set_chunk_limits(context, 8 << 20, 8 << 20))
            var header = spng_ihdr()
            let status = spng_get_ihdr(context, &header)
            if status != 0 {
                if status == Int32(SPNG_EWIDTH.rawValue) || status == Int32(SPNG_EHEIGHT.rawValue)
                    || status == Int32(SPNG_EUSER_WIDTH.rawValue) || status == Int32(SPNG_EUSER_HEIGHT.rawValue)
                {
                    throw ImageError.tooLarge(
                        width: Self.headerDimension(bytes, offset: 16), height: Self.headerDimension(bytes, offset: 20), limit: limits)
                }
                try check(status)
            }
            let width = Int(header.width), height = Int(header.height)
            try limits.check(width: width, height: height)
            switch (header.color_type, header.bit_depth) {
            case (UInt8(SPNG_COLOR_TYPE_GRAYSCALE.rawValue), 16):
                var samples = [UInt16](repeating: 0, count: width * height)
                try samples.withUnsafeMutableBytes {
                    try check(spng_decode_image(context, $0.baseAddress, $0.count, Int32(SPNG_FMT_PNG.rawValue), 0))
                }
                return .gray16(try Image16(width: width, height: height, samples: samples))
            case (UInt8(SPNG_COLOR_TYPE_GRAYSCALE.rawValue), _):
                var samples = [UInt8](repeating: 0, count: width * height)
                try samples.withUnsafeMutableBytes {
                    try check(spng_decode_image(context, $0.baseAddress, $0.count, Int32(SPNG_FMT_G8.rawValue), 0))
                }
                return .gray8(try Image8(width: width, height: height, samples: samples))
            case (UInt8(SPNG_COLOR_TYPE_GRAYSCALE_ALPHA.rawValue), _):
                var pairs = [UInt8](repeating: 0, count: width * height * 2)
                try pairs.withUnsafeMutableBytes {
                    try check(spng_decode_image(context, $0.baseAddress, $0.count, Int32(SPNG_FMT_GA8.rawValue), 0))
                }
                let grey = stride(from: 0, to: pairs.count, by: 2).map { pairs[$0] }
                return .gray8(try Image8(width: width, height: height, samples: grey))
            default:
                var rgba = [UInt8](repeating: 0, count: width * height * 4)
                try rgba.withUnsafeMutableBytes {
                    try check(spng_decode_image(context, $0.baseAddress, $0.count, Int32(SPNG_FMT_RGBA8.rawValue), 0))
                }
                var rgb = [UInt8](repeating: 0, count: width * height * 3)
                for pixel in 0..<(width * height) {
                    rgb[pixel * 3] = rgba[pixel * 4]
                    rgb[pixel * 3 + 1] = rgba[pixel * 4 + 1]
                    rgb[pixel * 3 + 2] = rgba[pixel * 4 + 2]
                }
                return .rgb8(try Image8(width: width, height: height, channels: 3, samples: rgb))
            }
        }
    }

    /// Encodes 8-bit grey or RGB losslessly.
    public static func encode(_ image: Image8) throws -> Data {
        let colorType = image.channels == 1 ? SPNG_COLOR_TYPE_GRAYSCALE : SPNG_COLOR_TYPE_TRUECOLOR
        return try image.samples.withUnsafeBytes {
            try encode($0, width: image.width, height: image.height, colorType: colorType, bitDepth: 8)
        }
    }

    /// Encodes 16-bit grey losslessly.
    public static func encode(_ image: Image16) throws -> Data {
        try image.samples.withUnsafeBytes {
            try encode($0, width: image.width, height: image.height, colorType: SPNG_COLOR_TYPE_GRAYSCALE, bitDepth: 16)
        }
    }

    private static func encode(
        _ pixels: UnsafeRawBufferPointer, width: Int, height: Int, colorType: spng_color_type, bitDepth: UInt8
    ) throws -> Data {
        guard let context = spng_ctx_new(Int32(SPNG_CTX_ENCODER.rawValue)) else {
            throw ImageError.encodeFailed(format: "PNG", reason: "out of memory")
        }
        defer { spng_ctx_free(context) }
        func checked(_ status: Int32) throws {
            if status != 0 { throw ImageError.encodeFailed(format: "PNG", reason: String(cString: spng_strerror(status))) }
        }
        try checked(spng_set_option(context, SPNG_ENCODE_TO_BUFFER, 1))
        var header = spng_ihdr()
        header.width = UInt32(width)
        header.height = UInt32(height)
        header.bit_depth = bitDepth
        header.color_type = UInt8(colorType.rawValue)
        try checked(spng_set_ihdr(context, &header))
        try checked(
            spng_encode_image(context, pixels.baseAddress, pixels.count, Int32(SPNG_FMT_PNG.rawValue), Int32(SPNG_ENCODE_FINALIZE.rawValue))
        )
        var length = 0
        var status: Int32 = 0
        guard let buffer = spng_get_png_buffer(context, &length, &status), status == 0 else {
            throw ImageError.encodeFailed(format: "PNG", reason: String(cString: spng_strerror(status)))
        }
        defer { free(buffer) }
        return Data(bytes: buffer, count: length)
    }

    private static func check(_ status: Int32) throws {
        guard status == 0 else { throw ImageError.corrupt(format: "PNG", reason: String(cString: spng_strerror(status))) }
    }

    /// Reads a big-endian 32-bit dimension from the IHDR chunk, for the error message.
    private static func headerDimension(_ bytes: UnsafeRawBufferPointer, offset: Int) -> Int {
        guard bytes.count >= offset + 4 else { return 0 }
        return (offset..<offset + 4).reduce(0) { $0 << 8 | Int(bytes[$1]) }
    }
}
