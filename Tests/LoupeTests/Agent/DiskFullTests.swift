import Foundation
import GRDB
import LoupeAgent
import LoupeImaging
import LoupeManager
import Testing
import LoupeTesting

/// A real, small tmpfs mounted in the test under a real `loupe manager` and
/// a real `loupe agent`: the disk fills, each says so by name, loses and
/// corrupts nothing, and carries on when the space comes back (the tmpfs is
/// remounted larger). Mounting needs root, as CI runs; elsewhere the tests
/// say they are skipped.
@Suite(.serialized) struct DiskFullTests {
    /// A tmpfs of `megabytes` at `path`, or nil (with the reason printed) when this machine cannot mount one.
    static func mountTmpfs(_ path: String, megabytes: Int) throws -> Bool {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        guard getuid() == 0 else {
            print("SKIPPED: disk-full tests need root to mount a tmpfs (CI runs as root)")
            return false
        }
        let (status, output) = shell("/bin/mount", ["-t", "tmpfs", "-o", "size=\(megabytes)m", "tmpfs", path])
        guard status == 0 else {
            print("SKIPPED: cannot mount a tmpfs here: \(output)")
            return false
        }
        return true
    }

    static func remount(_ path: String, megabytes: Int) {
        let (status, output) = shell("/bin/mount", ["-o", "remount,size=\(megabytes)m", path])
        #expect(status == 0, "remount failed: \(output)")
    }

    static func unmount(_ path: String) {
        _ = shell("/bin/umount", ["-l", path])
    }

