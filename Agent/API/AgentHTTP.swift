public import Foundation
public import Hummingbird
import HummingbirdCore
import LoupeStorage
public import ServiceLifecycle
import HummingbirdTLS
public import Logging
import LoupeWire
import NIOCore
import NIOSSL

/// The agent's whole HTTP side: access control in front of the capture, ROI,
/// recipe, label, live, training and model routes, over HTTP or HTTPS with the agent's certificate.
public enum AgentHTTP {
    /// The agent's router. Every route declares its access where it is
    /// registered; `table` collects them (the security tests enumerate it).
    /// The security headers wrap everything, errors included; the access
    /// middleware then enforces the matched route's declared access.
    public static func router(
        runtime: AgentRuntime, training: TrainingJobs, sessionLifetime: TimeInterval, secureCookies: Bool,
        signIns: SignInGuard = SignInGuard(), table: RouteTable = RouteTable()
    ) -> AgentRouter {
        let router = AgentRouter(context: AgentRequestContext.self)
        router.add(middleware: SecurityHeadersMiddleware(secure: secureCookies))
        router.add(middleware: AccessMiddleware(store: runtime.store, table: table))
        let routes = AgentRoutes(router: router, table: table)
        AccessAPI(
            store: runtime.store, sessionLifetime: sessionLifetime, secureCookies: secureCookies, signIns: signIns,
            initialPasswordFile: initialPasswordPath(runtime)
        ).register(on: routes)
        registerAPI(runtime: runtime, training: training, on: routes)
        PageAPI().register(on: routes)
        return router
    }

    /// The API by resource, behind whatever access control `routes` has: health, captures, one capture's ROIs, the
    /// recipe, the labels, live inspection, training and the model, the image library.
    public static func registerAPI(runtime: AgentRuntime, training: TrainingJobs, on routes: AgentRoutes) {
        AgentAPI.registerHealth(on: routes)
        CaptureAPI(runtime: runtime).register(on: routes)
        ROIAPI(runtime: runtime).register(on: routes)
        RecipeAPI(runtime: runtime).register(on: routes)
        LabelAPI(store: runtime.store).register(on: routes)
        LiveAPI(runtime: runtime).register(on: routes)
        ModelAPI(runtime: runtime, training: training).register(on: routes)
        LibraryAPI(runtime: runtime).register(on: routes)
    }

    static func initialPasswordPath(_ runtime: AgentRuntime) -> String { runtime.config.dataDir + "/initial-admin-password" }

    /// The server: HTTPS when `http.tls` is set (TLS 1.2+ for browsers, the
    /// agent's fleet certificate, which must carry the page's host names).
    public static func application(
        runtime: AgentRuntime, training: TrainingJobs, logger: Logger, services: [any Service] = [],
        signIns: SignInGuard = SignInGuard(), yieldToInspection: Bool = true,
        onRunning: @escaping @Sendable (String) -> Void = { _ in }
    ) throws -> some ApplicationProtocol {
        let config = runtime.config
        let settings = config.http ?? AgentConfig.HTTPSettings(address: "127.0.0.1:0")
        let (host, port) = try parseAddress(settings.address)
        let secure = settings.tls ?? false
        let router = Self.router(
            runtime: runtime, training: training, sessionLifetime: (settings.sessionHours ?? 12) * 3600, secureCookies: secure,
            signIns: signIns)
        var server = HTTPServerBuilder.http1()
        if secure {
            var tls = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(config.tls.cert).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: config.tls.key, format: .pem)))
            tls.minimumTLSVersion = .tlsv12
            tls.applicationProtocols = ["http/1.1"]
            server = try .tls(.http1(), tlsConfiguration: tls)
        }
        let scheme = secure ? "https" : "http"
        return Application(
            router: router, server: server, configuration: .init(address: .hostname(host, port: port), serverName: "loupe-agent"),
            services: services,
            onServerRunning: { channel in
                onRunning("\(scheme)://\(channel.localAddress?.ipAddress ?? host):\(channel.localAddress?.port ?? port)")
            },
            eventLoopGroupProvider: yieldToInspection ? .shared(PagePriority.eventLoops) : .singleton,
            logger: logger)
    }

    /// The page's server as the agent runs it: `application`, its handlers on the page's lowered-priority
    /// threads (`PagePriority`), so that the page yields to live inspection. `yieldToInspection` false
    /// runs it all at the process's priority (for comparison in `loupe bench login-flood`).
    public static func service(
        runtime: AgentRuntime, training: TrainingJobs, logger: Logger, signIns: SignInGuard = SignInGuard(),
        yieldToInspection: Bool = true, onRunning: @escaping @Sendable (String) -> Void = { _ in }
    ) throws -> any Service {
        let app = try application(
            runtime: runtime, training: training, logger: logger, signIns: signIns, yieldToInspection: yieldToInspection,
            onRunning: onRunning)
        return yieldToInspection ? PagePriority.Yielding(app) : app
    }

    /// At first start (no users yet), creates `admin` with the configured
    /// initial password, or with a random one written to
    /// DATADIR/initial-admin-password (mode 0600 from its first byte) and
    /// named in the log. The file is removed when the admin changes the
    /// password on the page.
    public static func ensureAdmin(runtime: AgentRuntime, logger: Logger) async throws {
        let store = runtime.store
        guard try await store.users().isEmpty else { return }
        if let password = runtime.config.http?.initialAdminPassword {
            try await store.setUser("admin", password: password, role: .admin)
            logger.notice("first start: user admin created with the configured initial password; change it on the page")
            return
        }
        let alphabet = Array("abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789")
        let password = String((0..<16).map { _ in alphabet.randomElement()! })
        let path = initialPasswordPath(runtime)
        try BlobStore.replaceDurably(path, with: Data((password + "\n").utf8), mode: 0o600)
        try await store.setUser("admin", password: password, role: .admin)
        logger.notice("first start: user admin created", metadata: ["password-file": "\(path)"])
    }
}
