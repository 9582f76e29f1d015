public import Foundation

/// The one loop that puts a whole buffer into a file: a short write goes on from where it stopped, an
/// interrupted one is retried. Blob files, PEM files, model downloads and training scratch files all write
/// through it.
public enum FileWrite {
    /// Writes every byte of `bytes` at the file's position, or at `offset` (`pwrite`, which leaves the position
    /// alone). Nil, or the errno that stopped it (`ENOSPC`: the disk is full).
    public static func all(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer, at offset: off_t? = nil) -> Int32? {
        guard let base = bytes.baseAddress else { return nil }
        var done = 0
        while done < bytes.count {
            let written =
                if let offset { pwrite(descriptor, base + done, bytes.count - done, offset + off_t(done)) } else {
                    write(descriptor, base + done, bytes.count - done)
                }
            if written < 0 {
                if errno == EINTR { continue }
                return errno
            }
            // A regular file takes at least one byte or fails; zero would loop for ever.
            guard written > 0 else { return EIO }
            done += written
        }
        return nil
    }

    /// `all(_:_:at:)` for anything whose bytes are contiguous (Data, [UInt8]).
    public static func all(_ descriptor: Int32, _ data: some ContiguousBytes, at offset: off_t? = nil) -> Int32? {
        data.withUnsafeBytes { all(descriptor, $0, at: offset) }
    }

    /// The errno in words.
    public static func describe(_ code: Int32) -> String { String(cString: strerror(code)) }
}
