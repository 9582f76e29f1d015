import Foundation
import Logging
import LoupeManager
import LoupePKI
import LoupeTesting
import LoupeWire
import NIOCore
import ServiceLifecycle

/// A real ManagerService running in this process on a loopback port
/// (`InProcessManager`), with the test PKI it trusts.
final class ManagerHarness: @unchecked Sendable {
    let pki: TestPKI
    let manager: InProcessManager
    var config: ManagerConfig { manager.config }
    var service: ManagerService { manager.service }
    var port: Int { manager.port }

    static func start(
        pki: TestPKI? = nil,
        revocationList: String? = nil,
        heartbeatSeconds: Double = 1,
        // Generous: at the start of a full suite run on 2 cores, dozens of processes and a database start at once.
        idleTimeoutSeconds: Double = 15,
        maxFrameBytes: Int? = nil,
        revocationPollSeconds: Double = 0.2,
        logger given: Logger? = nil,
        configure: (inout ManagerConfig) -> Void = { _ in }
    ) async throws -> ManagerHarness {
        let pki = try pki ?? TestPKI()
        var config = ManagerConfig(
            managerId: "test-plant", listen: "127.0.0.1:0", tls: try pki.manager(),
            revocationList: revocationList, dataDir: pki.dir + "/manager-data",
            maxFrameBytes: maxFrameBytes, heartbeatSeconds: heartbeatSeconds, idleTimeoutSeconds: idleTimeoutSeconds
        )
        config.revocationPollSeconds = revocationPollSeconds
        configure(&config)
        var logger = given ?? Logger(label: "test.manager")
        if given == nil { logger.logLevel = .warning }
        return ManagerHarness(pki: pki, manager: try await InProcessManager.start(config, logger: logger))
    }

    private init(pki: TestPKI, manager: InProcessManager) {
        self.pki = pki
        self.manager = manager
    }

    func client(_ files: TLSFiles, host: String = "localhost", protocolVersion: UInt32 = WireProtocol.version) -> WireClientConfiguration {
        WireClientConfiguration(
            host: host, port: port, tls: files,
            connection: ConnectionSettings(heartbeatInterval: .seconds(1), idleTimeout: .seconds(15), requestTimeout: .seconds(30)),
            protocolVersion: protocolVersion, connectTimeout: .seconds(30)
        )
    }

    func stop() async { await manager.stop() }
}
