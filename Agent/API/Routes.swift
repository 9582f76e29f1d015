import Foundation
public import HTTPTypes
public import Hummingbird
public import NIOCore
import Synchronization

/// Who may call a route. Declared where the route is registered
/// (`AgentRoutes.get(_:_:use:)` and its siblings), never derived from the
/// request's path string.
public enum RouteAccess: Sendable, Hashable, CustomStringConvertible {
    /// No session needed: the page's files, health and login.
    case open
    /// A session whose role is at least this one.
    case role(AccessRole)

    public static let viewer = RouteAccess.role(.viewer)
    public static let `operator` = RouteAccess.role(.operator)
    public static let admin = RouteAccess.role(.admin)

    public var description: String {
        switch self {
        case .open: "open"
        case .role(let role): role.rawValue
        }
    }
}

/// The agent's request context: the client's address (for sign-in
/// throttling) and, once the access middleware has checked it, the session.
public struct AgentRequestContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?
    /// Set by `AccessMiddleware` on routes that need a session.
    public var session: Session?
    /// The SHA-256 of the session's token (what the store keys sessions by).
    public var sessionKey: String?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }

    /// The client's IP address as text ("unknown" when the channel has none).
    public var clientAddress: String { remoteAddress?.ipAddress ?? "unknown" }
}

public typealias AgentRouter = Router<AgentRequestContext>

/// Every route's declared access, keyed by method and the route's path as
/// the router stores it (`/api/v1/captures/{number}`). The access middleware
/// looks up the route the router matched; the security tests enumerate it.
public final class RouteTable: Sendable {
    public struct Route: Sendable, Hashable {
        public var method: HTTPRequest.Method
        /// The router's pattern, parameters as `{name}` (`/api/v1/captures/{number}`).
        public var path: String
        public var access: RouteAccess
    }

    private let routes = Mutex<[String: Route]>([:])

    public init() {}

    static func key(_ method: HTTPRequest.Method, _ path: String) -> String { "\(method.rawValue) \(path)" }

    func declare(_ route: Route) {
        routes.withLock { table in
            let key = Self.key(route.method, route.path)
            precondition(table[key] == nil, "route \(key) is registered twice")
            table[key] = route
        }
    }

    /// The declared access of the route the router matched, if any.
    public func access(method: HTTPRequest.Method, path: String) -> RouteAccess? {
        routes.withLock { $0[Self.key(method, path)]?.access }
    }

    /// Every registered route, sorted by path then method.
    public var all: [Route] {
        routes.withLock { Array($0.values) }.sorted { ($0.path, $0.method.rawValue) < ($1.path, $1.method.rawValue) }
    }
}

/// Registers the agent's routes, each with its access, on one router. The
/// router's access middleware (`AgentHTTP.router`) enforces the access of
/// the route it matched; a route that reached the router some other way has
/// no declared access and is refused to everyone.
public struct AgentRoutes {
    public let router: AgentRouter
    public let table: RouteTable
    let prefix: RouterPath

    public init(router: AgentRouter, table: RouteTable = RouteTable()) {
        self.router = router
        self.table = table
        self.prefix = ""
    }

    private init(router: AgentRouter, table: RouteTable, prefix: RouterPath) {
        self.router = router
        self.table = table
        self.prefix = prefix
    }

    /// Routes under a path prefix (`api/v1`).
    public func group(_ path: RouterPath) -> AgentRoutes {
        AgentRoutes(router: router, table: table, prefix: prefix.appendingPath(path))
    }

    public typealias Handler<Output: ResponseGenerator> = @Sendable (Request, AgentRequestContext) async throws -> Output

    @discardableResult
    public func on(
        _ path: RouterPath, method: HTTPRequest.Method, _ access: RouteAccess, use handler: @escaping Handler<some ResponseGenerator>
    ) -> Self {
        let full = prefix.appendingPath(path)
        table.declare(.init(method: method, path: full.description, access: access))
        router.on(full, method: method, use: handler)
        return self
    }

    @discardableResult
    public func get(_ path: RouterPath, _ access: RouteAccess, use handler: @escaping Handler<some ResponseGenerator>) -> Self {
        on(path, method: .get, access, use: handler)
    }

    @discardableResult
    public func post(_ path: RouterPath, _ access: RouteAccess, use handler: @escaping Handler<some ResponseGenerator>) -> Self {
        on(path, method: .post, access, use: handler)
    }

    @discardableResult
    public func put(_ path: RouterPath, _ access: RouteAccess, use handler: @escaping Handler<some ResponseGenerator>) -> Self {
        on(path, method: .put, access, use: handler)
    }

    @discardableResult
    public func delete(_ path: RouterPath, _ access: RouteAccess, use handler: @escaping Handler<some ResponseGenerator>) -> Self {
        on(path, method: .delete, access, use: handler)
    }
}
