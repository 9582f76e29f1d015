import Foundation
import LoupeStorage
import Synchronization
import Testing

/// The one write loop every durable file goes through.
@Suite struct FileWriteTests {
    @Test func everyByteOfABufferLargerThanAPipeArrives() throws {
        // A pipe holds 64 KiB: the 1 MiB write waits on the reader, who must still get every byte in order.
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        let payload = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let (readEnd, writeEnd) = (ends[0], ends[1])
        let arrived = Mutex<[UInt8]>([])
        let done = DispatchSemaphore(value: 0)
        let reader = Thread {
            var received: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 8192)
            while true {
                let n = read(readEnd, &buffer, buffer.count)
                if n <= 0 { break }
                received += buffer[0..<n]
            }
            close(readEnd)
            arrived.withLock { $0 = received }
            done.signal()
        }
        reader.start()
        #expect(FileWrite.all(writeEnd, payload) == nil)
        close(writeEnd)
        done.wait()
        let received = arrived.withLock { $0 }
        #expect(received == payload, "\(received.count) of \(payload.count) bytes arrived")
    }

    @Test func aWriteAtAnOffsetLeavesTheRestOfTheFileAlone() throws {
        let path = NSTemporaryDirectory() + "/filewrite-\(UUID().uuidString)"
        defer { unlink(path) }
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        #expect(fd >= 0)
        defer { close(fd) }
        #expect(FileWrite.all(fd, Array("abcdefgh".utf8)) == nil)
        #expect(FileWrite.all(fd, Array("XY".utf8), at: 3) == nil)
        #expect(FileWrite.all(fd, Array("!".utf8)) == nil, "pwrite left the position after the first write")
        #expect(String(decoding: try Data(contentsOf: URL(fileURLWithPath: path)), as: UTF8.self) == "abcXYfgh!")
    }

    @Test func aFailureNamesItsErrno() {
        // A descriptor open for reading only cannot be written.
        let fd = open("/dev/null", O_RDONLY)
        defer { close(fd) }
        let failure = FileWrite.all(fd, Array("x".utf8))
        #expect(failure == EBADF, "\(failure.map(FileWrite.describe) ?? "no failure")")
    }
}
