import Foundation
import HTTPTypes
import Hummingbird
import LoupeStorage
import NIOCore
import Synchronization

extension HTTPField.Name {
    /// Set by the access middleware to the signed-in user; any value a client sends is removed first.
    static let loupeUser = HTTPField.Name("X-Loupe-User")!
}

/// Every API route except health and login needs a session: a cookie set at
/// login (HttpOnly, SameSite=Strict, Secure over HTTPS) or an
/// `Authorization: Bearer` token. Reading needs a viewer; changing anything
/// an operator; managing users an admin.
public struct AccessMiddleware<Context: RequestContext>: RouterMiddleware {
    let store: LabelStore
    static var openPaths: Set<String> { ["/api/v1/health", "/api/v1/login"] }

    public init(store: LabelStore) { self.store = store }

    public func handle(_ input: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var head = input.head
        head.headerFields[.loupeUser] = nil
        let request = Request(head: head, body: input.body)
        let path = request.uri.path
        if Self.openPaths.contains(path) || !path.hasPrefix("/api/") { return try await next(request, context) }
        guard let token = Self.token(request), let session = try? store.session(token: token) else {
            throw HTTPError(.unauthorized, headers: [.wwwAuthenticate: "Bearer realm=\"loupe\""], message: "sign in first (POST /api/v1/login)")
        }
        let needed = Self.requiredRole(method: request.method, path: path)
        guard session.role >= needed else {
            throw HTTPError(.forbidden, message: "user \(session.user) is a \(session.role.rawValue); this needs an \(needed.rawValue)")
        }
        head.headerFields[.loupeUser] = session.user
        return try await next(Request(head: head, body: input.body), context)
    }

    static func requiredRole(method: HTTPRequest.Method, path: String) -> AccessRole {
        if path.hasPrefix("/api/v1/users") { return .admin }
        if method == .get || method == .head { return .viewer }
        if path == "/api/v1/logout" || path == "/api/v1/session/password" { return .viewer }
        return .operator
    }

    static func token(_ request: Request) -> String? {
        if let authorization = request.headers[.authorization], authorization.hasPrefix("Bearer ") {
            return String(authorization.dropFirst(7))
        }
        for header in request.headers[values: .cookie] {
            for part in header.split(separator: ";") {
                let pair = part.trimmingCharacters(in: .whitespaces)
                if pair.hasPrefix(AccessAPI.cookieName + "=") { return String(pair.dropFirst(AccessAPI.cookieName.count + 1)) }
            }
        }
        return nil
    }
}

/// Login, logout, the session, password changes and user management.
public final class AccessAPI: Sendable {
    public static let cookieName = "loupe_session"
    public let store: LabelStore
    public let sessionLifetime: TimeInterval
    public let secureCookies: Bool
    /// Failed logins per user name: after 5 within 5 minutes, that name is refused until the window passes.
    private let failures = FailureLog()
    public static let maximumFailures = 5
    public static let failureWindow: TimeInterval = 300

    public init(store: LabelStore, sessionLifetime: TimeInterval, secureCookies: Bool) {
        self.store = store
        self.sessionLifetime = sessionLifetime
        self.secureCookies = secureCookies
    }

    public func register(on router: Router<some RequestContext>) {
        let api = router.group("api/v1")
        let (store, failures, sessionLifetime, secureCookies) = (self.store, self.failures, self.sessionLifetime, self.secureCookies)
        api.post("login") { request, _ in
            let login = try await LabelAPI.decode(Login.self, request, limit: 4096)
            let now = Date()
            let recent = failures.table.withLock { table -> Int in
                table[login.user] = (table[login.user] ?? []).filter { now.timeIntervalSince($0) < Self.failureWindow }
                return table[login.user]!.count
            }
            guard recent < Self.maximumFailures else {
                throw HTTPError(.tooManyRequests, message: "too many failed sign-ins for \(login.user); wait 5 minutes")
            }
            let result = try LabelAPI.mapped { try store.signIn(user: login.user, password: login.password, lifetime: sessionLifetime) }
            guard let (token, session) = result else {
                failures.table.withLock { $0[login.user, default: []].append(now) }
                throw HTTPError(.unauthorized, message: "wrong user name or password")
            }
            failures.table.withLock { $0[login.user] = nil }
            var response = try LabelAPI.json(SessionJSON(user: session.user, role: session.role, expiresAt: session.expiresAt, token: token))
            response.headers[.setCookie] = "\(Self.cookieName)=\(token); Path=/; HttpOnly; SameSite=Strict; Max-Age=\(Int(sessionLifetime))\(secureCookies ? "; Secure" : "")"
            return response
        }
        api.post("logout") { request, _ in
            if let token = AccessMiddleware<BasicRequestContext>.token(request) { try LabelAPI.mapped { try store.signOut(token: token) } }
            var response = try LabelAPI.json(["signedOut": true])
            response.headers[.setCookie] = "\(Self.cookieName)=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
            return response
        }
        api.get("session") { request, _ in
            guard let token = AccessMiddleware<BasicRequestContext>.token(request), let session = try LabelAPI.mapped({ try store.session(token: token) }) else {
                throw HTTPError(.unauthorized, message: "sign in first")
            }
            return try LabelAPI.json(SessionJSON(user: session.user, role: session.role, expiresAt: session.expiresAt, token: nil))
        }
        api.put("session/password") { request, _ in
            let change = try await LabelAPI.decode(PasswordChange.self, request, limit: 4096)
            guard let user = request.headers[.loupeUser] else { throw HTTPError(.unauthorized, message: "sign in first") }
            return try LabelAPI.mapped {
                guard try store.signIn(user: user, password: change.current, lifetime: 1) != nil else {
                    throw StoreError.invalid("the current password is wrong")
                }
                let role = try store.users().first { $0.name == user }?.role ?? .viewer
                try store.setUser(user, password: change.new, role: role)
                return try LabelAPI.json(["changed": true])
            }
        }
        api.get("users") { _, _ in
            try LabelAPI.mapped { try LabelAPI.json(try store.users().map { UserJSON(name: $0.name, role: $0.role, passwordChangedAt: $0.passwordChangedAt) }) }
        }
        api.put("users/:name") { request, context in
            let name = context.parameters.get("name") ?? ""
            let user = try await LabelAPI.decode(UserChange.self, request, limit: 4096)
            return try LabelAPI.mapped {
                try store.setUser(name, password: user.password, role: user.role)
                return try LabelAPI.json(UserJSON(name: name, role: user.role, passwordChangedAt: Date()))
            }
        }
        api.delete("users/:name") { _, context in
            let name = context.parameters.get("name") ?? ""
            return try LabelAPI.mapped {
                try store.removeUser(name)
                return try LabelAPI.json(["removed": name])
            }
        }
    }

    struct Login: Codable {
        var user: String
        var password: String
    }

    struct SessionJSON: Codable {
        var user: String
        var role: AccessRole
        var expiresAt: Date
        /// For scripts (Authorization: Bearer); the page uses the cookie.
        var token: String?
    }

    struct PasswordChange: Codable {
        var current: String
        var new: String
    }

    struct UserChange: Codable {
        var password: String
        var role: AccessRole
    }

    struct UserJSON: Codable {
        var name: String
        var role: AccessRole
        var passwordChangedAt: Date
    }
}

/// Recent failed sign-ins per user name.
final class FailureLog: Sendable {
    let table = Mutex<[String: [Date]]>([:])
}
