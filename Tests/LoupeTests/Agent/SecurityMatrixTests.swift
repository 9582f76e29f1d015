import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import LoupeAgent
import LoupeImaging
import LoupeSegmentation
import LoupeWire
import NIOCore
import Synchronization
import Testing
import LoupeTesting

extension SignInSuites {
    /// Access control attacked as an outsider would, over real HTTP on loopback:
    /// every registered route (enumerated from the route table the router was
    /// built with, so a new route is covered without editing this file) × path
    /// spellings an attacker would try × no session / viewer / operator / admin.
    @Suite(.serialized) struct SecurityMatrixTests {
        static let roles: [AccessRole?] = [nil, .viewer, .operator, .admin]

        /// An agent with a synthetic camera, three users and a labelled capture,
        /// served by the same router `loupe agent` serves.
        struct Fixture {
            let dir: String
            let runtime: AgentRuntime
            let table = RouteTable()
            var tokens: [AccessRole: String] = [:]

            init(sessionLifetime: TimeInterval = 3600) async throws {
                dir = LabelStoreTests.temporaryDirectory()
                let config = AgentConfig(
                    cameraId: "cam-sec", manager: nil, tls: TLSFiles(ca: "", cert: "", key: ""), dataDir: dir,
                    http: .init(address: "127.0.0.1:0", initialAdminPassword: "admin-password-1"),
                    camera: .init(
                        source: .synthetic, width: 320, height: 256, framesPerSecond: 4, seed: 3, inferenceThreads: 1, precision: "fp32"))
                runtime = try await AgentRuntime(config: config, logger: Logger(label: "test"))
                try await AgentHTTP.ensureAdmin(runtime: runtime, logger: Logger(label: "test"))
                let store = runtime.store
                try await store.setUser("vic", password: "viewer-password-1", role: .viewer)
                try await store.setUser("ann", password: "operator-password-1", role: .operator)
                for (role, user, password) in [
                    (AccessRole.viewer, "vic", "viewer-password-1"), (.operator, "ann", "operator-password-1"),
                    (.admin, "admin", "admin-password-1"),
                ] {
                    tokens[role] = try #require(try await store.signIn(user: user, password: password, lifetime: sessionLifetime)).token
                }
                try await store.setClasses([ClassRecord(index: 1, name: "scratch", color: 0xFF0000)], user: "setup")
                let recipe = try await store.saveRecipe(
                    Recipe(inspectionType: "disc", rois: [RecipeROI(name: "hub", rect: PixelRect(x: 0, y: 0, width: 16, height: 16))]),
                    user: "setup")
                let png = try LabelStoreTests.png(90, size: 64)
                _ = try await store.addCapture(
                    LabelStore.EncodedImage(bytes: png, width: 64, height: 64, channels: 1), source: "setup", inspectionType: "disc",
                    recipeVersion: recipe.version,
                    user: "setup")
                var mask = try Image8(width: 16, height: 16)
                mask[4, 4] = 1
                _ = try await store.saveMask(captureNumber: 1, roi: ("hub", recipe.rois[0].rect), mask: mask, classes: 2, user: "setup")
            }

            func application(sessionLifetime: TimeInterval = 3600, signIns: SignInGuard = SignInGuard()) -> some ApplicationProtocol {
                let router = AgentHTTP.router(
                    runtime: runtime, training: TrainingJobs(runtime: runtime, logger: Logger(label: "test")),
                    sessionLifetime: sessionLifetime, secureCookies: false, signIns: signIns, table: table)
                return Application(
                    router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)), services: [runtime.pipeline])
            }

