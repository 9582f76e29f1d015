import Foundation
import LoupeCapture
import LoupeImaging
import Testing

@Suite struct ImageCodecTests {
    private func random<Sample: FixedWidthInteger & UnsignedInteger & Sendable>(
        _: Sample.Type, width: Int, height: Int, channels: Int, seed: UInt64
    ) throws -> Raster<Sample> {
        var generator = SeededGenerator(seed: seed)
        let samples = (0..<(width * height * channels)).map { _ in Sample(truncatingIfNeeded: generator.next()) }
        return try Raster(width: width, height: height, channels: channels, samples: samples)
    }

    @Test func pngRoundTripsBitExactForEveryKind() throws {
        let grey = try random(UInt8.self, width: 37, height: 23, channels: 1, seed: 1)
        #expect(try PNGCodec.decode(PNGCodec.encode(grey)) == .gray8(grey))
        let rgb = try random(UInt8.self, width: 31, height: 17, channels: 3, seed: 2)
        #expect(try PNGCodec.decode(PNGCodec.encode(rgb)) == .rgb8(rgb))
        let deep = try random(UInt16.self, width: 29, height: 19, channels: 1, seed: 3)
        #expect(try PNGCodec.decode(PNGCodec.encode(deep)) == .gray16(deep))
    }

    @Test func sixteenBitSamplesAreReadInPNGByteOrder() throws {
        // A 2x1 16-bit grey PNG made by hand: samples 0x0102 and 0xFF00, stored big-endian as PNG requires.
        let png = HandMadePNG.gray16(width: 2, height: 1, bigEndianRows: [[0x01, 0x02, 0xFF, 0x00]])
        #expect(try PNGCodec.decode(png) == .gray16(try Image16(width: 2, height: 1, samples: [0x0102, 0xFF00])))
        // And our encoder writes the same bytes for the same samples.
        let ours = try PNGCodec.encode(Image16(width: 2, height: 1, samples: [0x0102, 0xFF00]))
        #expect(try PNGCodec.decode(ours) == PNGCodec.decode(png))
    }

    @Test func jpegRoundTripsWithinCompressionError() throws {
        var gradient = try Image8(width: 64, height: 48, channels: 1)
        for y in 0..<48 { for x in 0..<64 { gradient[x, y] = UInt8((x * 4 + y * 2) & 0xFF) } }
        guard case .gray8(let decoded) = try JPEGCodec.decode(JPEGCodec.encode(gradient, quality: 95)) else {
            Issue.record("grey JPEG did not decode as grey")
            return
        }
        let worst = zip(decoded.samples, gradient.samples).map { abs(Int($0) - Int($1)) }.max() ?? 0
        #expect(worst <= 8, "largest difference \(worst)")
    }

    @Test func emptyGarbageAndTruncatedDataGetNamedErrors() throws {
        #expect(throws: ImageError.emptyData) { try ImageFile.decode(Data()) }
        #expect(throws: ImageError.unknownFormat) { try ImageFile.decode(Data("not an image at all".utf8)) }
        let png = try PNGCodec.encode(random(UInt8.self, width: 64, height: 64, channels: 1, seed: 4))
        #expect(throws: ImageError.self) { try ImageFile.decode(png.prefix(png.count / 2)) }
        do {
            _ = try ImageFile.decode(png.prefix(png.count / 2))
        } catch let error as ImageError {
            guard case .corrupt(let format, _) = error else { Issue.record("wrong error \(error)"); return }
            #expect(format == "PNG")
        }
        let jpeg = try JPEGCodec.encode(random(UInt8.self, width: 64, height: 64, channels: 3, seed: 5))
        do {
            _ = try ImageFile.decode(jpeg.prefix(jpeg.count / 2))
            Issue.record("a truncated JPEG decoded")
        } catch let error as ImageError {
            guard case .corrupt(let format, _) = error else { Issue.record("wrong error \(error)"); return }
            #expect(format == "JPEG")
        }
    }

