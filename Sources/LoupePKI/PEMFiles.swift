public import Foundation
import LoupeStorage
import SwiftASN1
public import X509

/// Writes and reads the PEM files of the fleet PKI.
public enum PEMFiles {
    /// Writes `text` to `path` with the given mode. Refuses to replace an
    /// existing file unless `overwrite` is set. Private keys use mode 0600.
    public static func write(_ text: String, to path: String, mode: mode_t, overwrite: Bool) throws {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        var flags = O_WRONLY | O_CREAT | O_CLOEXEC
        flags |= overwrite ? O_TRUNC : O_EXCL
        let fd = open(path, flags, mode)
        if fd < 0 {
            if errno == EEXIST { throw PKIError.fileExists(path: path) }
            throw PKIError.cannotWrite(path: path, errno: errno)
        }
        defer { close(fd) }
        // open() applies the umask and keeps an old file's mode: set it exactly.
        guard fchmod(fd, mode) == 0 else { throw PKIError.cannotWrite(path: path, errno: errno) }
        if let failure = FileWrite.all(fd, Array(text.utf8)) { throw PKIError.cannotWrite(path: path, errno: failure) }
        guard fsync(fd) == 0 else { throw PKIError.cannotWrite(path: path, errno: errno) }
    }

    /// Reads a whole text file, or throws naming it.
    public static func read(_ path: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path),
            let text = String(data: data, encoding: .utf8)
        else {
            throw PKIError.cannotRead(path: path)
        }
        return text
    }
}

extension Certificate {
    /// Reads a PEM certificate file, naming the file when it is missing or not a certificate.
    public static func load(path: String) throws -> Certificate {
        let text = try PEMFiles.read(path)
        do {
            return try Certificate(pemEncoded: text)
        } catch {
            throw PKIError.notPEM(path: path, expected: "certificate")
        }
    }
}
