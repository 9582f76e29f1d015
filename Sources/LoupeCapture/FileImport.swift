import Foundation
public import LoupeImaging
import Synchronization

/// "Import From Library": frames from a file, every PNG/JPEG in a folder, or
/// a glob such as `/data/line3/*.jpg`, in name order. Unreadable files fail
/// with an error naming the file.
public final class FileImport: FrameSource {
    public let files: [String]
    private let position = Mutex(0)
    private let limits: ImageLimits
    /// Start again from the first file after the last (a live replay).
    public let loops: Bool

    public init(_ pattern: String, loops: Bool = false, limits: ImageLimits = .standard) throws {
        self.files = try Self.expand(pattern)
        self.loops = loops
        self.limits = limits
    }

    public func nextFrame() async throws -> CapturedFrame? {
        let index: Int? = position.withLock { position in
            guard loops || position < files.count else { return nil }
            position += 1
            return position
        }
        guard let index else { return nil }
        let path = files[(index - 1) % files.count]
        return CapturedFrame(sequence: index, image: try ImageFile.read(path, limits: limits).gray8, origin: path)
    }

    static let imageExtensions: Set<String> = ["png", "jpg", "jpeg"]

    /// The image files a pattern names.
    public static func expand(_ pattern: String) throws -> [String] {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: pattern, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { return [pattern] }
            let names = try FileManager.default.contentsOfDirectory(atPath: pattern)
            let files = names.filter { imageExtensions.contains(($0 as NSString).pathExtension.lowercased()) }
                .sorted().map { (pattern as NSString).appendingPathComponent($0) }
            guard !files.isEmpty else { throw CaptureError.noFiles(pattern: pattern) }
            return files
        }
        var matches = glob_t()
        defer { globfree(&matches) }
        guard glob(pattern, 0, nil, &matches) == 0 else { throw CaptureError.noFiles(pattern: pattern) }
        let files = (0..<Int(matches.gl_pathc)).compactMap { matches.gl_pathv[$0].map { String(cString: $0) } }
            .filter { imageExtensions.contains(($0 as NSString).pathExtension.lowercased()) }
        guard !files.isEmpty else { throw CaptureError.noFiles(pattern: pattern) }
        return files.sorted()
    }
}
