import Foundation
#if canImport(Glibc)
import Glibc
#endif
import LoupeAgent
import LoupeManager
import Testing
import LoupeTesting

/// The deployment files are what plants copy: the example configs must load
/// with the real loaders, every key in them must be documented, and the
/// service units must keep their hardening.
@Suite struct DeployFilesTests {
    static let deploy = Repository.root + "/Deploy"

    /// "a.b.c" for every leaf key of a JSON object.
    static func keyPaths(_ object: [String: Any], prefix: String = "") -> [String] {
        object.flatMap { key, value -> [String] in
            if let nested = value as? [String: Any] { return keyPaths(nested, prefix: prefix + key + ".") }
            return [prefix + key]
        }
    }

    static func json(_ path: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
    }

    @Test func exampleConfigsLoadAndEveryKeyIsDocumented() throws {
        let readme = try String(contentsOfFile: Self.deploy + "/README.md", encoding: .utf8)
        let managers = [Self.deploy + "/manager.json", Self.deploy + "/manager-postgres.json", Self.deploy + "/compose/manager.json"]
        let agents = [Self.deploy + "/agent.json"] + (1...3).map { Self.deploy + "/compose/agent-cam-\($0).json" }
        let workers = [Self.deploy + "/worker.json"]
        for path in managers { _ = try ManagerConfig.load(path: path) }
        for path in agents { _ = try AgentConfig.load(path: path) }
        for path in workers { _ = try WorkerConfig.load(path: path) }
        for path in managers + agents + workers {
            for key in Self.keyPaths(try Self.json(path)) {
                // Documented as `key`, or as part of a `a.b`, `a.c` group such as `tls.ca`, `tls.cert`, `tls.key`.
                #expect(readme.contains("`\(key)`"), "\(path): key \(key) is not documented in Deploy/README.md")
            }
        }
    }

