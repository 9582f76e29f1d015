import Foundation
import LoupeCapture
import LoupeImaging
import Testing

@Suite struct CaptureTests {
    @Test func aMissingCameraIsNamed() throws {
        #expect(throws: CaptureError.noDevice(path: "/dev/video-loupe-test-missing")) {
            try V4L2Camera(path: "/dev/video-loupe-test-missing")
        }
    }

    @Test func aFileThatIsNoCameraIsRefusedByName() throws {
        do {
            _ = try V4L2Camera(path: "/dev/null")
            Issue.record("/dev/null opened as a camera")
        } catch let error as CaptureError {
            guard case .device(let path, let reason) = error else { Issue.record("wrong error \(error)"); return }
            #expect(path == "/dev/null")
            #expect(reason.contains("not a V4L2 device"), "\(reason)")
        }
    }

    @Test func yuyvAndGreyBuffersBecomeTheirLumaPlane() throws {
        var generator = SeededGenerator(seed: 2)
        let width = 6, height = 3
        let luma = (0..<(width * height)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        // YUYV with padding at the end of each line, as drivers deliver it.
        let stride = width * 2 + 4
        var yuyv = [UInt8](repeating: 0xEE, count: stride * height)
        for y in 0..<height {
            for x in 0..<width {
                yuyv[y * stride + x * 2] = luma[y * width + x]
                yuyv[y * stride + x * 2 + 1] = x % 2 == 0 ? 90 : 200  // U, V
            }
        }
        let fromYUYV = try yuyv.withUnsafeBytes {
            try CameraPixelFormat.yuyv.grey(from: $0, width: width, height: height, bytesPerLine: stride)
        }
        #expect(fromYUYV.samples == luma)
        let fromGrey = try luma.withUnsafeBytes { try CameraPixelFormat.grey.grey(from: $0, width: width, height: height) }
        #expect(fromGrey.samples == luma)
        let short = [UInt8](repeating: 0, count: 10)
        #expect(throws: ImageError.self) {
            try short.withUnsafeBytes { try CameraPixelFormat.yuyv.grey(from: $0, width: width, height: height) }
        }
    }

    @Test func mjpegBuffersDecode() throws {
        var image = try Image8(width: 32, height: 16)
        for y in 0..<16 { for x in 0..<32 { image[x, y] = UInt8(x * 8) } }
        let jpeg = try JPEGCodec.encode(image, quality: 95)
        let decoded = try jpeg.withUnsafeBytes { try CameraPixelFormat.mjpeg.grey(from: $0, width: 32, height: 16) }
        #expect(decoded.width == 32 && decoded.height == 16)
        #expect(zip(decoded.samples, image.samples).allSatisfy { abs(Int($0) - Int($1)) <= 6 })
        #expect(CameraPixelFormat.name(of: CameraPixelFormat.mjpeg.fourCC) == "MJPG")
    }

    @Test func fileImportTakesAFileAFolderOrAGlob() async throws {
        let folder = NSTemporaryDirectory() + "loupe-import-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let image = try Image8(width: 8, height: 4, fill: 99)
        try PNGCodec.encode(image).write(to: URL(fileURLWithPath: folder + "/b.png"))
        try JPEGCodec.encode(image).write(to: URL(fileURLWithPath: folder + "/a.jpg"))
        try Data("notes".utf8).write(to: URL(fileURLWithPath: folder + "/readme.txt"))
        #expect(try FileImport(folder).files == [folder + "/a.jpg", folder + "/b.png"])
        #expect(try FileImport(folder + "/*.png").files == [folder + "/b.png"])
        #expect(try FileImport(folder + "/b.png").files == [folder + "/b.png"])
        #expect(throws: CaptureError.noFiles(pattern: folder + "/*.bmp")) { try FileImport(folder + "/*.bmp") }

        let source = try FileImport(folder)
        let first = try #require(try await source.nextFrame())
        #expect(first.sequence == 1 && first.origin == folder + "/a.jpg" && first.image.width == 8)
        _ = try await source.nextFrame()
        #expect(try await source.nextFrame() == nil, "an import ends")

        try Data([0x89, 0x50]).write(to: URL(fileURLWithPath: folder + "/c.png"))
        let broken = try FileImport(folder + "/c.png")
        await #expect(throws: ImageError.inFile(path: folder + "/c.png", .unknownFormat)) { try await broken.nextFrame() }
    }
}
