public import Foundation
import HTTPTypes
public import Hummingbird
import Logging
import LoupeStorage
import NIOCore
import Synchronization

extension HTTPField.Name {
    /// Set by the access middleware to the signed-in user; any value a client sends is removed first.
    static let loupeUser = HTTPField.Name("X-Loupe-User")!
}

/// Access control, decided by the route the router matched: the access
/// declared where the route was registered (`AgentRoutes`), looked up by the
/// matched route's pattern, never by testing the request's path string. A
/// path no route matches is 404 for everyone; a route with no declared
/// access is refused to everyone.
///
/// A session comes from the cookie set at login (HttpOnly, SameSite=Strict,
/// Secure over HTTPS) or an `Authorization: Bearer` token. A changing request
/// (not GET or HEAD) must be same-origin: a cross-site `Origin` or
/// `Sec-Fetch-Site` is refused, and a cookie-signed one must carry `Origin`.
public struct AccessMiddleware: RouterMiddleware {
    public typealias Context = AgentRequestContext
    let store: LabelStore
    let table: RouteTable

    public init(store: LabelStore, table: RouteTable) {
        self.store = store
        self.table = table
    }

    public func handle(_ input: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var head = input.head
        head.headerFields[.loupeUser] = nil
        // Middleware runs after the router has matched: an unmatched path has no endpoint.
        guard let endpoint = context.endpointPath else { throw HTTPError(.notFound) }
        guard let access = table.access(method: input.method, path: endpoint) else {
            throw HTTPError(.internalServerError, message: "route \(input.method.rawValue) \(endpoint) has no declared access; refused")
        }
        let changing = input.method != .get && input.method != .head
        if changing { try Self.checkSameOrigin(head) }
        guard case .role(let needed) = access else { return try await next(Request(head: head, body: input.body), context) }
        // The token is hashed once: the key finds the session and watches its streams.
        guard let (token, viaCookie) = Self.token(input), let key = LabelStore.sessionKey(checking: token),
            let session = try? await store.session(key: key)
        else {
            throw HTTPError(
                .unauthorized, headers: [.wwwAuthenticate: "Bearer realm=\"loupe\""], message: "sign in first (POST /api/v1/login)")
        }
        if changing && viaCookie && head.headerFields[.origin] == nil {
            throw HTTPError(
                .forbidden,
                message: "a changing request signed in by cookie must carry Origin (browsers send it); scripts use Authorization: Bearer")
        }
        guard session.role >= needed else {
            throw HTTPError(
                .forbidden,
                message:
                    "user \(session.user) is \(session.role.rawValue.withIndefiniteArticle); this needs "
                    + "\(needed.rawValue.withIndefiniteArticle)"
            )
        }
        head.headerFields[.loupeUser] = session.user
        var context = context
        context.session = session
        context.sessionKey = key
        return try await next(Request(head: head, body: input.body), context)
    }

    /// Refuses a changing request that a browser says comes from another site.
    static func checkSameOrigin(_ head: HTTPRequest) throws {
        if let site = head.headerFields[.secFetchSite], site != "same-origin" && site != "none" {
            throw HTTPError(.forbidden, message: "cross-site request refused (Sec-Fetch-Site: \(site))")
        }
        guard let origin = head.headerFields[.origin] else { return }
        let host = head.authority ?? ""
        guard let parsed = URLComponents(string: origin), let originHost = parsed.host, !host.isEmpty,
            Self.authority(host: originHost, port: parsed.port) == host.lowercased()
        else {
            throw HTTPError(.forbidden, message: "cross-origin request refused (Origin \(origin) is not this agent, \(host))")
        }
    }

    static func authority(host: String, port: Int?) -> String {
        let host = host.lowercased()
        return port.map { "\(host):\($0)" } ?? host
    }

