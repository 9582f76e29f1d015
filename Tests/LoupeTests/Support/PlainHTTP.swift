import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// HTTP/1.1 over a plain blocking socket, for requests an attacker would
/// write: the request target is sent byte for byte (no client normalises
/// `//api` or `/./`), and the socket can be bound to another loopback source
/// address (127.0.0.2, …) to stand for another machine. One request per
/// connection. Runs on its own thread, never on the Swift task pool.
enum PlainHTTP {
    struct Response: CustomStringConvertible {
        var status: Int
        var headers: [(String, String)]
        var body: Data
        /// True when the server closed the connection (end of a stream) before the read timed out.
        var closedByServer: Bool

        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
        var text: String { String(decoding: body, as: UTF8.self) }
        var description: String { "\(status) \(text.prefix(200))" }
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Sends one request. `readBody`: false reads the head only (for endless streams).
    static func send(
        port: Int, method: String, target: String, headers: [String: String] = [:], body: Data? = nil,
        // 30 s: the answer is what is checked, not its speed; a loaded parallel run once held one past 10 s (CI, 12-07).
        from source: String = "127.0.0.1", timeout: TimeInterval = 30, readBody: Bool = true
    ) async throws -> Response {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(
                    with: Result {
                        try sendBlocking(
                            port: port, method: method, target: target, headers: headers, body: body, from: source, timeout: timeout,
                            readBody: readBody)
                    })
            }
        }
    }

    static func sendBlocking(
        port: Int, method: String, target: String, headers: [String: String], body: Data?, from source: String,
        timeout: TimeInterval, readBody: Bool
    ) throws -> Response {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - floor(timeout)) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        inet_pton(AF_INET, source, &local.sin_addr)
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw Failure(description: "bind \(source): \(String(cString: strerror(errno)))") }
        var remote = sockaddr_in()
        remote.sin_family = sa_family_t(AF_INET)
        remote.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, "127.0.0.1", &remote.sin_addr)
        let connected = withUnsafePointer(to: &remote) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw Failure(description: "connect: \(String(cString: strerror(errno)))") }

        var head = "\(method) \(target) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        if let body {
            head += "Content-Length: \(body.count)\r\n"
        } else if method != "GET" && method != "HEAD" {
            head += "Content-Length: 0\r\n"
        }
        head += "\r\n"
        var request = Data(head.utf8)
        if let body { request += body }
        try request.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                if n < 0 { if errno == EINTR { continue }; throw Failure(description: "send: \(String(cString: strerror(errno)))") }
                offset += n
            }
        }

        var received = Data()
        var closed = false
        var buffer = [UInt8](repeating: 0, count: 65536)
        func readMore() throws -> Bool {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n > 0 { received.append(contentsOf: buffer[0..<n]); return true }
            if n == 0 { closed = true; return false }
            if errno == EINTR { return true }
            if errno == EAGAIN || errno == EWOULDBLOCK { return false }
            // A reset after the response arrived is a close too.
            closed = true
            return false
        }
        let separator = Data("\r\n\r\n".utf8)
        while received.range(of: separator) == nil {
            guard try readMore() else { break }
        }
        guard let end = received.range(of: separator) else {
            throw Failure(
                description:
                    "no response head for \(method) \(target) (got \(received.count) "
                    + "bytes\(closed ? ", connection closed" : ", timed out"))"
            )
        }
        let lines = String(decoding: received[..<end.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { throw Failure(description: "bad status line \(lines[0])") }
        let fields: [(String, String)] = lines.dropFirst().compactMap { line in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        var response = Response(status: status, headers: fields, body: Data(), closedByServer: false)
        guard readBody else { return response }
        if let length = response.header("Content-Length").flatMap(Int.init) {
            while received.count - end.upperBound < length {
                guard try readMore() else { break }
            }
            response.body = Data(received[end.upperBound...].prefix(length))
        } else {
            // Chunked or endless: read until the server closes or the read times out.
            while !closed {
                guard try readMore() else { break }
            }
            response.body = Data(received[end.upperBound...])
        }
        response.closedByServer = closed || response.header("Content-Length") != nil
        return response
    }
}