            /// Everything a request could change: users, recipe, classes, captures, labels, edits, outbox, live mode, models, training.
            func fingerprint() async throws -> String {
                let store = runtime.store
                let users = try await store.users().map { "\($0.name):\($0.role.rawValue):\($0.hash.base64EncodedString())" }
                let labels = try await store.labels().map { "\($0.captureID)/\($0.roiName):\($0.maskHash):\($0.includeInTraining)" }
                let statistics = runtime.pipeline.statistics
                return [
                    users.joined(separator: ","), "recipe \(try await store.recipe().version)",
                    "classes \(try await store.classes().map(\.name))",
                    "captures \(try await store.captureCount())", labels.joined(separator: ","),
                    "edits \(try await store.edits(limit: 10_000).count)",
                    "outbox \(try await store.outboxDepth())", "live \(statistics.live) \(statistics.threshold)",
                    "model \(runtime.shelf.state.current?.version ?? "-")",
                ].joined(separator: "\n")
            }
        }

        /// The route's pattern with its parameters filled with things that exist.
        static func concrete(_ pattern: String) -> String {
            pattern.split(separator: "/", omittingEmptySubsequences: false).map { part -> String in
                switch part {
                case "{number}": "1"
                case "{roi}": "hub"
                case "{name}": "eve"
                default: String(part)
                }
            }.joined(separator: "/")
        }

        /// Spellings of one path a router might resolve differently from a string test.
        static func spellings(_ path: String) -> [String] {
            var out = [path, path + "/", path + "?x=1", path + ";x", path.uppercased(), "/." + path, path + "/."]
            let segments = path.split(separator: "/").map(String.init)
            for index in 0..<segments.count {
                // An extra slash before each segment, a dot segment, a detour, the first letter percent-encoded, a case change.
                var doubled = segments; doubled[index] = "/" + doubled[index]
                out.append("/" + doubled.joined(separator: "/"))
                var dotted = segments; dotted.insert(".", at: index)
                out.append("/" + dotted.joined(separator: "/"))
                var detour = segments; detour.insert(contentsOf: ["x", ".."], at: index)
                out.append("/" + detour.joined(separator: "/"))
                if let first = segments[index].unicodeScalars.first, first.properties.isAlphabetic {
                    var encoded = segments; encoded[index] = String(format: "%%%02X", first.value) + segments[index].dropFirst()
                    out.append("/" + encoded.joined(separator: "/"))
                    var cased = segments; cased[index] = segments[index].prefix(1).uppercased() + segments[index].dropFirst()
                    out.append("/" + cased.joined(separator: "/"))
                }
            }
            if segments.count > 1 { out.append("/" + segments[0] + "%2F" + segments[1...].joined(separator: "/")) }
            out.append(path.replacingOccurrences(of: "/", with: "//"))
            return Array(Set(out)).sorted()
        }

        /// A body that would change something if it got through.
        static func body(_ route: RouteTable.Route) -> Data {
            let object: Any
            switch (route.method, route.path) {
            case (.put, "/api/v1/users/{name}"): object = ["password": "attacker-password-1", "role": "admin"]
            case (.put, "/api/v1/session/password"): object = ["current": "viewer-password-1", "new": "attacker-password-2"]
            case (.put, "/api/v1/recipe"):
                object = [
                    "version": 0, "inspectionType": "evil", "rois": [], "confidenceThreshold": 0.1, "failRule": ["minimumDefectPixels": 1],
                ]
            case (.put, "/api/v1/classes"): object = [["index": 1, "name": "evil", "color": 1]]
            case (.put, "/api/v1/live"): object = ["live": true, "threshold": 0.01]
            case (.put, let path) where path.hasSuffix("/include"): object = ["include": false]
            case (.post, let path) where path.hasSuffix("/strokes"):
                object = ["strokes": [["classIndex": 1, "radius": 4, "erase": false, "points": [["x": 8, "y": 8]]]]]
            case (.post, let path) where path.hasSuffix("/wand"): object = ["x": 8, "y": 8, "classIndex": 1]
            case (.post, let path) where path.hasSuffix("/mask/tool"): object = ["tool": "grow", "radius": 3]
            case (.post, "/api/v1/training"): object = ["iterations": 1]
            case (.post, "/api/v1/login"): object = ["user": "admin", "password": "a-wrong-guess-1"]
            default: object = [:] as [String: Any]
            }
            return (try? JSONSerialization.data(withJSONObject: object)) ?? Data()
        }

        static func allows(_ access: RouteAccess, _ role: AccessRole?) -> Bool {
            switch access {
            case .open: true
            case .role(let needed): role.map { $0 >= needed } ?? false
            }
        }

        static func headers(_ role: AccessRole?, _ fixture: Fixture, port: Int) -> [String: String] {
            var headers = ["Content-Type": "application/json"]
            if let role, let token = fixture.tokens[role] { headers["Authorization"] = "Bearer \(token)" }
            return headers
        }

        /// Every response, errors included, carries the browser-side security headers.
        static func expectSecurityHeaders(_ response: PlainHTTP.Response, _ what: String, sourceLocation: SourceLocation = #_sourceLocation)
        {
            #expect(
                response.header("Content-Security-Policy")?.contains("frame-ancestors 'none'") == true, "\(what): no CSP",
                sourceLocation: sourceLocation)
            #expect(response.header("X-Content-Type-Options") == "nosniff", "\(what): no nosniff", sourceLocation: sourceLocation)
            #expect(response.header("Referrer-Policy") == "no-referrer", "\(what): no Referrer-Policy", sourceLocation: sourceLocation)
        }

        @Test func everyRouteRefusesEveryRoleBelowItsOwnUnderEverySpelling() async throws {
            let fixture = try await Fixture()
            defer { try? FileManager.default.removeItem(atPath: fixture.dir) }
            try await fixture.application().test(.live) { client in
                let port = try #require(client.port)
                let routes = fixture.table.all
                // The table is the router's: the page's files, health and login are open, and nothing else is.
                #expect(routes.count >= 40, "\(routes.count) routes")
                #expect(
                    Set(routes.filter { $0.access == .open }.map(\.path)).isSubset(of: [
                        "/", "/index.html", "/app.css", "/app.js", "/editor.js", "/recipe.js", "/api/v1/health", "/api/v1/login",
                    ]))
                #expect(routes.first { $0.path == "/api/v1/users/{name}" && $0.method == .put }?.access == .admin)

                let before = try await fixture.fingerprint()
                var sent = 0
                for route in routes {
                    let path = Self.concrete(route.path)
                    for role in Self.roles where !Self.allows(route.access, role) {
                        for spelling in Self.spellings(path) {
                            let response = try await PlainHTTP.send(
                                port: port, method: route.method.rawValue, target: spelling,
                                headers: Self.headers(role, fixture, port: port), body: Self.body(route),
                                readBody: !route.path.contains("events") && !route.path.contains("mjpeg"))
                            sent += 1
                            let what = "\(route.method.rawValue) \(spelling) as \(role?.rawValue ?? "nobody") (route needs \(route.access))"
                            #expect([400, 401, 403, 404].contains(response.status), "\(what): \(response)")
                            Self.expectSecurityHeaders(response, what)
                        }
                    }
                }
                #expect(sent > 1000, "only \(sent) requests")
                #expect(try await fixture.fingerprint() == before, "a refused request changed the store")
                // A user "eve" made by any of those requests would be able to sign in.
                #expect(try await fixture.runtime.store.users().map(\.name).sorted() == ["admin", "ann", "vic"])

                // Not vacuous: with its own role, on its canonical spelling, every route is reached (not 401/403, not "no
                // declared access").
                for route in routes where route.method == .get && !route.path.contains("events") && !route.path.contains("mjpeg") {
                    let role: AccessRole? = if case .role(let needed) = route.access { needed } else { nil }
                    let response = try await PlainHTTP.send(
                        port: port, method: "GET", target: Self.concrete(route.path), headers: Self.headers(role, fixture, port: port))
                    #expect(![401, 403, 500].contains(response.status), "GET \(route.path) as \(role?.rawValue ?? "nobody"): \(response)")
                    Self.expectSecurityHeaders(response, "GET \(route.path)")
                }
                // Unknown paths are 404 for everyone, signed in or not.
                for role in Self.roles {
                    for path in [
                        "/api/v1/nothing", "/api/v2/users", "/etc/passwd", "/api/v1/users/eve/x", "/api/v1/captures/1/rois/hub/mask/x",
                    ] {
                        let response = try await PlainHTTP.send(
                            port: port, method: "GET", target: path, headers: Self.headers(role, fixture, port: port))
                        #expect(response.status == 404, "GET \(path) as \(role?.rawValue ?? "nobody"): \(response)")
                    }
                }
            }
        }

        /// The two requests of the issue, against a real `loupe agent` process.
        @Test func theReportedWalkArounds() async throws {
            let pki = try TestPKI()
            let dataDir = pki.dir + "/agent-sec-data"
            let config = try await writeAgentConfig(
                pki: pki, camera: "cam-sec", port: nil, dataDir: dataDir,
                extra: [
                    "http": ["address": "127.0.0.1:0", "initialAdminPassword": "admin-password-1"]
                ])
            let agent = try LoupeProcess(["agent", "--config", config], log: pki.dir + "/agent-sec.log")
            let address = try #require(try await agent.loggedAddress(after: "http listening"), "\(agent.log)")
            let port = try #require(Int(address.split(separator: ":").last ?? ""))
            let admin = try await agentToken(address, password: "admin-password-1")
            let eve = try JSONSerialization.data(withJSONObject: ["password": "attacker-password-1", "role": "admin"])
            // No session at all.
            let anonymous = try await PlainHTTP.send(
                port: port, method: "PUT", target: "//api/v1/users/eve", headers: ["Content-Type": "application/json"], body: eve)
            #expect(anonymous.status == 401, "\(anonymous)")
            let listed = try await PlainHTTP.send(port: port, method: "GET", target: "//api/v1/users")
            #expect(listed.status == 401 && !listed.text.contains("admin"), "\(listed)")
            // An operator, with an extra slash.
            let userBody = try JSONSerialization.data(withJSONObject: ["password": "operator-password-1", "role": "operator"])
            #expect(
                try await agentHTTP(
                    address, "PUT", "/api/v1/users/ann", token: admin, body: userBody, headers: ["Content-Type": "application/json"]
                ).status == 200)
            let ann = try await agentToken(address, user: "ann", password: "operator-password-1")
            let escalate = try JSONSerialization.data(withJSONObject: ["password": "attacker-password-1", "role": "admin"])
            let operatorTry = try await PlainHTTP.send(
                port: port, method: "PUT", target: "/api//v1/users/x",
                headers: ["Content-Type": "application/json", "Authorization": "Bearer \(ann)"], body: escalate)
            #expect(operatorTry.status == 403, "\(operatorTry)")
            // Neither account exists.
            for user in ["eve", "x"] {
                let login = try JSONSerialization.data(withJSONObject: ["user": user, "password": "attacker-password-1"])
                #expect(
                    try await agentHTTP(address, "POST", "/api/v1/login", body: login, headers: ["Content-Type": "application/json"]).status
                        == 401)
            }
            #expect(agent.process.isRunning)
        }

        @Test func changingRequestsSignedByCookieMustBeSameOrigin() async throws {
            let fixture = try await Fixture()
            defer { try? FileManager.default.removeItem(atPath: fixture.dir) }
            try await fixture.application().test(.live) { client in
                let port = try #require(client.port)
                let cookie = "loupe_session=\(try #require(fixture.tokens[.operator]))"
                let body = try JSONSerialization.data(withJSONObject: ["include": false])
                let target = "/api/v1/captures/1/rois/hub/include"
                func put(_ headers: [String: String]) async throws -> PlainHTTP.Response {
                    try await PlainHTTP.send(
                        port: port, method: "PUT", target: target, headers: headers.merging(["Content-Type": "application/json"]) { $1 },
                        body: body)
                }
                let before = try await fixture.fingerprint()
                // A forged form or fetch from another site: refused, with or without the cookie's help.
                #expect(try await put(["Cookie": cookie]).status == 403)
                #expect(try await put(["Cookie": cookie, "Origin": "http://evil.example"]).status == 403)
                #expect(try await put(["Cookie": cookie, "Origin": "null"]).status == 403)
                #expect(try await put(["Cookie": cookie, "Origin": "http://127.0.0.1:\(port + 1)"]).status == 403)
                #expect(
                    try await put(["Cookie": cookie, "Origin": "http://127.0.0.1:\(port)", "Sec-Fetch-Site": "cross-site"]).status == 403)
                #expect(try await fixture.fingerprint() == before)
                // Reading with the cookie needs no Origin; a login from another site is refused too.
                #expect(
                    try await PlainHTTP.send(port: port, method: "GET", target: "/api/v1/captures", headers: ["Cookie": cookie]).status
                        == 200)
                let login = try JSONSerialization.data(withJSONObject: ["user": "ann", "password": "operator-password-1"])
                #expect(
                    try await PlainHTTP.send(
                        port: port, method: "POST", target: "/api/v1/login", headers: ["Origin": "http://evil.example"], body: login
                    ).status == 403)
                // The page itself (same origin) and a script (bearer token, no Origin) get through.
                let same = try await put(["Cookie": cookie, "Origin": "http://127.0.0.1:\(port)", "Sec-Fetch-Site": "same-origin"])
                #expect(same.status == 200, "\(same)")
                let script = try await put(["Authorization": "Bearer \(try #require(fixture.tokens[.operator]))"])
                #expect(script.status == 200, "\(script)")
            }
        }

        @Test func openStreamsEndWhenTheirSessionEnds() async throws {
            let fixture = try await Fixture()
            defer { try? FileManager.default.removeItem(atPath: fixture.dir) }
            let store = fixture.runtime.store
            try await fixture.application().test(.live) { client in
                let port = try #require(client.port)
                /// Opens an event stream with `token`, runs `end`, and says whether the server closed the stream.
                func streamEnds(
                    _ token: String, _ path: String, after end: @escaping @Sendable () async throws -> Void
                ) async throws -> Bool {
                    let watching = store.sessionEvents.count
                    async let response = PlainHTTP.send(
                        port: port, method: "GET", target: path, headers: ["Authorization": "Bearer \(token)"], timeout: 8)
                    let open = try await eventually(timeout: .seconds(5)) { store.sessionEvents.count > watching }
                    #expect(open, "the stream never opened")
                    try await end()
                    let result = try await response
                    #expect(result.status == 200, "\(result)")
                    return result.closedByServer
                }
                // Sign-out ends the viewer's training-progress stream.
                let vic = try #require(fixture.tokens[.viewer])
                let signedOut = try await streamEnds(vic, "/api/v1/training/events") {
                    let status = try await PlainHTTP.send(
                        port: port, method: "POST", target: "/api/v1/logout", headers: ["Authorization": "Bearer \(vic)"]
                    ).status
                    guard status == 200 else { throw PlainHTTP.Failure(description: "logout answered \(status)") }
                }
                #expect(signedOut)
                // A password change ends every stream of that user.
                let ann = try #require(fixture.tokens[.operator])
                #expect(
                    try await streamEnds(ann, "/api/v1/live/events") {
                        try await store.setUser("ann", password: "operator-password-2", role: .operator)
                    })
                // Removing the user ends theirs.
                try await store.setUser("tmp", password: "temporary-password-1", role: .viewer)
                let tmp = try #require(try await store.signIn(user: "tmp", password: "temporary-password-1", lifetime: 3600)).token
                #expect(try await streamEnds(tmp, "/api/v1/live/stream.mjpeg") { try await store.removeUser("tmp") })
                // An expiring session ends its stream when it expires.
                let short = try #require(try await store.signIn(user: "admin", password: "admin-password-1", lifetime: 2)).token
                #expect(try await streamEnds(short, "/api/v1/training/events") {})
                #expect(store.sessionEvents.count == 0)
            }
        }

        @Test func signInGuessesAreThrottledPerAddressWithoutLockingTheAdminOut() async throws {
            let fixture = try await Fixture()
            defer { try? FileManager.default.removeItem(atPath: fixture.dir) }
            try await fixture.application().test(.live) { client in
                let port = try #require(client.port)
                func login(_ user: String, _ password: String, from source: String) async throws -> Int {
                    let body = try JSONSerialization.data(withJSONObject: ["user": user, "password": password])
                    return try await PlainHTTP.send(
                        port: port, method: "POST", target: "/api/v1/login", headers: ["Content-Type": "application/json"], body: body,
                        from: source
                    ).status
                }
                // An outsider (127.0.0.2) guesses the admin's password five times: that address is refused for admin, even with the right
                // password…
                for guess in 1...5 { #expect(try await login("admin", "guess-number-\(guess)", from: "127.0.0.2") == 401) }
                #expect(try await login("admin", "admin-password-1", from: "127.0.0.2") == 429)
                // …but the admin, from their own address, signs in.
                #expect(try await login("admin", "admin-password-1", from: "127.0.0.1") == 200)
                // Spraying many names from one address: after 20 failures the address is refused whatever the name.
                for index in 0..<20 { #expect(try await login("user\(index)", "spray-password-1", from: "127.0.0.3") == 401) }
                #expect(try await login("ann", "operator-password-1", from: "127.0.0.3") == 429)
                #expect(try await login("ann", "operator-password-1", from: "127.0.0.4") == 200)
            }
        }

        @Test func theSignInTableIsBoundedAndHashingIsGated() async throws {
            var limits = SignInGuard.Limits()
            limits.capacity = 64
            limits.concurrentHashes = 1
            limits.waitingHashes = 2
            let guardian = SignInGuard(limits: limits)
            for index in 0..<1000 { guardian.failed(user: "u\(index)", address: "10.0.\(index / 250).\(index % 250)") }
            #expect(guardian.entries <= 64)
            // Ten sign-ins at once: at most one hashes at a time, at most three are admitted, the rest are refused at once with 503.
            let running = PeakCounter(), peak = PeakCounter()
            let outcomes = await withTaskGroup(of: Int.self) { group in
                for _ in 0..<10 {
                    group.addTask {
                        do {
                            try await guardian.hashing {
                                peak.max(running.add(1))
                                Thread.sleep(forTimeInterval: 0.2)
                                _ = running.add(-1)
                            }
                            return 200
                        } catch let error as HTTPError {
                            return Int(error.status.code)
                        } catch { return 0 }
                    }
                }
                var all: [Int] = []
                for await outcome in group { all.append(outcome) }
                return all
            }
            #expect(peak.value == 1)
            #expect(outcomes.filter { $0 == 200 }.count <= 3 && outcomes.filter { $0 == 200 }.count >= 1, "\(outcomes)")
            #expect(outcomes.filter { $0 == 503 }.count >= 7, "\(outcomes)")
        }

        @Test func theFirstStartPasswordFileIsPrivateAndGoesWithTheFirstChange() async throws {
            let dir = LabelStoreTests.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let runtime = try await AgentRuntime(
                config: AgentConfig(
                    cameraId: "cam-pw", manager: nil, tls: TLSFiles(ca: "", cert: "", key: ""), dataDir: dir,
                    http: .init(address: "127.0.0.1:0")), logger: Logger(label: "test"))
            try await AgentHTTP.ensureAdmin(runtime: runtime, logger: Logger(label: "test"))
            let path = dir + "/initial-admin-password"
            let attributes = try FileManager.default.attributesOfItem(atPath: path)
            #expect((attributes[.posixPermissions] as? Int) == 0o600)
            let password = try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            let router = AgentHTTP.router(
                runtime: runtime, training: TrainingJobs(runtime: runtime, logger: Logger(label: "test")), sessionLifetime: 3600,
                secureCookies: false)
            try await Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0))).test(.live) { client in
                let port = try #require(client.port)
                let token = try #require(try await runtime.store.signIn(user: "admin", password: password, lifetime: 60)).token
                let change = try JSONSerialization.data(withJSONObject: ["current": password, "new": "a-chosen-password-1"])
                let response = try await PlainHTTP.send(
                    port: port, method: "PUT", target: "/api/v1/session/password", headers: ["Authorization": "Bearer \(token)"],
                    body: change)
                #expect(response.status == 200, "\(response)")
            }
            #expect(!FileManager.default.fileExists(atPath: path))
        }
    }
}

/// A thread-safe counter for the concurrency checks.
final class PeakCounter: Sendable {
    private let state = Mutex<Int>(0)
    func add(_ delta: Int) -> Int {
        state.withLock {
            $0 += delta; return $0
        }
    }
    func max(_ value: Int) { state.withLock { $0 = Swift.max($0, value) } }
    var value: Int { state.withLock { $0 } }
}
