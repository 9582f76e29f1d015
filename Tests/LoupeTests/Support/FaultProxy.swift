import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A TCP proxy on loopback that the network-fault tests put between an
/// agent and its manager. It forwards bytes both ways and, on command,
/// slices them into tiny writes, throttles them, stalls them (the connection
/// stays open and silent: a half-open link, which only a heartbeat timeout
/// can find), or resets every connection it carries.
final class FaultProxy: @unchecked Sendable {
    enum Mode: Equatable {
        case pass
        /// Every write cut into pieces of 1...`maxBytes` bytes, each sent on its own.
        case slice(maxBytes: Int)
        /// At most this many bytes per second each way, per connection.
        case throttle(bytesPerSecond: Int)
        /// Nothing forwarded; sockets stay open.
        case stall
    }

    struct Counters {
        var connections = 0
        var bytesUp = 0
        var bytesDown = 0
        var resets = 0
    }

    let port: Int
    private let target: Int
    private let listener: Int32
    /// One carried connection. Its sockets are closed only by the last of its
    /// two pumps to finish, so no thread ever uses a closed (or reused) descriptor.
    private final class Pair: Sendable {
        let client: Int32
        let server: Int32
        let pumpsLeft = Mutex(2)
        let cut = Atomic<Bool>(false)
        init(client: Int32, server: Int32) {
            self.client = client
            self.server = server
        }
    }

    private let state = Mutex<(mode: Mode, counters: Counters, pairs: [ObjectIdentifier: Pair], stopped: Bool)>(
        (.pass, Counters(), [:], false))

    /// Listens on an ephemeral loopback port and forwards to `targetPort`.
    init(targetPort: Int) throws {
        target = targetPort
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = Self.loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 64) == 0 else { throw TestSetupError("fault proxy: cannot listen: errno \(errno)") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        listener = fd
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    var mode: Mode {
        get { state.withLock { $0.mode } }
        set { state.withLock { $0.mode = newValue } }
    }

    var counters: Counters { state.withLock { $0.counters } }

    /// Connections carried now.
    var carried: Int { state.withLock { $0.pairs.count } }

    /// Cuts every connection carried now: the sockets are shut down and
    /// closed with SO_LINGER 0, so both ends see the connection reset.
    /// Returns how many were cut.
    @discardableResult
    func resetAll() -> Int {
        let pairs = state.withLock { state -> [Pair] in
            let pairs = Array(state.pairs.values)
            state.counters.resets += pairs.count
            return pairs
        }
        for pair in pairs {
            pair.cut.store(true, ordering: .sequentiallyConsistent)
            for fd in [pair.client, pair.server] {
                var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
                setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
                shutdown(fd, Int32(SHUT_RDWR))
            }
        }
        return pairs.count
    }

    /// Stops listening and cuts every connection; once only, so the
    /// listener's descriptor is never closed twice (it may be reused).
    func stop() {
        let first = state.withLock { state -> Bool in
            defer { state.stopped = true }
            return !state.stopped
        }
        guard first else { return }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        resetAll()
    }

    deinit { stop() }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }

    private static func reset(_ fd: Int32) {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        close(fd)
    }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if state.withLock({ $0.stopped }) { return }
                continue
            }
            let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = Self.loopback(port: target)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if connected != 0 {
                // The manager is down: the client sees its connection refused, as it would without the proxy.
                Self.reset(client)
                close(server)
                continue
            }
            let pair = Pair(client: client, server: server)
            state.withLock {
                $0.pairs[ObjectIdentifier(pair)] = pair
                $0.counters.connections += 1
            }
            Thread.detachNewThread { [self] in pump(pair, up: true) }
            Thread.detachNewThread { [self] in pump(pair, up: false) }
        }
    }

    private func pump(_ pair: Pair, up: Bool) {
        let source = up ? pair.client : pair.server, destination = up ? pair.server : pair.client
        var buffer = [UInt8](repeating: 0, count: 16384)
        var generator = SystemRandomNumberGenerator()
        while !pair.cut.load(ordering: .sequentiallyConsistent) && !state.withLock({ $0.stopped }) {
            if mode == .stall {
                usleep(20_000)
                continue
            }
            var poller = pollfd(fd: source, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, 50)
            if ready == 0 { continue }
            if ready < 0 { break }
            // Read what the current mode allows.
            let limit: Int
            switch mode {
            case .throttle(let rate): limit = max(1, min(buffer.count, rate / 20))
            default: limit = buffer.count
            }
            let count = buffer.withUnsafeMutableBytes { read(source, $0.baseAddress, limit) }
            if count <= 0 { break }
            var offset = 0
            while offset < count {
                // A stall holds even the rest of a read already made.
                while mode == .stall && !pair.cut.load(ordering: .sequentiallyConsistent) { usleep(20_000) }
                var piece = count - offset
                if case .slice(let maxBytes) = mode { piece = min(piece, Int.random(in: 1...max(1, maxBytes), using: &generator)) }
                let written = buffer.withUnsafeBytes { send(destination, $0.baseAddress! + offset, piece, Int32(MSG_NOSIGNAL)) }
                if written <= 0 { offset = -1; break }
                offset += written
                state.withLock { if up { $0.counters.bytesUp += written } else { $0.counters.bytesDown += written } }
                if case .slice = mode { usleep(200) }
            }
            if offset < 0 { break }
            if case .throttle = mode { usleep(50_000) }
        }
        // One direction ended: end the other, as TCP would; the last pump closes.
        shutdown(destination, Int32(SHUT_WR))
        shutdown(source, Int32(SHUT_RD))
        let last = pair.pumpsLeft.withLock { left -> Bool in
            left -= 1
            return left == 0
        }
        if last {
            state.withLock { _ = $0.pairs.removeValue(forKey: ObjectIdentifier(pair)) }
            close(pair.client)
            close(pair.server)
        }
    }
}