    /// The session token and whether it came from the cookie.
    static func token(_ request: Request) -> (token: String, viaCookie: Bool)? {
        if let authorization = request.headers[.authorization], authorization.hasPrefix("Bearer ") {
            return (String(authorization.dropFirst(7)), false)
        }
        for header in request.headers[values: .cookie] {
            for part in header.split(separator: ";") {
                let pair = part.trimmingCharacters(in: .whitespaces)
                if pair.hasPrefix(AccessAPI.cookieName + "=") { return (String(pair.dropFirst(AccessAPI.cookieName.count + 1)), true) }
            }
        }
        return nil
    }
}

/// The browser-side headers on every response, API and errors included:
/// a CSP that forbids framing and foreign scripts, nosniff, no referrer,
/// and no caching of API answers unless a route says otherwise.
public struct SecurityHeadersMiddleware<Context: RequestContext>: RouterMiddleware {
    let secure: Bool

    public init(secure: Bool) { self.secure = secure }

    public static var contentSecurityPolicy: String {
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
            + "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response: Response
        do {
            response = try await next(request, context)
        } catch let error as any HTTPResponseError {
            response = try error.response(from: request, context: context)
        } catch {
            context.logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            response = try HTTPError(.internalServerError).response(from: request, context: context)
        }
        response.headers[.contentSecurityPolicy] = Self.contentSecurityPolicy
        response.headers[.xContentTypeOptions] = "nosniff"
        response.headers[.referrerPolicy] = "no-referrer"
        response.headers[.xFrameOptions] = "DENY"
        response.headers[.crossOriginResourcePolicy] = "same-origin"
        if response.headers[.cacheControl] == nil { response.headers[.cacheControl] = "no-store" }
        if secure { response.headers[.strictTransportSecurity] = "max-age=31536000" }
        return response
    }
}

extension HTTPField.Name {
    static let secFetchSite = HTTPField.Name("Sec-Fetch-Site")!
    static let xFrameOptions = HTTPField.Name("X-Frame-Options")!
    static let referrerPolicy = HTTPField.Name("Referrer-Policy")!
}

/// Throttles sign-in guesses by client address and by user name at that
/// address, in a bounded table, and lets only a few scrypt checks run at once
/// on their own threads, so a flood of logins can neither starve live
/// inspection nor lock a user out from another address.
public final class SignInGuard: Sendable {
    public struct Limits: Sendable {
        /// Failed guesses for one user name from one address before that pair waits out the window.
        public var perUserAndAddress = 5
        /// Failed guesses from one address, whatever the names, before the address waits out the window.
        public var perAddress = 20
        public var window: TimeInterval = 300
        /// Entries kept at most; past it, the stalest quarter goes.
        public var capacity = 4096
        /// scrypt checks at once (each about 32 MiB and a tenth of a second of one core).
        public var concurrentHashes = 1
        /// Sign-ins waiting for a hash slot; beyond that, 503 at once.
        public var waitingHashes = 8
        /// The hashing threads' nice value (0 to 19; 0 leaves them level with live inspection).
        public var hashNice: Int32 = PagePriority.nice
        public init() {}
    }

    public let limits: Limits
    private let failures = Mutex<[String: [Date]]>([:])
    private let waiting = Mutex<Int>(0)
    private let slots: DispatchSemaphore

    public init(limits: Limits = Limits()) {
        self.limits = limits
        slots = DispatchSemaphore(value: limits.concurrentHashes)
    }

    private static func pairKey(_ user: String, _ address: String) -> String { "u:\(address) \(user)" }
    private static func addressKey(_ address: String) -> String { "a:\(address)" }

    /// Refuses (429) a sign-in that its address, or its user at that address, has used up.
    public func check(user: String, address: String, now: Date = Date()) throws {
        let (pair, all) = failures.withLock { table in
            (recent(&table, Self.pairKey(user, address), now), recent(&table, Self.addressKey(address), now))
        }
        if all >= limits.perAddress {
            throw HTTPError(.tooManyRequests, message: "too many failed sign-ins from \(address); wait \(Int(limits.window / 60)) minutes")
        }
        if pair >= limits.perUserAndAddress {
            throw HTTPError(
                .tooManyRequests, message: "too many failed sign-ins for \(user) from \(address); wait \(Int(limits.window / 60)) minutes")
        }
    }

