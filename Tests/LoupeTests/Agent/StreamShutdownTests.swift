import Foundation
import Testing
import LoupeTesting

/// An open page keeps two endless responses open (the result event stream
/// and the MJPEG view). A `loupe agent` must still stop promptly on SIGTERM
/// while they are open: they end with the agent instead of holding up the
/// server's graceful shutdown (systemd would otherwise wait and kill it).
@Suite(.serialized) struct StreamShutdownTests {
    /// Opens a raw HTTP/1.1 request on loopback and returns the socket once the response has begun.
    static func openStream(port: Int, path: String, token: String) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestSetupError("socket: \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw TestSetupError("connect: \(errno)") }
        let request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(token)\r\n\r\n"
        _ = request.withCString { send(fd, $0, strlen($0), 0) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let count = recv(fd, &buffer, buffer.count, 0)
        guard count > 0, String(decoding: buffer[0..<count], as: UTF8.self).hasPrefix("HTTP/1.1 200") else {
            throw TestSetupError(
                "\(path) did not answer 200: \(count > 0 ? String(decoding: buffer[0..<count], as: UTF8.self) : "errno \(errno)")")
        }
        return fd
    }

    @Test(arguments: [false, true]) func anAgentStopsOnSIGTERMWhileAPageWatchesItsStreams(camera: Bool) async throws {
        let pki = try TestPKI()
        var extra: [String: Any] = ["http": ["address": "127.0.0.1:0", "initialAdminPassword": "stream-password-1"]]
        if camera {
            extra["camera"] = [
                "source": "synthetic", "width": 320, "height": 256, "framesPerSecond": 5, "inferenceThreads": 1, "precision": "fp32",
            ]
        }
        let config = try await writeAgentConfig(pki: pki, camera: "stream-cam", port: nil, extra: extra)
        let agent = try LoupeProcess(["agent", "--config", config], log: pki.dir + "/agent.log")
        let address = try #require(try await agent.loggedAddress(after: "http listening"), "the agent never listened:\n\(agent.log)")
        let port = try #require(Int(address.split(separator: ":").last ?? ""))

        let token = try await agentToken(address, password: "stream-password-1")

        var sockets = [
            try Self.openStream(port: port, path: "/api/v1/live/events", token: token),
            try Self.openStream(port: port, path: "/api/v1/training/events", token: token),
        ]
        if camera { sockets.append(try Self.openStream(port: port, path: "/api/v1/live/stream.mjpeg?fps=2&width=160", token: token)) }
        defer { for fd in sockets { close(fd) } }

        let stopping = ContinuousClock.now
        agent.signal(SIGTERM)
        let status = await agent.waitForExit(timeout: .seconds(15))
        #expect(status == 0, "the agent did not stop within 15 s of SIGTERM with \(sockets.count) streams open:\n\(agent.log.suffix(3000))")
        print("agent (camera: \(camera)) stopped \(ContinuousClock.now - stopping) after SIGTERM with \(sockets.count) streams open")
    }
}
