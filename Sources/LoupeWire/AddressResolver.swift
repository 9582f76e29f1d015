#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOPosix

/// Resolves a host name to every TCP address it has, in the resolver's order.
///
/// Clients try these one after another instead of racing them: NIO's racing
/// connect cannot hand back an async channel safely when one attempt loses
/// (apple/swift-nio#2637), and a manager is usually reachable on the first.
enum AddressResolver {
    static func resolve(host: String, port: Int) async throws -> [SocketAddress] {
        if let literal = try? SocketAddress(ipAddress: host, port: port) {
            return [literal]
        }
        return try await NIOThreadPool.singleton.runIfActive {
            var hints = addrinfo()
            hints.ai_family = AF_UNSPEC
            #if canImport(Glibc)
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            #else
            hints.ai_socktype = SOCK_STREAM
            #endif
            var list: UnsafeMutablePointer<addrinfo>?
            let status = getaddrinfo(host, String(port), &hints, &list)
            guard status == 0, let first = list else {
                throw WireError.unreachable(
                    address: "\(host):\(port)", reason: "cannot resolve host: \(String(cString: gai_strerror(status)))")
            }
            defer { freeaddrinfo(first) }
            var addresses: [SocketAddress] = []
            var cursor: UnsafeMutablePointer<addrinfo>? = first
            while let entry = cursor {
                if let raw = entry.pointee.ai_addr {
                    switch entry.pointee.ai_family {
                    case AF_INET:
                        let address = raw.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee }
                        addresses.append(SocketAddress(address, host: host))
                    case AF_INET6:
                        let address = raw.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee }
                        addresses.append(SocketAddress(address, host: host))
                    default:
                        break
                    }
                }
                cursor = entry.pointee.ai_next
            }
            guard !addresses.isEmpty else {
                throw WireError.unreachable(address: "\(host):\(port)", reason: "host has no TCP address")
            }
            return addresses
        }
    }
}