    public func failed(user: String, address: String, now: Date = Date()) {
        failures.withLock { table in
            for key in [Self.pairKey(user, address), Self.addressKey(address)] { table[key, default: []].append(now) }
            if table.count > limits.capacity {
                // Drop the stalest quarter at once, so a flood that keeps the table full sorts it once per
                // capacity/4 failures, not on every one.
                let keep = limits.capacity * 3 / 4
                let stale = table.sorted { ($0.value.last ?? .distantPast) < ($1.value.last ?? .distantPast) }.prefix(table.count - keep)
                for (key, _) in stale { table[key] = nil }
            }
        }
    }

    public func succeeded(user: String, address: String) {
        _ = failures.withLock { $0.removeValue(forKey: Self.pairKey(user, address)) }
    }

    /// Entries in the table now (for tests and metrics).
    public var entries: Int { failures.withLock { $0.count } }

    private func recent(_ table: inout [String: [Date]], _ key: String, _ now: Date) -> Int {
        guard let times = table[key] else { return 0 }
        let kept = times.filter { now.timeIntervalSince($0) < limits.window }
        table[key] = kept.isEmpty ? nil : kept
        return kept.count
    }

    /// Runs password hashing work (a sign-in or a password change) on a
    /// thread of its own, at most `concurrentHashes` at once; 503 when
    /// `waitingHashes` are already waiting. The thread runs at `hashNice`
    /// (`PagePriority`), so when live inspection keeps the CPU busy a flood
    /// of guesses gets the leftovers, and a sign-in then takes about a
    /// second instead of a tenth.
    public func hashing<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        let admitted = waiting.withLock { count -> Bool in
            guard count < limits.waitingHashes + limits.concurrentHashes else { return false }
            count += 1
            return true
        }
        guard admitted else {
            throw HTTPError(.serviceUnavailable, headers: [.retryAfter: "1"], message: "too many sign-ins at once; try again in a second")
        }
        defer { waiting.withLock { $0 -= 1 } }
        let (slots, nice) = (self.slots, limits.hashNice)
        return try await withCheckedThrowingContinuation { continuation in
            // A thread per hash (bounded by the waiting count above): its start costs microseconds beside
            // scrypt's tenth of a second, and nothing lingers once sign-ins stop.
            DedicatedThread.start("loupe-scrypt") {
                PagePriority.lowerCurrentThread(to: nice)
                slots.wait()
                defer { slots.signal() }
                continuation.resume(with: Result { try work() })
            }
        }
    }
}

/// Login, logout, the session, password changes and user management.
public final class AccessAPI: Sendable {
    public static let cookieName = "loupe_session"
    public let store: LabelStore
    public let sessionLifetime: TimeInterval
    public let secureCookies: Bool
    public let signIns: SignInGuard
    /// The first-start password file; removed once the admin has chosen a password.
    public let initialPasswordFile: String?

    public init(
        store: LabelStore, sessionLifetime: TimeInterval, secureCookies: Bool,
        signIns: SignInGuard = SignInGuard(), initialPasswordFile: String? = nil
    ) {
        self.store = store
        self.sessionLifetime = sessionLifetime
        self.secureCookies = secureCookies
        self.signIns = signIns
        self.initialPasswordFile = initialPasswordFile
    }

