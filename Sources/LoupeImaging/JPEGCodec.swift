import CTurboJPEG
public import Foundation

/// JPEG through libjpeg-turbo's TurboJPEG API. The header is read and
/// checked against `ImageLimits` before pixel memory is allocated.
public enum JPEGCodec {
    /// Decodes a greyscale JPEG to `.gray8` and any other to `.rgb8`.
    public static func decode(_ data: Data, limits: ImageLimits = .standard) throws -> DecodedImage {
        guard !data.isEmpty else { throw ImageError.emptyData }
        guard let handle = tjInitDecompress() else { throw ImageError.corrupt(format: "JPEG", reason: "cannot create a decoder") }
        defer { tjDestroy(handle) }
        return try data.withUnsafeBytes { raw in
            let bytes = raw.bindMemory(to: UInt8.self)
            var width: Int32 = 0, height: Int32 = 0, subsampling: Int32 = 0, colorspace: Int32 = 0
            guard tjDecompressHeader3(handle, bytes.baseAddress, UInt(bytes.count), &width, &height, &subsampling, &colorspace) == 0 else {
                throw ImageError.corrupt(format: "JPEG", reason: message(handle))
            }
            try limits.check(width: Int(width), height: Int(height))
            let scans = scanCount(bytes)
            guard scans <= limits.maxScans else { throw ImageError.tooManyScans(count: scans, limit: limits.maxScans) }
            let grey = colorspace == Int32(TJCS_GRAY.rawValue)
            let channels = grey ? 1 : 3
            var samples = [UInt8](repeating: 0, count: Int(width) * Int(height) * channels)
            let format = grey ? TJPF_GRAY : TJPF_RGB
            let status = samples.withUnsafeMutableBufferPointer { pixels in
                tjDecompress2(handle, bytes.baseAddress, UInt(bytes.count), pixels.baseAddress, width, 0, height, format.rawValue, 0)
            }
            // A warning (e.g. premature end of data) still yields pixels; a truncated
            // file is an error the operator should see, so only a clean decode passes.
            guard status == 0 else { throw ImageError.corrupt(format: "JPEG", reason: message(handle)) }
            let image = try Image8(width: Int(width), height: Int(height), channels: channels, samples: samples)
            return grey ? .gray8(image) : .rgb8(image)
        }
    }

    /// Encodes 8-bit grey or RGB at `quality` (1–100).
    public static func encode(_ image: Image8, quality: Int = 90) throws -> Data {
        guard let handle = tjInitCompress() else { throw ImageError.encodeFailed(format: "JPEG", reason: "cannot create an encoder") }
        defer { tjDestroy(handle) }
        var output: UnsafeMutablePointer<UInt8>?
        var length: UInt = 0
        let format = image.channels == 1 ? TJPF_GRAY : TJPF_RGB
        let subsampling = image.channels == 1 ? TJSAMP_GRAY : TJSAMP_420
        let status = image.samples.withUnsafeBufferPointer { pixels in
            tjCompress2(
                handle, pixels.baseAddress, Int32(image.width), 0, Int32(image.height), format.rawValue,
                &output, &length, Int32(subsampling.rawValue), Int32(max(1, min(100, quality))), 0)
        }
        defer { if let output { tjFree(output) } }
        guard status == 0, let output else { throw ImageError.encodeFailed(format: "JPEG", reason: message(handle)) }
        return Data(bytes: output, count: Int(length))
    }

    /// The number of scans (SOS markers) in a JPEG, from a walk over its
    /// marker segments and entropy-coded data. TurboJPEG 2.1 (Debian 12) has
    /// no scan limit of its own, so the file is counted before it is decoded.
    static func scanCount(_ bytes: UnsafeBufferPointer<UInt8>) -> Int {
        let n = bytes.count
        var index = 2  // after SOI
        var scans = 0
        while index + 1 < n {
            guard bytes[index] == 0xFF else { index += 1; continue }
            let marker = bytes[index + 1]
            if marker == 0xFF { index += 1; continue }  // fill byte
            if marker == 0xD9 { break }  // EOI
            if marker == 0x00 || marker == 0x01 || (0xD0...0xD7).contains(marker) { index += 2; continue }
            guard index + 3 < n else { break }
            let length = Int(bytes[index + 2]) << 8 | Int(bytes[index + 3])
            index += 2 + length
            guard marker == 0xDA else { continue }
            scans += 1
            // Entropy-coded data runs to the next marker that is neither a stuffed 0xFF00 nor a restart.
            while index + 1 < n, !(bytes[index] == 0xFF && bytes[index + 1] != 0 && !(0xD0...0xD7).contains(bytes[index + 1])) {
                index += 1
            }
        }
        return scans
    }

    private static func message(_ handle: tjhandle) -> String {
        String(cString: tjGetErrorStr2(handle))
    }
}

/// Reads and writes image files, picking the codec from the bytes.
public enum ImageFile {
    /// Decodes PNG or JPEG data, telling them apart by their signature.
    public static func decode(_ data: Data, limits: ImageLimits = .standard) throws -> DecodedImage {
        guard !data.isEmpty else { throw ImageError.emptyData }
        if data.starts(with: PNGCodec.signature) { return try PNGCodec.decode(data, limits: limits) }
        if data.starts(with: [0xFF, 0xD8]) { return try JPEGCodec.decode(data, limits: limits) }
        throw ImageError.unknownFormat
    }

    /// Reads and decodes a file; every error names the path.
    public static func read(_ path: String, limits: ImageLimits = .standard) throws -> DecodedImage {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ImageError.file(path: path, reason: FileManager.default.fileExists(atPath: path) ? "unreadable" : "no such file")
        }
        do {
            return try decode(data, limits: limits)
        } catch let error as ImageError {
            throw ImageError.inFile(path: path, error)
        }
    }
}
