import Foundation
import LoupeAgent
import LoupeManager
import LoupePKI
import LoupeWire
import Testing
import X509
import LoupeTesting

/// `loupe tls …` as an operator runs it, and the files it leaves behind.
@Suite struct FleetPKITests {
    private func run(_ arguments: [String], in folder: String) throws -> (status: Int32, output: String) {
        let process = Process()
        let pipe = Pipe()
        process.executableURL = URL(fileURLWithPath: try LoupeProcess.binary)
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: folder)
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }

    private func mode(_ path: String) throws -> Int {
        try (FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber)?.intValue ?? -1
    }

    @Test func theCLICreatesACAIssuesCertificatesWithRolesAndRevokes() throws {
        let folder = try TemporaryDirectory.make(prefix: "loupe-cli")
        #expect(try run(["tls", "ca", "create", "--dir", "pki", "--org", "Plant 9"], in: folder).status == 0)
        #expect(try mode(folder + "/pki/ca-key.pem") == 0o600)

        let again = try run(["tls", "ca", "create", "--dir", "pki"], in: folder)
        #expect(again.status != 0)
        #expect(again.output.contains("already exists"), "\(again.output)")

        #expect(
            try run(
                ["tls", "cert", "create", "--dir", "pki", "--manager", "--host", "localhost", "--host", "127.0.0.1", "--host", "::1"],
                in: folder
            ).status == 0)
        #expect(try run(["tls", "cert", "create", "--dir", "pki", "--agent", "cam-12"], in: folder).status == 0)
        #expect(try run(["tls", "cert", "create", "--dir", "pki", "--operator", "bob"], in: folder).status == 0)
        for key in ["manager-key.pem", "agent-cam-12-key.pem", "operator-bob-key.pem"] {
            #expect(try mode(folder + "/pki/" + key) == 0o600, "\(key) must be private")
        }

        let manager = try Certificate.load(path: folder + "/pki/manager.pem")
        #expect(try PeerIdentity(certificate: manager).role == .manager)
        let names = try #require(try manager.extensions.subjectAlternativeNames)
        #expect(names.contains(.dnsName("localhost")))
        #expect(names.count == 3)
        let agent = try PeerIdentity(certificate: .load(path: folder + "/pki/agent-cam-12.pem"))
        #expect(agent.role == .agent && agent.name == "cam-12")
        let ca = try Certificate.load(path: folder + "/pki/ca.pem")
        #expect(try Certificate.load(path: folder + "/pki/agent-cam-12.pem").issuer == ca.subject)

        let revoke = try run(["tls", "revoke", "--dir", "pki", "--cert", "pki/agent-cam-12.pem", "--reason", "camera stolen"], in: folder)
        #expect(revoke.status == 0, "\(revoke.output)")
        let list = try RevocationList.load(path: folder + "/pki/revoked.json")
        #expect(list.isRevoked(serial: agent.serial))
        #expect(list.entries.first?.name == "cam-12")
        #expect(list.entries.first?.reason == "camera stolen")
        #expect(!list.isRevoked(serial: try PeerIdentity(certificate: manager).serial))
    }

    @Test func badNamesAndUsageAreRefusedWithAReason() throws {
        let folder = try TemporaryDirectory.make(prefix: "loupe-cli")
        _ = try run(["tls", "ca", "create", "--dir", "pki"], in: folder)
        let traversal = try run(["tls", "cert", "create", "--dir", "pki", "--agent", "../../etc/cam"], in: folder)
        #expect(traversal.status != 0)
        #expect(traversal.output.contains("only letters, digits"), "\(traversal.output)")
        #expect(!FileManager.default.fileExists(atPath: folder + "/etc"))
        let hostless = try run(["tls", "cert", "create", "--dir", "pki", "--manager"], in: folder)
        #expect(hostless.status != 0)
        #expect(hostless.output.contains("--host"))
        let noCA = try run(["tls", "cert", "create", "--dir", "missing", "--agent", "cam-1"], in: folder)
        #expect(noCA.status != 0)
        #expect(noCA.output.contains("missing/ca.pem"), "\(noCA.output)")
    }

    @Test func configFilesNameTheBadKey() throws {
        let folder = try TemporaryDirectory.make(prefix: "loupe-config")
        let path = folder + "/manager.json"
        try writeJSON(["managerId": "p", "listen": "nowhere", "tls": ["ca": "a", "cert": "b", "key": "c"], "dataDir": "d"], to: path)
        #expect(throws: ConfigError.invalid(path: path, key: "listen", reason: "expected HOST:PORT, got \"nowhere\"")) {
            try ManagerConfig.load(path: path)
        }
        try writeJSON(["managerId": "p", "listen": "0.0.0.0:7443", "dataDir": "d"], to: path)
        #expect(throws: ConfigError.invalid(path: path, key: "tls", reason: "is required but missing")) {
            try ManagerConfig.load(path: path)
        }
        // The database: a password in the URL is refused (it would sit in a config file and in process listings),
        // and the password file's path is taken from the config's folder like every other path.
        let base: [String: Any] = [
            "managerId": "p", "listen": "0.0.0.0:7443", "tls": ["ca": "a", "cert": "b", "key": "c"], "dataDir": "d",
        ]
        try writeJSON(base.merging(["storage": ["postgres": ["url": "postgres://loupe:hunter2@db:5432/loupe"]]]) { $1 }, to: path)
        #expect(
            throws: ConfigError.invalid(
                path: path, key: "storage.postgres.url",
                reason: "storage: storage url must not carry a password; give passwordFile or set LOUPE_DATABASE_PASSWORD")
        ) {
            try ManagerConfig.load(path: path)
        }
        try writeJSON(base.merging(["storage": ["postgres": ["url": "mysql://db/loupe"]]]) { $1 }, to: path)
        #expect(throws: ConfigError.self) { try ManagerConfig.load(path: path) }
        try writeJSON(base.merging(["storage": ["postgres": ["url": "postgres://loupe@db/loupe", "maxConnections": 0]]]) { $1 }, to: path)
        #expect(throws: ConfigError.invalid(path: path, key: "storage.postgres.maxConnections", reason: "must be 1…1000")) {
            try ManagerConfig.load(path: path)
        }
        try writeJSON(
            base.merging(["storage": ["postgres": ["url": "postgres://loupe@db/loupe", "passwordFile": "secrets/db", "tls": "require"]]]) {
                $1
            },
            to: path)
        let postgres = try #require(try ManagerConfig.load(path: path).storage?.postgres)
        #expect(postgres.passwordFile == folder + "/secrets/db" && postgres.tls == .require)
        #expect(try postgres.endpoint() == ("db", 5432, "loupe", "loupe"))
        #expect(throws: StorageSetupError.self) { try postgres.password() }
        #expect(
            try PostgresSettings(url: "postgres://loupe@db/loupe").password(environment: ["LOUPE_DATABASE_PASSWORD": "from-env"])
                == "from-env")
        let agentPath = folder + "/agent.json"
        try writeJSON(
            [
                "cameraId": "cam-1", "tls": ["ca": "a", "cert": "b", "key": "c"], "dataDir": "d",
                "manager": ["address": "m:1", "heartbeatSeconds": "fast"],
            ], to: agentPath)
        #expect(throws: ConfigError.invalid(path: agentPath, key: "manager.heartbeatSeconds", reason: "expected Double")) {
            try AgentConfig.load(path: agentPath)
        }
        // Several managers: each address checked, none twice, tried in the order given.
        let agentBase: [String: Any] = ["cameraId": "cam-1", "tls": ["ca": "a", "cert": "b", "key": "c"], "dataDir": "d"]
        try writeJSON(
            agentBase.merging(["manager": ["address": "m1:7443", "fallbackAddresses": ["m2:7443", "m3"]]]) { $1 }, to: agentPath)
        #expect(throws: ConfigError.invalid(path: agentPath, key: "manager.fallbackAddresses", reason: "expected HOST:PORT, got \"m3\"")) {
            try AgentConfig.load(path: agentPath)
        }
        try writeJSON(
            agentBase.merging(["manager": ["address": "m1:7443", "fallbackAddresses": ["m2:7443", "m1:7443"]]]) { $1 },
            to: agentPath)
        #expect(
            throws: ConfigError.invalid(
                path: agentPath, key: "manager.fallbackAddresses",
                reason: "names an address twice (manager.address included)")
        ) {
            try AgentConfig.load(path: agentPath)
        }
        try writeJSON(agentBase.merging(["manager": ["address": "m1:7443", "fallbackAddresses": ["m2:7443"]]]) { $1 }, to: agentPath)
        #expect(try AgentConfig.load(path: agentPath).manager?.addresses == ["m1:7443", "m2:7443"])
        try writeJSON(base.merging(["registryPollSeconds": 0]) { $1 }, to: path)
        #expect(throws: ConfigError.invalid(path: path, key: "registryPollSeconds", reason: "must be more than 0 and at most 3600")) {
            try ManagerConfig.load(path: path)
        }
        // Relative paths are taken from the config file's folder.
        try writeJSON(["cameraId": "cam-1", "tls": ["ca": "pki/ca.pem", "cert": "b", "key": "c"], "dataDir": "data"], to: agentPath)
        let config = try AgentConfig.load(path: agentPath)
        #expect(config.tls.ca == folder + "/pki/ca.pem")
        #expect(config.dataDir == folder + "/data")
        #expect(throws: ConfigError.unreadable(path: folder + "/absent.json")) { try AgentConfig.load(path: folder + "/absent.json") }
    }

    @Test func reconnectDelaysGrowWithJitterUpToTheCeiling() {
        let backoff = Backoff(initial: 0.5, maximum: 30)
        var generator = SystemRandomNumberGenerator()
        for failures in 1...12 {
            let ceiling = min(30, 0.5 * pow(2, Double(failures - 1)))
            let delays = (0..<50).map { _ in backoff.delay(afterFailures: failures, using: &generator) }
            #expect(delays.allSatisfy { $0 >= ceiling / 2 && $0 <= ceiling })
            #expect(Set(delays).count > 1, "jitter spreads reconnects")
        }
    }
}
