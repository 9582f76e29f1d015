import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import LoupePKI
import LoupeProto
import LoupeWire
import Testing
import LoupeTesting

/// Real `loupe manager` and `loupe agent` processes on loopback.
@Suite(.serialized) struct ProcessTests {
    private func fleet(port: Int, operator files: TLSFiles) async throws -> [Loupe_V1_CameraStatus] {
        let client = WireClientConfiguration(host: "localhost", port: port, tls: files, connectTimeout: .seconds(3))
        return try await WireClient.withConnection(client) { connection, _ in
            let reply = try await connection.request(.fleetStatusQuery(Loupe_V1_FleetStatusQuery()))
            guard case .fleetStatusReply(let fleet) = reply.body else { return [] }
            return fleet.cameras
        }
    }

    private func agentConfig(pki: TestPKI, camera: String, port: Int) async throws -> String {
        try await writeAgentConfig(pki: pki, camera: camera, port: port)
    }

    @Test func anAgentSurvivesAManagerRestartAndShutsDownGracefully() async throws {
        let pki = try TestPKI()
        let alice = try pki.member(.operator, "alice")
        let first = try ManagerProcessSetup(pki: pki)
        let (manager, port) = try await first.start()
        let agent = try LoupeProcess(
            ["agent", "--config", try await agentConfig(pki: pki, camera: "cam-7", port: port)], log: pki.dir + "/agent.log")

        let online = try await eventually {
            try await fleet(port: port, operator: alice).contains { $0.cameraID == "cam-7" && $0.online && $0.status.uptimeSeconds >= 0 }
        }
        #expect(online, "agent never came online:\n\(agent.log)\n\(manager.log)")
        // Its label store is open, and its status reports the store's outbox and recipe.
        #expect(FileManager.default.fileExists(atPath: pki.dir + "/agent-cam-7-data/store/labels.sqlite"))
        let status = try #require(try await fleet(port: port, operator: alice).first { $0.cameraID == "cam-7" }?.status)
        #expect(status.outboxDepth == 0 && status.recipeVersion == "0")

        // Kill the manager outright, then bring it back on the same port.
        manager.signal(SIGKILL)
        _ = await manager.waitForExit()
        let again = try ManagerProcessSetup(pki: pki, port: port)
        let (restarted, _) = try await again.start()
        let back = try await eventually { try await fleet(port: port, operator: alice).contains { $0.cameraID == "cam-7" && $0.online } }
        #expect(back, "agent did not reconnect after the restart:\n\(agent.log)")
        #expect(agent.process.isRunning)

        // SIGTERM: the agent says goodbye and exits cleanly; the manager sees it leave.
        agent.signal(SIGTERM)
        #expect(await agent.waitForExit(timeout: .seconds(10)) == 0, "agent log:\n\(agent.log)")
        let gone = try await eventually(timeout: .seconds(5)) {
            try await fleet(port: port, operator: alice).contains { $0.cameraID == "cam-7" && !$0.online }
        }
        #expect(gone)
        #expect(agent.log.contains("manager link stopped"))

        restarted.signal(SIGTERM)
        #expect(await restarted.waitForExit(timeout: .seconds(10)) == 0, "manager log:\n\(restarted.log)")
        #expect(restarted.log.contains("manager stopped"))
    }

