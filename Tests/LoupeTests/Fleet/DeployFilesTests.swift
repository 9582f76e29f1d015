import Foundation
import LoupeAgent
import LoupeManager
import Testing

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
        let managers = [Self.deploy + "/manager.json", Self.deploy + "/compose/manager.json"]
        let agents = [Self.deploy + "/agent.json"] + (1...3).map { Self.deploy + "/compose/agent-cam-\($0).json" }
        for path in managers { _ = try ManagerConfig.load(path: path) }
        for path in agents { _ = try AgentConfig.load(path: path) }
        for path in managers + agents {
            for key in Self.keyPaths(try Self.json(path)) {
                // Documented as `key`, or as part of a `a.b`, `a.c` group such as `tls.ca`, `tls.cert`, `tls.key`.
                #expect(readme.contains("`\(key)`"), "\(path): key \(key) is not documented in Deploy/README.md")
            }
        }
    }

    @Test func serviceUnitsKeepTheirHardening() throws {
        for unit in ["loupe-manager.service", "loupe-agent@.service"] {
            let text = try String(contentsOfFile: Self.deploy + "/systemd/" + unit, encoding: .utf8)
            for line in ["User=loupe", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                         "CapabilityBoundingSet=", "Environment=OMP_WAIT_POLICY=PASSIVE", "SystemCallFilter=@system-service"] {
                #expect(text.contains("\n" + line + "\n"), "\(unit) lacks \(line)")
            }
            #expect(text.contains("StateDirectory=loupe/"), "\(unit): the data directory must be its StateDirectory")
            // oneDNN JIT-compiles kernels: W^X would make every inference fail.
            #expect(!text.contains("\nMemoryDenyWriteExecute=yes"), "\(unit)")
            #expect(!text.contains("ReadWritePaths="), "\(unit): only the StateDirectory is writable")
        }
    }
}
