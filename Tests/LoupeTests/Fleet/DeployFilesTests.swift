import Foundation
#if canImport(Glibc)
import Glibc
#endif
import LoupeAgent
import LoupeManager
import Testing
import LoupeTesting
import SwiftASN1
import X509

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
        let managers =
            [Self.deploy + "/manager.json", Self.deploy + "/manager-postgres.json"]
            + ["manager", "manager-a", "manager-b"].map { Self.deploy + "/compose/\($0).json" }
        let agents =
            [Self.deploy + "/agent.json"] + (1...3).map { Self.deploy + "/compose/agent-cam-\($0).json" }
            + (1...3).map { Self.deploy + "/compose/agent-pg-cam-\($0).json" }
        let workers = [Self.deploy + "/worker.json", Self.deploy + "/compose/worker-1.json"]
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
    static func composeVolumes(_ file: String) throws -> [String: [String]] {
        var volumes: [String: [String]] = [:]
        for (service, line) in try composeLines(file) where line.hasPrefix("volumes: [") {
            volumes[service] = line.dropFirst("volumes: [".count).dropLast().split(separator: ",").map {
                String($0.trimmingCharacters(in: .whitespaces).split(separator: ":").first ?? "")
            }
        }
        return volumes
    }

    /// A compose file's lines under each service, trimmed.
    static func composeLines(_ file: String) throws -> [(service: String, line: String)] {
        let text = try String(contentsOfFile: Self.deploy + "/compose/" + file, encoding: .utf8)
        var service: String?
        var lines: [(String, String)] = []
        var inServices = false
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if !line.hasPrefix(" "), line.hasSuffix(":") { inServices = line == "services:" }
            if inServices, line.hasPrefix("  "), !line.hasPrefix("   "), line.hasSuffix(":") {
                service = String(line.dropFirst(2).dropLast())
            }
            if inServices, let service { lines.append((service, line.trimmingCharacters(in: .whitespaces))) }
        }
        return lines
    }

    /// The value of `KEY: value` in a service of a compose file.
    static func composeValue(_ file: String, service: String, key: String) throws -> String? {
        try composeLines(file).first { $0.service == service && $0.line.hasPrefix(key + ": ") }.map {
            String($0.line.dropFirst(key.count + 2))
        }
    }

    /// Runs the compose file's make-pki.sh with the real `loupe`, as the file's
    /// pki service runs it, then checks what each role's folder holds and what
    /// each service mounts: no agent or worker can read the CA key, the
    /// model-signing key or another member's key.
    @Test(arguments: ["compose.yaml", "compose-postgres.yaml"])
    func composeGivesEachRoleOnlyItsOwnSecrets(file: String) async throws {
        let root = try TemporaryDirectory.make(prefix: "loupe-compose-pki")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let bin = (try LoupeProcess.binary as NSString).deletingLastPathComponent
        let script = Process()
        script.executableURL = URL(fileURLWithPath: "/bin/sh")
        script.arguments = [Self.deploy + "/compose/make-pki.sh"]
        var environment = ["PATH": bin + ":/usr/bin:/bin", "LOUPE_PKI_DIR": root + "/ca", "PKI_OUT": root + "/out", "HOME": root]
        for key in ["PKI_MANAGERS", "PKI_CAMERAS", "PKI_WORKERS"] {
            if let value = try Self.composeValue(file, service: "pki", key: key) { environment[key] = value }
        }
        script.environment = environment
        try script.run()
        script.waitUntilExit()
        #expect(script.terminationStatus == 0)
        let managers = (environment["PKI_MANAGERS"] ?? "manager").split(separator: " ").map(String.init)
        let workers = (environment["PKI_WORKERS"] ?? "").split(separator: " ").map(String.init)
        let cameras = ["cam-1", "cam-2", "cam-3"]
        var expected: [String: Set<String>] = [:]
        for manager in managers {
            expected[manager] = ["ca.pem", "manager.pem", "manager-key.pem", "revoked.json", "operator-ops.pem", "operator-ops-key.pem"]
        }
        for camera in cameras { expected[camera] = ["ca.pem", "agent-\(camera).pem", "agent-\(camera)-key.pem"] }
        for worker in workers { expected[worker] = ["ca.pem", "worker-\(worker).pem", "worker-\(worker)-key.pem"] }
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: root + "/out")) == Set(expected.keys))
        for (role, files) in expected {
            let held = Set(try FileManager.default.contentsOfDirectory(atPath: root + "/out/" + role))
            #expect(held == files, "\(role) holds \(held.sorted())")
            for file in held where file.hasSuffix("-key.pem") {
                let mode = try FileManager.default.attributesOfItem(atPath: root + "/out/\(role)/\(file)")[.posixPermissions] as? Int
                #expect(mode == 0o600, "\(role)/\(file) is \(String(mode ?? 0, radix: 8))")
            }
        }
        #expect(FileManager.default.fileExists(atPath: root + "/ca/ca-key.pem"))
        // Each manager's certificate names the host its service is reached by.
        for manager in managers {
            let pem = try String(contentsOfFile: root + "/out/\(manager)/manager.pem", encoding: .utf8)
            let names =
                try Certificate(pemEncoded: pem).extensions.subjectAlternativeNames?.compactMap { name -> String? in
                    if case .dnsName(let host) = name { return host }
                    return nil
                } ?? []
            #expect(names.contains(manager), "\(manager)'s certificate names \(names)")
        }

        // Which volumes each service mounts.
        let volumes = try Self.composeVolumes(file)
        let postgres = file == "compose-postgres.yaml"
        let services = Set(managers + cameras + workers + ["pki"] + (postgres ? ["db"] : []))
        #expect(Set(volumes.keys) == services, "\(volumes.keys.sorted())")
        for (service, mounted) in volumes where service != "pki" {
            #expect(!mounted.contains("pki-ca"), "\(service) mounts the CA key's volume")
            #expect(!mounted.contains("signing-key") || managers.contains(service), "\(service) mounts the signing key")
        }
        for camera in cameras {
            let mounted = Set(volumes[camera] ?? [])
            #expect(mounted == ["pki-\(camera)", "model-keys", "./", "\(camera)-data"], "\(camera) mounts \(mounted.sorted())")
        }
        for worker in workers {
            #expect(
                Set(volumes[worker] ?? []) == ["pki-\(worker)", "\(worker)-scratch", "./"], "\(worker) mounts \(volumes[worker] ?? [])")
        }
        for manager in managers {
            let mounted = Set(volumes[manager] ?? [])
            let own: Set<String> = ["pki-\(manager)", "\(manager)-data", "model-keys", "./"]
            #expect(mounted == own.union(postgres ? ["signing-key"] : []), "\(manager) mounts \(mounted.sorted())")
        }
        // The managers publish only the public key where the agents look for it; with several, they share one signing
        // key (in its own volume) and one database, and every camera and worker reaches a manager by its service name.
        for manager in managers {
            let config = try ManagerConfig.load(path: Self.deploy + "/compose/\(manager).json")
            #expect(config.publishPublicKey == "/model-keys/model-signing.pub")
            #expect(config.signingKeyPath.hasPrefix(postgres ? "/signing-key/" : "/data/"), "\(config.signingKeyPath)")
            #expect((config.storage?.postgres != nil) == postgres)
            if let database = config.storage?.postgres {
                #expect(try database.endpoint().host == "db" && database.passwordFile == "/run/secrets/db-password")
            }
        }
        for (index, camera) in cameras.enumerated() {
            let agent = try AgentConfig.load(path: Self.deploy + "/compose/agent-\(postgres ? "pg-" : "")cam-\(index + 1).json")
            #expect(agent.modelKeys == ["/model-keys/model-signing.pub"])
            let hosts = Set((agent.manager?.addresses ?? []).map { String($0.split(separator: ":").first ?? "") })
            #expect(hosts == Set(managers), "\(camera) reaches \(hosts.sorted())")
        }
        for worker in workers {
            let config = try WorkerConfig.load(path: Self.deploy + "/compose/\(worker).json")
            #expect(Set(config.managers.map { String($0.split(separator: ":").first ?? "") }) == Set(managers))
            #expect(config.scratchPath.hasPrefix("/data"), "\(config.scratchPath)")
        }
    }

    /// The image's run stage installs the Debian package of every library the
    /// `loupe` binary links (the Swift runtime is linked in statically there):
    /// a new C dependency left out of it fails here, not in a plant.
    @Test func theImageInstallsEveryLibraryTheBinaryLinks() throws {
        func output(_ tool: String, _ arguments: [String]) throws -> String {
            let process = Process()
            let pipe = Pipe()
            process.executableURL = URL(fileURLWithPath: tool)
            process.arguments = arguments
            process.standardOutput = pipe
            process.standardError = FileHandle.nullDevice
            try process.run()
            let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            return process.terminationStatus == 0 ? text : ""
        }
        let binary = try LoupeProcess.binary
        let needed = try output("/usr/bin/readelf", ["-d", binary]).split(separator: "\n").compactMap { line -> String? in
            guard line.contains("(NEEDED)"), let open = line.firstIndex(of: "["), let close = line.lastIndex(of: "]") else { return nil }
            return String(line[line.index(after: open)..<close])
        }
        #expect(needed.count > 5, "readelf found \(needed) in \(binary)")
        var paths: [String: String] = [:]
        for line in try output("/usr/bin/ldd", [binary]).split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count >= 3, parts[1] == "=>" { paths[String(parts[0].trimmingCharacters(in: .whitespaces))] = String(parts[2]) }
        }
        let containerfile = try String(contentsOfFile: Self.deploy + "/container/Containerfile", encoding: .utf8)
        let runStage = containerfile.components(separatedBy: "\nFROM ").last ?? ""
        let installed = Set(runStage.split(whereSeparator: { " \\\n".contains($0) }).map(String.init))
        var checked = 0
        for library in needed {
            if library.hasPrefix("ld-linux") { continue }  // the loader, libc6's
            let path = try #require(paths[library], "ldd does not resolve \(library)")
            if path.hasPrefix("/opt/") || path.contains("/swift/") { continue }  // the Swift runtime: static in the image
            let owner = try output("/usr/bin/dpkg", ["-S", path]) + output("/usr/bin/dpkg", ["-S", "/usr" + path])
            let package = try #require(owner.split(separator: ":").first.map(String.init), "no Debian package holds \(path)")
            checked += 1
            // libc6 and libgcc-s1 are in every Debian image.
            #expect(
                ["libc6", "libgcc-s1"].contains(package) || installed.contains(package),
                "\(library) (\(package)) is not installed by the run stage")
        }
        #expect(checked >= 10)
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
