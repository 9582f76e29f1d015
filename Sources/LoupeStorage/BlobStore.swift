import Crypto
public import Foundation

/// Content-addressed files: `blobs/ab/cd/<sha256 hex>`. A blob is written to a
/// temporary file, flushed to disk, renamed into place and the directory
/// flushed, before any database row refers to it; so a crash leaves either no
/// file or a whole one, never a row pointing at half a file.
public struct BlobStore: Sendable {
    public let root: String

    public init(root: String) throws {
        self.root = root
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    public static func hash(_ data: Data) -> String {
        SHA256.hash(data: data).hexString
    }

    public func path(for hash: String) -> String {
        let a = hash.prefix(2), b = hash.dropFirst(2).prefix(2)
        return "\(root)/\(a)/\(b)/\(hash)"
    }

    /// Stores `data` durably and returns its SHA-256 (hex).
    @discardableResult
    public func put(_ data: Data) throws(StoreError) -> String {
        let hash = Self.hash(data)
        let target = path(for: hash)
        if FileManager.default.fileExists(atPath: target) { return hash }
        let directory = (target as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw .io(path: directory, reason: "\(error)")
        }
        try Self.replaceDurably(target, with: data)
        return hash
    }

    public func get(_ hash: String) throws(StoreError) -> Data {
        guard hash.count == 64, hash.allSatisfy({ $0.isHexDigit }) else { throw .invalid("\"\(hash)\" is not a content hash") }
        do {
            return try Data(contentsOf: URL(fileURLWithPath: path(for: hash)))
        } catch {
            throw .missingBlob(hash)
        }
    }

    /// Replaces the file at `path` with `data` so that a crash leaves the old
    /// file or the new one, whole: temporary file, fsync, rename, directory fsync.
    /// `mode` applies from the first byte (0600 for a secret): the file is
    /// created with it, never widened and narrowed afterwards.
    public static func replaceDurably(_ path: String, with data: Data, mode: mode_t = 0o640) throws(StoreError) {
        let directory = (path as NSString).deletingLastPathComponent
        let temporary = directory + "/.tmp-\(UUID().uuidString)"
        try writeSynced(data, to: temporary, mode: mode)
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw .io(path: path, reason: reason)
        }
        syncDirectory(directory)
    }

    public static func writeSynced(_ data: Data, to path: String, mode: mode_t = 0o640) throws(StoreError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw .io(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        // open() applies the umask and keeps an existing file's mode: set it exactly before any byte is written.
        guard fchmod(fd, mode) == 0 else { throw .io(path: path, reason: String(cString: strerror(errno))) }
        if let failure = FileWrite.all(fd, data) {
            unlink(path)
            throw failure == ENOSPC ? .diskFull(path: path) : .io(path: path, reason: String(cString: strerror(failure)))
        }
        guard fsync(fd) == 0 else {
            let code = errno
            unlink(path)
            throw code == ENOSPC ? .diskFull(path: path) : .io(path: path, reason: String(cString: strerror(code)))
        }
    }

    public static func syncDirectory(_ path: String) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        fsync(fd)
        close(fd)
    }
}