    static func shell(_ tool: String, _ arguments: [String]) -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        do { try process.run() } catch { return (-1, "\(error)") }
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }

    static func integrity(_ path: String) throws -> String {
        let queue = try DatabaseQueue(path: path)
        return try queue.read { try String.fetchOne($0, sql: "PRAGMA integrity_check") } ?? "?"
    }

    @Test func theManagerRefusesUploadsByNameWhenItsDiskIsFullAndTakesThemWhenSpaceReturns() async throws {
        let pki = try TestPKI()
        let managerData = pki.dir + "/manager-data"
        guard try Self.mountTmpfs(managerData, megabytes: 3) else { return }
        defer { Self.unmount(managerData) }

        // 40 labelled ROIs of 144x144 noise (about 21 KB each as PNG, over 800 KB in all).
        let total = 40
        let agentData = pki.dir + "/agent-full-data"
        let store = try await SyncProcessTests.seedAgentStore(agentData, count: total, imageSide: 160)
        let (manager, port) = try await ManagerProcessSetup(pki: pki).start()
        // Fill the rest of the manager's disk but for about 600 KB, so it fills part-way through.
        let (_, df) = Self.shell("/bin/df", ["-k", "--output=avail", managerData])
        let freeKB = Int(df.split(separator: "\n").last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "") ?? 0
        let ballast = managerData + "/ballast"
        try Data(count: max(0, freeKB - 600) * 1024).write(to: URL(fileURLWithPath: ballast))
        let config = try await writeAgentConfig(pki: pki, camera: "cam-full", port: port, dataDir: agentData)
        let agent = try LoupeProcess(["agent", "--config", config], log: pki.dir + "/agent-full.log")

        // The disk fills: uploads are refused by name, and stay in the agent's outbox.
        let refused = try await eventually(timeout: .seconds(40)) { agent.log.contains("disk full while writing") }
        #expect(refused, "no disk-full refusal reached the agent:\n\(agent.log)\n\(manager.log)")
        // An upload the manager has stored but whose acknowledgement has not yet reached the outbox counts
        // on both sides for a moment; a lost one would stay missing. So the pair is read until it settles.
        var (stuck, storedWhileFull) = (0, 0)
        _ = try await eventually(timeout: .seconds(10)) {
            stuck = try await store.outboxDepth()
            storedWhileFull = try await TrainingDataStore(path: managerData + "/training-data.sqlite").count(cameraId: nil)
            return storedWhileFull + stuck == total
        }
        #expect(stuck > 0 && stuck < total, "expected the disk to fill part-way through, outbox \(stuck) of \(total)")
        #expect(manager.process.isRunning, "the manager died of a full disk:\n\(manager.log)")
        #expect(storedWhileFull + stuck == total, "acknowledged \(total - stuck), stored \(storedWhileFull)")
        #expect(try Self.integrity(managerData + "/training-data.sqlite") == "ok")

        // Space returns: the agent's retries go through, every ROI exactly once.
        Self.remount(managerData, megabytes: 64)
        let drained = try await eventually(timeout: .seconds(60)) { try await store.outboxDepth() == 0 }
        #expect(drained, "the outbox never drained once space returned:\n\(agent.log)\n\(manager.log)")
        agent.signal(SIGTERM)
        #expect(await agent.waitForExit() == 0)
        manager.signal(SIGTERM)
        #expect(await manager.waitForExit() == 0)
        let held = try TrainingDataStore(path: managerData + "/training-data.sqlite")
        #expect(try await held.count(cameraId: nil) == total)
        #expect(Set(try held.contentHashes()).count == total)
        #expect(try Self.integrity(managerData + "/training-data.sqlite") == "ok")
        print(
            "disk full, manager: \(total - stuck) of \(total) ROIs stored before the disk filled, \(stuck) refused and kept by the agent, "
                + "all \(total) stored once after the remount"
        )
    }

    @Test func theAgentAnswers507WhenItsDiskIsFullAndKeepsWorkingWhenSpaceReturns() async throws {
        let pki = try TestPKI()
        let agentData = pki.dir + "/agent-small-data"
        guard try Self.mountTmpfs(agentData, megabytes: 2) else { return }
        defer { Self.unmount(agentData) }
        let config = try await writeAgentConfig(
            pki: pki, camera: "cam-small", port: nil, dataDir: agentData,
            extra: [
                "http": ["address": "127.0.0.1:0", "initialAdminPassword": "camera-admin-pw"]
            ])
        let agent = try LoupeProcess(["agent", "--config", config], log: pki.dir + "/agent-small.log")
        let base = try #require(try await agent.loggedAddress(after: "http listening"), "agent never said where it listens:\n\(agent.log)")
        let token = try await agentToken(base, password: "camera-admin-pw")

        // Import 200x200 noise captures (40 KB each) until the disk is full.
        var created = 0
        var refusal: (Int, String)?
        for number in 1...120 {
            let (status, body) = try await agentHTTP(
                base, "POST", "/api/v1/captures/import", token: token, body: try SyncProcessTests.noisePNG(side: 200, seed: UInt64(number)),
                headers: ["X-Loupe-Filename": "noise-\(number).png"])
            if status == 201 { created += 1; continue }
            refusal = (status, String(decoding: body, as: UTF8.self))
            break
        }
        let (status, message) = try #require(refusal, "the 2 MB disk never filled after \(created) captures")
        #expect(status == 507, "\(status): \(message)")
        #expect(message.contains("disk full"), "\(message)")
        #expect(created > 5)
        // Still serving, and holding exactly the captures it said it created.
        let (listed, list) = try await agentHTTP(base, "GET", "/api/v1/captures", token: token)
        #expect(listed == 200)
        #expect((try JSONSerialization.jsonObject(with: list) as? [String: Any])?["total"] as? Int == created)

        // Space returns: the next import works.
        Self.remount(agentData, megabytes: 64)
        let (after, _) = try await agentHTTP(
            base, "POST", "/api/v1/captures/import", token: token, body: try SyncProcessTests.noisePNG(side: 200, seed: 999),
            headers: ["X-Loupe-Filename": "after.png"])
        #expect(after == 201)
        agent.signal(SIGTERM)
        #expect(await agent.waitForExit() == 0)
        let store = try LabelStore(directory: agentData + "/store")
        #expect(try await store.captureCount() == created + 1)
        #expect(try Self.integrity(agentData + "/store/labels.sqlite") == "ok")
        print(
            "disk full, agent: \(created) captures stored on a 2 MB disk, then 507 \"\(message.prefix(120))\", one more after the "
                + "remount, integrity ok"
        )
    }
}