    /// The PostgreSQL variant: the password reaches the manager as a systemd credential, at the path its config names.
    @Test func thePostgresVariantTakesItsPasswordAsACredential() throws {
        let config = try ManagerConfig.load(path: Self.deploy + "/manager-postgres.json")
        let postgres = try #require(config.storage?.postgres)
        let dropIn = try String(contentsOfFile: Self.deploy + "/systemd/loupe-manager.service.d/postgres.conf", encoding: .utf8)
        let credential = try #require(dropIn.split(separator: "\n").first { $0.hasPrefix("LoadCredential=") })
        let name = credential.dropFirst("LoadCredential=".count).split(separator: ":").first.map(String.init) ?? ""
        #expect(
            postgres.passwordFile == "/run/credentials/loupe-manager.service/\(name)", "\(credential) vs \(postgres.passwordFile ?? "none")"
        )
        #expect(postgres.tls == .require)
        #expect(try postgres.endpoint().user == "loupe")
    }

    @Test func serviceUnitsKeepTheirHardening() throws {
        for unit in ["loupe-manager.service", "loupe-agent@.service", "loupe-worker.service"] {
            let text = try String(contentsOfFile: Self.deploy + "/systemd/" + unit, encoding: .utf8)
            for line in [
                "User=loupe", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                "CapabilityBoundingSet=", "Environment=OMP_WAIT_POLICY=PASSIVE", "SystemCallFilter=@system-service",
            ] {
                #expect(text.contains("\n" + line + "\n"), "\(unit) lacks \(line)")
            }
            // The worker keeps nothing (its set comes over the link, its model goes back): only its cache, where the set
            // is spooled while it trains, is writable.
            #expect(
                text.contains("StateDirectory=loupe/") == (unit != "loupe-worker.service"),
                "\(unit): the data directory must be its StateDirectory")
            #expect(
                text.contains("\nCacheDirectory=loupe-worker\n") == (unit == "loupe-worker.service"),
                "\(unit): the worker spools to its CacheDirectory")
            // oneDNN JIT-compiles kernels: W^X would make every inference fail.
            #expect(!text.contains("\nMemoryDenyWriteExecute=yes"), "\(unit)")
            #expect(!text.contains("ReadWritePaths="), "\(unit): only the StateDirectory is writable")
        }
    }

    /// Each compose service's volume names (the part before the colon), from its one-line flow list.
    static func composeVolumes() throws -> [String: [String]] {
        let text = try String(contentsOfFile: Self.deploy + "/compose/compose.yaml", encoding: .utf8)
        var service: String?
        var volumes: [String: [String]] = [:]
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("  "), !line.hasPrefix("   "), line.hasSuffix(":") { service = String(line.dropFirst(2).dropLast()) }
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard let service, trimmed.hasPrefix("volumes: [") else { continue }
            volumes[service] = trimmed.dropFirst("volumes: [".count).dropLast().split(separator: ",").map {
                String($0.trimmingCharacters(in: .whitespaces).split(separator: ":").first ?? "")
            }
        }
        return volumes
    }

    /// Runs the compose file's make-pki.sh with the real `loupe`, then checks
    /// what each role's folder holds and what each service mounts: no agent
    /// can read the CA key, the model-signing key or another camera's key.
    @Test func composeGivesEachRoleOnlyItsOwnSecrets() async throws {
        let root = try TemporaryDirectory.make(prefix: "loupe-compose-pki")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let bin = (try LoupeProcess.binary as NSString).deletingLastPathComponent
        let script = Process()
        script.executableURL = URL(fileURLWithPath: "/bin/sh")
        script.arguments = [Self.deploy + "/compose/make-pki.sh"]
        script.environment = ["PATH": bin + ":/usr/bin:/bin", "LOUPE_PKI_DIR": root + "/ca", "PKI_OUT": root + "/out", "HOME": root]
        try script.run()
        script.waitUntilExit()
        #expect(script.terminationStatus == 0)
        let expected: [String: Set<String>] = [
            "manager": ["ca.pem", "manager.pem", "manager-key.pem", "revoked.json", "operator-ops.pem", "operator-ops-key.pem"],
            "cam-1": ["ca.pem", "agent-cam-1.pem", "agent-cam-1-key.pem"],
            "cam-2": ["ca.pem", "agent-cam-2.pem", "agent-cam-2-key.pem"],
            "cam-3": ["ca.pem", "agent-cam-3.pem", "agent-cam-3-key.pem"],
        ]
        for (role, files) in expected {
            let held = Set(try FileManager.default.contentsOfDirectory(atPath: root + "/out/" + role))
            #expect(held == files, "\(role) holds \(held.sorted())")
            for file in held where file.hasSuffix("-key.pem") {
                let mode = try FileManager.default.attributesOfItem(atPath: root + "/out/\(role)/\(file)")[.posixPermissions] as? Int
                #expect(mode == 0o600, "\(role)/\(file) is \(String(mode ?? 0, radix: 8))")
            }
        }
        #expect(FileManager.default.fileExists(atPath: root + "/ca/ca-key.pem"))

        // Which volumes each service mounts.
        let volumes = try Self.composeVolumes()
        #expect(Set(volumes.keys) == ["pki", "manager", "cam-1", "cam-2", "cam-3"], "\(volumes.keys.sorted())")
        for (service, mounted) in volumes where service != "pki" {
            #expect(!mounted.contains("pki-ca"), "\(service) mounts the CA key's volume")
        }
        for camera in ["cam-1", "cam-2", "cam-3"] {
            let mounted = Set(volumes[camera] ?? [])
            #expect(mounted == ["pki-\(camera)", "model-keys", "./", "\(camera)-data"], "\(camera) mounts \(mounted.sorted())")
        }
        #expect(volumes["manager"]?.contains("manager-data") == true)
        // The manager publishes only the public key where the agents look for it.
        let manager = try ManagerConfig.load(path: Self.deploy + "/compose/manager.json")
        #expect(manager.publishPublicKey == "/model-keys/model-signing.pub" && manager.signingKeyPath.hasPrefix("/data/"))
        for index in 1...3 {
            let agent = try AgentConfig.load(path: Self.deploy + "/compose/agent-cam-\(index).json")
            #expect(agent.modelKeys == ["/model-keys/model-signing.pub"])
        }
    }

    /// No permission step of the runbook can widen a key's mode: no glob in a
    /// chmod, chgrp or install line matches a key file, and no line that
    /// makes files world- or group-readable names one, except the 0640
    /// install of a host's own key for its service group.
    @Test func theRunbookNeverWidensAKeysMode() throws {
        let runbook = try String(contentsOfFile: Self.deploy + "/RUNBOOK.md", encoding: .utf8)
        let keys = ["ca-key.pem", "manager-key.pem", "agent-line3-cam4-key.pem", "operator-alice-key.pem", "model-signing.key"]
        var checked = 0
        for line in runbook.split(separator: "\n").map(String.init) {
            let command = line.split(separator: "#").first.map(String.init) ?? ""
            guard command.contains("chmod") || command.contains("chgrp") || command.contains("chown") || command.contains("install -m")
            else { continue }
            checked += 1
            let words = command.split(separator: " ").map(String.init)
            for word in words where word.contains("*") || word.contains("?") {
                let pattern = (word as NSString).lastPathComponent
                for key in keys {
                    #expect(fnmatch(pattern, key, 0) != 0, "\(line): \(pattern) matches \(key)")
                }
            }
            let namesKey = words.contains { word in keys.contains((word as NSString).lastPathComponent) || word.hasSuffix("-key.pem") }
            if namesKey {
                #expect(command.contains("install -m 0640") || command.contains("install -m 0600"), "\(line) widens a key")
                #expect(!command.contains("ca-key.pem"), "\(line) installs the CA key")
            }
        }
        #expect(checked >= 3)
    }

    /// No example config puts a known password on a published port.
    @Test func noPublishedPortHasAKnownPassword() throws {
        for index in 1...3 {
            let agent = try AgentConfig.load(path: Self.deploy + "/compose/agent-cam-\(index).json")
            #expect(agent.http?.initialAdminPassword == nil, "compose agent-cam-\(index) sets a password anyone can read")
        }
        let example = try AgentConfig.load(path: Self.deploy + "/agent.json")
        if let address = example.http?.address, !address.hasPrefix("127.") && !address.hasPrefix("localhost") {
            #expect(example.http?.initialAdminPassword == nil, "Deploy/agent.json listens on \(address) with a known password")
        }
    }
}
