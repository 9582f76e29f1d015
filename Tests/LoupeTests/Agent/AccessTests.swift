import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import LoupeAgent
import LoupePKI
import LoupeWire
import NIOCore
import NIOSSL
import Testing
import LoupeTesting

/// The suites that sign in many times share the process's scrypt threads (PagePriority), so they run one at a time: a
/// sign-in flood in one made the other's requests wait past their client's read timeout.
@Suite(.serialized) struct SignInSuites {}

extension SignInSuites {
    /// Logins, sessions, roles and HTTPS on the agent's API, through the same
    /// assembly `loupe agent` serves.
    @Suite struct AccessTests {
        static func runtime(
            _ dir: String, http: AgentConfig.HTTPSettings, tls: TLSFiles = TLSFiles(ca: "", cert: "", key: "")
        ) async throws -> AgentRuntime {
            try await AgentRuntime(
                config: AgentConfig(cameraId: "cam-a", manager: nil, tls: tls, dataDir: dir, http: http), logger: Logger(label: "test"))
        }

        static func app(_ runtime: AgentRuntime, sessionLifetime: TimeInterval = 3600) -> some ApplicationProtocol {
            let router = AgentHTTP.router(
                runtime: runtime, training: TrainingJobs(runtime: runtime, logger: Logger(label: "test")),
                sessionLifetime: sessionLifetime, secureCookies: false)
            return Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        }

        /// Signs in and returns the bearer token (and the cookie header the server set).
        static func signIn(
            _ client: some TestClientProtocol, _ user: String, _ password: String, expect status: HTTPResponse.Status = .ok
        ) async throws -> String? {
            try await client.execute(
                uri: "/api/v1/login", method: .post, body: try LabelAPITests.json(["user": user, "password": password])
            ) {
                response in
                #expect(response.status == status, "\(String(buffer: response.body))")
                guard response.status == .ok else { return nil }
                let cookie = response.headers[.setCookie] ?? ""
                #expect(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"))
                return try LabelAPITests.object(response.body)["token"] as? String
            }
        }

        static func bearer(_ token: String) -> HTTPFields { [.authorization: "Bearer \(token)"] }