    /// A standalone camera (no manager) serving its label API on loopback.
    @Test func aStandaloneAgentServesTheLabelAPI() async throws {
        let pki = try TestPKI()
        let path = try await writeAgentConfig(
            pki: pki, camera: "cam-solo", port: nil, dataDir: pki.dir + "/solo-data", extra: ["http": ["address": "127.0.0.1:0"]])
        let agent = try LoupeProcess(["agent", "--config", path], log: pki.dir + "/solo.log")
        let address = try await agent.loggedAddress(after: "http listening")
        let base = try #require(address, "agent never said where it listens:\n\(agent.log)")
        let (data, response) = try await URLSession.shared.data(from: URL(string: "http://\(base)/api/v1/health")!)
        #expect((response as? HTTPURLResponse)?.statusCode == 200)
        #expect(String(decoding: data, as: UTF8.self).contains("ok"))
        // Everything else needs a session: first start made `admin` with a random password in a 0600 file.
        let (_, refused) = try await URLSession.shared.data(from: URL(string: "http://\(base)/api/v1/captures/7")!)
        #expect((refused as? HTTPURLResponse)?.statusCode == 401)
        let passwordFile = pki.dir + "/solo-data/initial-admin-password"
        let password = try String(contentsOfFile: passwordFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(password.count == 16)
        #expect((try FileManager.default.attributesOfItem(atPath: passwordFile)[.posixPermissions] as? NSNumber)?.intValue == 0o600)
        var login = URLRequest(url: URL(string: "http://\(base)/api/v1/login")!)
        login.httpMethod = "POST"
        login.httpBody = try JSONSerialization.data(withJSONObject: ["user": "admin", "password": password])
        let (session, signedIn) = try await URLSession.shared.data(for: login)
        #expect((signedIn as? HTTPURLResponse)?.statusCode == 200, "\(String(decoding: session, as: UTF8.self))")
        let token = try #require((try JSONSerialization.jsonObject(with: session) as? [String: Any])?["token"] as? String)
        var get = URLRequest(url: URL(string: "http://\(base)/api/v1/captures/7")!)
        get.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        let (_, missing) = try await URLSession.shared.data(for: get)
        #expect((missing as? HTTPURLResponse)?.statusCode == 404)
        agent.signal(SIGTERM)
        #expect(await agent.waitForExit(timeout: .seconds(10)) == 0, "agent log:\n\(agent.log)")
    }

    @Test func sighupReloadsTheRevocationList() async throws {
        let pki = try TestPKI()
        let listPath = pki.dir + "/revoked.json"
        try RevocationList().save(path: listPath)
        // Polling off: only SIGHUP may bring the change in.
        let setup = try ManagerProcessSetup(pki: pki, revocationList: listPath, revocationPollSeconds: 0)
        let (manager, port) = try await setup.start()
        defer { manager.signal(SIGKILL) }
        let agent = try pki.member(.agent, "cam-gone")
        let client = WireClientConfiguration(host: "localhost", port: port, tls: agent, connectTimeout: .seconds(3))

        try RevocationList(entries: [
            .init(serial: try pki.serial(of: agent), name: "cam-gone", role: .agent, revokedAt: Date(), reason: "decommissioned")
        ]).save(path: listPath)
        try await Task.sleep(for: .milliseconds(1500))
        let stillIn = try await WireClient.withConnection(client) { _, welcome in welcome.peerIdentity }
        #expect(stillIn == "cam-gone", "without SIGHUP or polling the old list stays in force")

        manager.signal(SIGHUP)
        let refused = try await eventually(timeout: .seconds(10)) {
            do {
                _ = try await WireClient.withConnection(client) { _, _ in }
                return false
            } catch WireError.remote(let code, _) {
                return code == .certificateRevoked
            }
        }
        #expect(refused, "manager log:\n\(manager.log)")
        #expect(manager.log.contains("trigger=SIGHUP"))
    }

    @Test func theCClientTalksToARealManager() async throws {
        let build = try TemporaryDirectory.make(prefix: "loupe-c-client")
        let make = Process()
        make.executableURL = URL(fileURLWithPath: "/usr/bin/make")
        make.arguments = ["-s", "-C", Repository.root + "/Tests/CClient", "BUILD=\(build)"]
        try make.run()
        make.waitUntilExit()
        try #require(make.terminationStatus == 0, "the C client did not build; see the make output above")

        let pki = try TestPKI()
        let setup = try ManagerProcessSetup(pki: pki, heartbeatSeconds: 0.3)
        let (manager, port) = try await setup.start()
        defer { manager.signal(SIGKILL) }
        let camera = try pki.member(.agent, "cam-firmware")

        let client = Process()
        let output = Pipe()
        client.executableURL = URL(fileURLWithPath: build + "/loupe-c-client")
        client.arguments = ["localhost", "\(port)", camera.ca, camera.cert, camera.key, "5"]
        client.standardOutput = output
        client.standardError = output
        try client.run()
        client.waitUntilExit()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(client.terminationStatus == 0, "\(text)\n\(manager.log)")
        #expect(text.contains("welcome identity=cam-firmware role=1 manager=process-plant"))
        #expect(text.contains("echoes=5"))
        #expect(text.contains("goodbye"))
        #expect(manager.log.contains("software=loupe-c-client"))
    }
}