    public func register(on routes: AgentRoutes) {
        let api = routes.group("api/v1")
        let (store, signIns, sessionLifetime, secureCookies) = (self.store, self.signIns, self.sessionLifetime, self.secureCookies)
        let initialPasswordFile = self.initialPasswordFile
        // Every password hash of the page runs on the guard's bounded, niced threads.
        let hashing: LabelStore.PasswordHashing = { work in try await signIns.hashing(work) }
        api.post("login", .open) { request, context in
            let login = try await AgentAPI.decode(Login.self, request, limit: 4096)
            let address = context.clientAddress
            try signIns.check(user: login.user, address: address)
            let result = try await store.signIn(user: login.user, password: login.password, lifetime: sessionLifetime, hashing: hashing)
            guard let (token, session) = result else {
                signIns.failed(user: login.user, address: address)
                throw HTTPError(.unauthorized, message: "wrong user name or password")
            }
            signIns.succeeded(user: login.user, address: address)
            var response = try AgentAPI.json(
                SessionJSON(user: session.user, role: session.role, expiresAt: session.expiresAt, token: token))
            response.headers[.setCookie] =
                "\(Self.cookieName)=\(token); Path=/; HttpOnly; SameSite=Strict; "
                + "Max-Age=\(Int(sessionLifetime))\(secureCookies ? "; Secure" : "")"
            return response
        }
        api.post("logout", .viewer) { request, _ in
            if let (token, _) = AccessMiddleware.token(request) { try await store.signOut(token: token) }
            var response = try AgentAPI.json(["signedOut": true])
            response.headers[.setCookie] =
                "\(Self.cookieName)=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0\(secureCookies ? "; Secure" : "")"
            return response
        }
        api.get("session", .viewer) { _, context in
            guard let session = context.session else { throw HTTPError(.unauthorized, message: "sign in first") }
            return try AgentAPI.json(SessionJSON(user: session.user, role: session.role, expiresAt: session.expiresAt, token: nil))
        }
        api.put("session/password", .viewer) { request, context in
            let change = try await AgentAPI.decode(PasswordChange.self, request, limit: 4096)
            guard let session = context.session else { throw HTTPError(.unauthorized, message: "sign in first") }
            let address = context.clientAddress
            try signIns.check(user: session.user, address: address)
            guard try await store.signIn(user: session.user, password: change.current, lifetime: 1, hashing: hashing) != nil else {
                signIns.failed(user: session.user, address: address)
                throw HTTPError(.badRequest, message: "the current password is wrong")
            }
            try await store.setUser(session.user, password: change.new, role: session.role, hashing: hashing)
            // The first-start password is spent once the admin has chosen one.
            if session.role == .admin, let initialPasswordFile { Self.removeInitialPassword(initialPasswordFile) }
            return try AgentAPI.json(["changed": true])
        }
        api.get("users", .admin) { _, _ in
            try AgentAPI.json(
                try await store.users().map { UserJSON(name: $0.name, role: $0.role, passwordChangedAt: $0.passwordChangedAt) })
        }
        api.put("users/:name", .admin) { request, context in
            let name = context.parameters.get("name") ?? ""
            let user = try await AgentAPI.decode(UserChange.self, request, limit: 4096)
            try await store.setUser(name, password: user.password, role: user.role, hashing: hashing)
            return try AgentAPI.json(UserJSON(name: name, role: user.role, passwordChangedAt: Date()))
        }
        api.delete("users/:name", .admin) { _, context in
            let name = context.parameters.get("name") ?? ""
            try await store.removeUser(name)
            return try AgentAPI.json(["removed": name])
        }
    }

    /// Overwrites and removes the first-start password file.
    static func removeInitialPassword(_ path: String) {
        guard FileManager.default.fileExists(atPath: path) else { return }
        if let handle = FileHandle(forWritingAtPath: path) {
            let size = (try? handle.seekToEnd()) ?? 0
            try? handle.seek(toOffset: 0)
            try? handle.write(contentsOf: Data(repeating: 0, count: Int(size)))
            try? handle.synchronize()
            try? handle.close()
        }
        try? FileManager.default.removeItem(atPath: path)
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