        @Test func rolesDecideWhoMayChangeWhatAndEditsNameTheUser() async throws {
            let dir = LabelStoreTests.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let runtime = try await Self.runtime(dir, http: .init(address: "127.0.0.1:0", initialAdminPassword: "first-start-secret"))
            try await AgentHTTP.ensureAdmin(runtime: runtime, logger: Logger(label: "test"))
            try await Self.app(runtime).test(.live) { client in
                // Open: health. Everything else: 401 without a session, or with a made-up token.
                try await client.execute(uri: "/api/v1/health", method: .get) { #expect($0.status == .ok) }
                try await client.execute(uri: "/api/v1/captures", method: .get) { #expect($0.status == .unauthorized) }
                try await client.execute(uri: "/api/v1/captures", method: .get, headers: Self.bearer("forged")) {
                    #expect($0.status == .unauthorized)
                }
                _ = try await Self.signIn(client, "admin", "wrong-password-1", expect: .unauthorized)
                _ = try await Self.signIn(client, "nobody", "first-start-secret", expect: .unauthorized)
                let admin = try #require(try await Self.signIn(client, "admin", "first-start-secret"))

                // The admin adds an operator and a viewer; short passwords and bad names are refused.
                try await client.execute(
                    uri: "/api/v1/users/ann", method: .put, headers: Self.bearer(admin),
                    body: try LabelAPITests.json(["password": "ann-password-1", "role": "operator"])
                ) { #expect($0.status == .ok) }
                try await client.execute(
                    uri: "/api/v1/users/vic", method: .put, headers: Self.bearer(admin),
                    body: try LabelAPITests.json(["password": "vic-password-1", "role": "viewer"])
                ) { #expect($0.status == .ok) }
                try await client.execute(
                    uri: "/api/v1/users/bob", method: .put, headers: Self.bearer(admin),
                    body: try LabelAPITests.json(["password": "short", "role": "viewer"])
                ) { #expect($0.status == .badRequest) }
                try await client.execute(
                    uri: "/api/v1/users/..%2Froot", method: .put, headers: Self.bearer(admin),
                    body: try LabelAPITests.json(["password": "long-enough-1", "role": "viewer"])
                ) { #expect($0.status == .badRequest) }
                let ann = try #require(try await Self.signIn(client, "ann", "ann-password-1"))
                let vic = try #require(try await Self.signIn(client, "vic", "vic-password-1"))

                // An operator changes the recipe; the edit log names her, even if she claims to be someone else.
                let recipe = try LabelAPITests.json([
                    "version": 0, "inspectionType": "disc",
                    "rois": [["name": "hub", "rect": ["x": 0, "y": 0, "width": 16, "height": 16]]],
                    "confidenceThreshold": 0.5, "failRule": ["minimumDefectPixels": 5],
                ])
                var claimed = Self.bearer(ann)
                claimed[HTTPField.Name("X-Loupe-User")!] = "admin"
                try await client.execute(uri: "/api/v1/recipe", method: .put, headers: claimed, body: recipe) { #expect($0.status == .ok) }
                let lastEditor = try await runtime.store.edits(limit: 1).first?.user
                #expect(lastEditor == "ann")
                // A viewer reads, but cannot change the recipe, the labels or users.
                try await client.execute(uri: "/api/v1/recipe", method: .get, headers: Self.bearer(vic)) { #expect($0.status == .ok) }
                try await client.execute(uri: "/api/v1/recipe", method: .put, headers: Self.bearer(vic), body: recipe) { response in
                    #expect(response.status == .forbidden)
                    #expect(String(buffer: response.body).contains("viewer"))
                }
                try await client.execute(
                    uri: "/api/v1/classes", method: .put, headers: Self.bearer(vic),
                    body: try LabelAPITests.json([["index": 1, "name": "x", "color": 1]])
                ) { #expect($0.status == .forbidden) }
                try await client.execute(uri: "/api/v1/users", method: .get, headers: Self.bearer(ann)) { #expect($0.status == .forbidden) }
                #expect(try await runtime.store.recipe().version == 1)
                // The cookie works like the token.
                try await client.execute(uri: "/api/v1/session", method: .get, headers: [.cookie: "other=1; loupe_session=\(vic)"]) {
                    response in
                    let role = try LabelAPITests.object(response.body)["role"] as? String
                    #expect(response.status == .ok && role == "viewer")
                }
                // A viewer may change their own password; the old sessions end.
                try await client.execute(
                    uri: "/api/v1/session/password", method: .put, headers: Self.bearer(vic),
                    body: try LabelAPITests.json(["current": "vic-password-1", "new": "vic-password-2"])
                ) { #expect($0.status == .ok) }
                try await client.execute(uri: "/api/v1/recipe", method: .get, headers: Self.bearer(vic)) {
                    #expect($0.status == .unauthorized)
                }
                _ = try #require(try await Self.signIn(client, "vic", "vic-password-2"))
                // Logout ends the session.
                try await client.execute(uri: "/api/v1/logout", method: .post, headers: Self.bearer(ann)) { #expect($0.status == .ok) }
                try await client.execute(uri: "/api/v1/recipe", method: .get, headers: Self.bearer(ann)) {
                    #expect($0.status == .unauthorized)
                }
                // Five wrong passwords lock that name out for a while, even with the right one.
                for _ in 0..<5 { _ = try await Self.signIn(client, "ann", "not-her-password", expect: .unauthorized) }
                _ = try await Self.signIn(client, "ann", "ann-password-1", expect: .tooManyRequests)
                // Passwords are stored only as salted scrypt hashes.
                let stored = try await runtime.store.users()
                #expect(
                    stored.count == 3 && Set(stored.map(\.salt)).count == 3
                        && stored.allSatisfy { $0.hash.count == 32 && $0.costLog2 == 15 })
                let database = try Data(contentsOf: URL(fileURLWithPath: dir + "/store/labels.sqlite"))
                #expect(database.range(of: Data("ann-password-1".utf8)) == nil)
            }
        }

        @Test func sessionsExpire() async throws {
            let dir = LabelStoreTests.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let runtime = try await Self.runtime(dir, http: .init(address: "127.0.0.1:0", initialAdminPassword: "first-start-secret"))
            try await AgentHTTP.ensureAdmin(runtime: runtime, logger: Logger(label: "test"))
            // Five seconds: long enough to use the session on a loaded machine, short enough to wait out.
            try await Self.app(runtime, sessionLifetime: 5).test(.live) { client in
                let asked = ContinuousClock.now
                let token = try #require(try await Self.signIn(client, "admin", "first-start-secret"))
                let signedIn = ContinuousClock.now  // the session was made between `asked` and now
                let status = try await client.execute(uri: "/api/v1/captures", method: .get, headers: Self.bearer(token)) { $0.status }
                // The session is good for its lifetime; a loaded run that took longer than that to get here proves nothing.
                if ContinuousClock.now - asked < .seconds(5) { #expect(status == .ok) }
                try await Task.sleep(until: signedIn + .milliseconds(5500))
                try await client.execute(uri: "/api/v1/captures", method: .get, headers: Self.bearer(token)) {
                    #expect($0.status == .unauthorized)
                }
            }
        }

        @Test func thePageIsServedOverHTTPSWithTheAgentCertificate() async throws {
            let pki = try TestPKI()
            let files = try pki.member(.agent, "cam-a", hosts: ["localhost"])
            let dir = pki.dir + "/agent-data"
            let runtime = try await Self.runtime(
                dir, http: .init(address: "127.0.0.1:0", tls: true, initialAdminPassword: "first-start-secret"), tls: files)
            try await AgentHTTP.ensureAdmin(runtime: runtime, logger: Logger(label: "test"))
            let app = try AgentHTTP.application(
                runtime: runtime, training: TrainingJobs(runtime: runtime, logger: Logger(label: "test")), logger: Logger(label: "test"))
            try await app.test(.ahc(.https)) { client in
                try await client.execute(uri: "/api/v1/health", method: .get) { response in
                    #expect(response.status == .ok)
                    #expect(response.headers[.strictTransportSecurity]?.hasPrefix("max-age=") == true)
                }
                // Over HTTPS the session cookie is Secure (and HttpOnly, SameSite=Strict).
                try await client.execute(
                    uri: "/api/v1/login", method: .post,
                    body: try LabelAPITests.json(["user": "admin", "password": "first-start-secret"])
                ) { response in
                    #expect(response.status == .ok)
                    let cookie = response.headers[.setCookie] ?? ""
                    #expect(cookie.contains("; Secure") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "\(cookie)")
                }
                // A client that trusts only the fleet CA and checks the host name accepts the agent's certificate.
                let port = try #require(client.port)
                let channel = try await RawTLSClient.connect(
                    port: port, caPath: files.ca, identity: nil, alpn: ["http/1.1"], tlsVersion: .tlsv13)
                let reply = try await channel.executeThenClose { inbound, outbound in
                    try await outbound.write(
                        ByteBuffer(string: "GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"))
                    var text = ""
                    for try await chunk in inbound { text += String(buffer: chunk) }
                    return text
                }
                #expect(reply.hasPrefix("HTTP/1.1 200"), "\(reply)")
                // A client that trusts another CA refuses it.
                let stranger = try TestPKI()
                await #expect(throws: (any Error).self) {
                    let other = try await RawTLSClient.connect(
                        port: port, caPath: stranger.caPath, identity: nil, alpn: ["http/1.1"], tlsVersion: .tlsv13)
                    try await other.executeThenClose { inbound, outbound in
                        try await outbound.write(ByteBuffer(string: "GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n"))
                        for try await _ in inbound {}
                    }
                }
            }
        }
    }
}
