import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// Reads the start of an endless HTTP response (an MJPEG or event stream)
/// over a plain socket: sends `request`, collects bytes until `enough` says
/// so or the time runs out, then closes.
enum RawHTTP {
    static func collect(
        port: Int, request: String, timeout: Duration = .seconds(20), until enough: @escaping @Sendable ([UInt8]) -> Bool
    ) async throws -> [UInt8] {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
            }
        let received = Received()
        try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: request))
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for try await chunk in inbound {
                        if enough(received.append(Array(chunk.readableBytesView))) { break }
                    }
                }
                group.addTask { try await Task.sleep(for: timeout) }
                try await group.next()
                group.cancelAll()
            }
        }
        // On a timeout, what arrived so far (for the failure message).
        return received.bytes
    }

    final class Received: Sendable {
        private let buffer = Mutex<[UInt8]>([])
        func append(_ more: [UInt8]) -> [UInt8] {
            buffer.withLock {
                $0 += more; return $0
            }
        }
        var bytes: [UInt8] { buffer.withLock { $0 } }
    }

    /// Where `needle` first occurs in `haystack` at or after `from`.
    static func find(_ needle: [UInt8], in haystack: [UInt8], from: Int = 0) -> Int? {
        guard needle.count <= haystack.count else { return nil }
        var index = from
        while index + needle.count <= haystack.count {
            if haystack[index] == needle[0] && Array(haystack[index..<(index + needle.count)]) == needle { return index }
            index += 1
        }
        return nil
    }
}