    @Test func decompressionBombsAreRefusedBeforeAllocating() throws {
        let before = peakResidentBytes()
        let bomb = HandMadePNG.gray16(width: 100_000, height: 100_000, bigEndianRows: [])
        #expect(throws: ImageError.tooLarge(width: 100_000, height: 100_000, limit: .standard)) { try ImageFile.decode(bomb) }

        // A real JPEG whose frame header is edited to claim 60000 x 60000 pixels.
        var jpeg = try JPEGCodec.encode(random(UInt8.self, width: 16, height: 16, channels: 1, seed: 6))
        let sof = try #require(jpeg.indices.first { jpeg[$0] == 0xFF && jpeg[$0 + 1] == 0xC0 })
        jpeg[sof + 5] = 0xEA; jpeg[sof + 6] = 0x60  // height 60000
        jpeg[sof + 7] = 0xEA; jpeg[sof + 8] = 0x60  // width 60000
        #expect(throws: ImageError.tooLarge(width: 60_000, height: 60_000, limit: .standard)) { try ImageFile.decode(jpeg) }
        #expect(peakResidentBytes() - before < 256 << 20, "decoding the bombs must not allocate their pixels")
    }

    @Test func fileErrorsNameThePath() throws {
        let folder = NSTemporaryDirectory() + "loupe-images-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        #expect(throws: ImageError.file(path: folder + "/missing.png", reason: "no such file")) {
            try ImageFile.read(folder + "/missing.png")
        }
        _ = FileManager.default.createFile(atPath: folder + "/empty.png", contents: Data())
        #expect(throws: ImageError.inFile(path: folder + "/empty.png", .emptyData)) { try ImageFile.read(folder + "/empty.png") }
    }

    @Test func neuSegImagesAndMasksDecode() throws {
        let root = NEUSeg.root
        guard FileManager.default.fileExists(atPath: root) else {
            print("skipped: NEU-Seg not found at \(root) (the shared datasets folder sits beside the checkout)")
            return
        }
        let names = try FileManager.default.contentsOfDirectory(atPath: root + "/images/test").sorted().prefix(20)
        #expect(names.count == 20)
        for name in names {
            let image = try ImageFile.read(root + "/images/test/" + name).gray8
            #expect(image.width == 200 && image.height == 200)
            let maskName = (name as NSString).deletingPathExtension + ".png"
            guard case .gray8(let mask) = try ImageFile.read(root + "/annotations/test/" + maskName) else {
                Issue.record("\(maskName) is not an 8-bit grey mask")
                continue
            }
            #expect(mask.width == 200 && mask.height == 200)
            #expect(mask.samples.allSatisfy { $0 <= 3 }, "\(maskName) has class values above 3")
        }
    }
}

/// Where the shared NEU-Seg copy lives: ../shared/datasets/neu-seg beside the checkout.
enum NEUSeg {
    static var root: String {
        ((Repository.root as NSString).deletingLastPathComponent as NSString).appendingPathComponent("shared/datasets/neu-seg")
    }
}

/// Largest resident set this process has had, in bytes.
func peakResidentBytes() -> Int {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return usage.ru_maxrss * 1024
}

/// Builds PNG files byte by byte (stored deflate blocks), independent of libspng.
enum HandMadePNG {
    static func gray16(width: Int, height: Int, bigEndianRows: [[UInt8]]) -> Data {
        var png = Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        var header = Data()
        header.append(bigEndian: UInt32(width))
        header.append(bigEndian: UInt32(height))
        header.append(contentsOf: [16, 0, 0, 0, 0])  // 16-bit, greyscale, deflate, no filter, no interlace
        png.append(chunk: "IHDR", header)
        var raw = Data()
        for row in bigEndianRows { raw.append(0); raw.append(contentsOf: row) }
        var zlib = Data([0x78, 0x01, 0x01])
        zlib.append(contentsOf: [UInt8(raw.count & 0xFF), UInt8(raw.count >> 8), UInt8(~raw.count & 0xFF), UInt8((~raw.count >> 8) & 0xFF)])
        zlib.append(raw)
        var a: UInt32 = 1, b: UInt32 = 0
        for byte in raw { a = (a + UInt32(byte)) % 65521; b = (b + a) % 65521 }
        zlib.append(bigEndian: b << 16 | a)
        png.append(chunk: "IDAT", zlib)
        png.append(chunk: "IEND", Data())
        return png
    }
}

private extension Data {
    mutating func append(bigEndian value: UInt32) {
        Swift.withUnsafeBytes(of: value.bigEndian) { append(contentsOf: $0) }
    }

    mutating func append(chunk type: String, _ body: Data) {
        append(bigEndian: UInt32(body.count))
        let typed = Data(type.utf8) + body
        append(typed)
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in typed {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = (crc >> 1) ^ (0xEDB8_8320 & (0 &- (crc & 1))) }
        }
        append(bigEndian: ~crc)
    }
}
