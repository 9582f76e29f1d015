import Foundation
import LoupeAgent
import LoupeManager
import LoupePKI
import LoupeSegmentation
import Testing
import LoupeTesting

/// Real `loupe agent` and `loupe manager` processes with a TCP fault proxy
/// (Support/FaultProxy.swift) between them: sliced writes, a silent
/// half-open link, resets, a throttled link, and a manager killed mid-push.
/// Everything is checked by exact counts.
@Suite(.serialized) struct NetworkFaultTests {
    @Test func uploadsSurviveSlicingAHalfOpenLinkAndResetsExactlyOnce() async throws {
        let pki = try TestPKI()
        let total = 30
        let dataDir = pki.dir + "/agent-net-data"
        let store = try await SyncProcessTests.seedAgentStore(dataDir, count: total)
        let (manager, managerPort) = try await ManagerProcessSetup(pki: pki).start()
        let proxy = try FaultProxy(targetPort: managerPort)
        defer { proxy.stop() }
        // Every write cut into 1–7 byte pieces from the first byte of the TLS handshake on.
        proxy.mode = .slice(maxBytes: 7)
        // About 1.3 KB per upload at 4 KB/s: ~10 s of uploads to disturb.
        let config = try await writeAgentConfig(
            pki: pki, camera: "cam-net", port: proxy.port, dataDir: dataDir, manager: ["uploadBytesPerSecond": 4096])
        let agent = try LoupeProcess(["agent", "--config", config], log: pki.dir + "/agent-net.log")

        // 1. Sliced: the handshake and the first uploads get through.
        let sliced = try await eventually(timeout: .seconds(30)) { try await store.outboxDepth() <= total - 5 }
        #expect(sliced, "nothing arrived through a slicing link:\n\(agent.log)\n\(manager.log)")

        // 2. Half-open: the link goes silent without closing. Only the
        //    heartbeat timeout (3 s here) can tell; the agent must give up on
        //    the connection and try new ones, and lose nothing meanwhile.
        proxy.mode = .stall
        let stalledAt = ContinuousClock.now
        // Acknowledgements that passed the proxy just before may still be
        // committing on the agent, and a chunk the proxy read just before the
        // switch may still be counted; give them a second (less than the timeout).
        try await Task.sleep(for: .seconds(1))
        let atStall = proxy.counters
        let depthAtStall = try await store.outboxDepth()
        let noticed = try await eventually(timeout: .seconds(15)) { proxy.counters.connections > atStall.connections }
        let noticedAfter = ContinuousClock.now - stalledAt
        #expect(noticed, "the agent never noticed the silent link:\n\(agent.log)")
        #expect(agent.log.contains("nothing received from the peer for 3"), "the agent did not name the heartbeat timeout:\n\(agent.log)")
        #expect(try await store.outboxDepth() == depthAtStall, "the outbox moved while nothing could get through")
        #expect(
            proxy.counters.bytesUp == atStall.bytesUp && proxy.counters.bytesDown == atStall.bytesDown, "bytes went through a stalled link")
        print(
            "network faults: a new connection \(noticedAfter) after the link went silent (heartbeat timeout 3 s, then up to 2 s for the "
                + "peer to close, then the reconnect backoff)"
        )

        // 3. Back to normal, then every connection reset twice while the rest drains.
        proxy.mode = .pass
        let resumed = try await eventually(timeout: .seconds(30)) { try await store.outboxDepth() < depthAtStall }
        #expect(resumed, "uploads did not resume after the link came back:\n\(agent.log)")
        // Each reset cuts a connection that is carrying the uploads (waiting for
        // one first: right after a fault the agent may still be reconnecting),
        // and the uploads must go on over a new one.
        for round in 1...2 {
            let live = try await eventually(timeout: .seconds(30)) { proxy.carried > 0 }
            #expect(live, "no connection to reset (round \(round)):\n\(agent.log)")
            let depth = try await store.outboxDepth()
            let connections = proxy.counters.connections
            #expect(proxy.resetAll() >= 1, "reset \(round) cut no connection")
            let back = try await eventually(timeout: .seconds(30)) {
                let now = try await store.outboxDepth()
                return proxy.counters.connections > connections && (now < depth || now == 0)
            }
            #expect(back, "uploads did not go on over a new connection after reset \(round):\n\(agent.log)")
        }
        let drained = try await eventually(timeout: .seconds(60)) { try await store.outboxDepth() == 0 }
        #expect(drained, "the outbox never drained:\n\(agent.log)\n\(manager.log)")
        #expect(proxy.counters.resets >= 2)

        try await SyncProcessTests.stopAndExpectStoredOnce(
            agent: agent, manager: manager, backend: try await StoreBackend(.sqlite, folder: pki.dir + "/manager-data"), total: total,
            camera: "cam-net")
        print(
            "network faults: \(proxy.counters.connections) connections through the proxy, \(proxy.counters.resets) reset, "
                + "\(total)/\(total) ROIs stored once"
        )
    }

    @Test func aModelPushResumesAcrossAManagerKillAndAResetInsteadOfRestarting() async throws {
        let pki = try TestPKI()
        let setup = try ManagerProcessSetup(pki: pki)
        var (manager, managerPort) = try await setup.start()
        let managerData = pki.dir + "/manager-data"
        let proxy = try FaultProxy(targetPort: managerPort)
        defer { proxy.stop() }
        let agentData = pki.dir + "/agent-push-data"
        let agentConfig = try await writeAgentConfig(
            pki: pki, camera: "cam-push", port: proxy.port, dataDir: agentData,
            extra: ["modelKeys": [managerData + "/model-signing.pub"]], inspectionType: "disc")
        let agent = try LoupeProcess(["agent", "--config", agentConfig], log: pki.dir + "/agent-push.log")
        let fleet = try fleetEnvironment(pki: pki, port: managerPort)
        let known = try await eventually {
            try await runLoupe(["camera", "list"], log: pki.dir + "/camera-list.log", environment: fleet).output.contains("cam-push")
        }
        #expect(known, "\(agent.log)")

        let modelPath = pki.dir + "/big.loupe"
        try ModelFile.write(SegmentationModel(weights: Weights(configuration: .standard, seed: 5)), to: modelPath)
        let modelBytes = try Data(contentsOf: URL(fileURLWithPath: modelPath)).count
        let (publishStatus, published) = try await runLoupe(
            ["model", "publish", modelPath, "--inspection-type", "disc", "--manager-config", setup.configPath],
            log: pki.dir + "/publish.log", timeout: .seconds(60))
        #expect(publishStatus == 0 && published.contains("published disc-v1"), "\(published)")
        // A slow link (about 8 s for the model), so the transfer can be interrupted twice.
        proxy.mode = .throttle(bytesPerSecond: modelBytes / 8)
        let downBefore = proxy.counters.bytesDown
        let (pushStatus, pushed) = try await runLoupe(
            ["model", "push", "disc-v1", "--cameras", "cam-push"], log: pki.dir + "/push.log", environment: fleet, timeout: .seconds(60))
        #expect(pushStatus == 0, "\(pushed)")

        // 1. kill -9 the manager a third of the way through, and restart it on the same port.
        let third = try await eventually(timeout: .seconds(30)) { proxy.counters.bytesDown - downBefore >= modelBytes / 3 }
        #expect(third, "the download never started:\n\(agent.log)\n\(manager.log)")
        manager.signal(SIGKILL)
        _ = await manager.waitForExit()
        let partial = agentData + "/models/partial/disc-v1.part"
        let keptAtKill = (try? FileManager.default.attributesOfItem(atPath: partial)[.size] as? Int) ?? 0
        #expect(keptAtKill > 0, "no partial download kept on the camera")
        (manager, _) = try await ManagerProcessSetup(pki: pki, port: managerPort).start()

        // 2. Reset the link two thirds of the way through.
        let twoThirds = try await eventually(timeout: .seconds(40)) { proxy.counters.bytesDown - downBefore >= modelBytes * 2 / 3 }
        #expect(twoThirds, "the download did not continue after the restart:\n\(agent.log)\n\(manager.log)")
        proxy.resetAll()
        proxy.mode = .pass

        let installed = try await eventually(timeout: .seconds(60)) {
            guard let data = FileManager.default.contents(atPath: agentData + "/models/installed.json") else { return false }
            return String(decoding: data, as: UTF8.self).contains("disc-v1")
        }
        #expect(installed, "disc-v1 never installed:\n\(agent.log)\n\(manager.log)")
        let registry = try ModelRegistry(directory: managerData, signingKeyPath: managerData + "/model-signing.key")
        let recorded = try await eventually { try registry.camera("cam-push")?.installedVersion == "disc-v1" }
        #expect(recorded, "the restarted manager never heard of the install:\n\(manager.log)")
        #expect(!FileManager.default.fileExists(atPath: partial), "the partial download was left behind")
        // Resumed, not restarted: a restart after each cut would have sent at
        // least 1/3 + 2/3 + 1 = 2 models' worth. Resuming, each cut loses at
        // most the chunk in flight (256 KB, the manager's offer; one is
        // requested at a time) and what sat in the sockets' buffers, and the
        // partial file holds whole chunks; frames, TLS and the offers add a
        // few percent.
        let sent = proxy.counters.bytesDown - downBefore
        let ratio = Double(sent) / Double(modelBytes)
        let chunk = 256 * 1024
        print(
            String(
                format: "model push through faults: %d-byte model, %d bytes sent down the link (%.2fx), partial kept at the kill: %d bytes",
                modelBytes, sent, ratio, keptAtKill))
        #expect(keptAtKill % chunk == 0, "the partial download is not whole chunks: \(keptAtKill) bytes")
        #expect(
            Double(sent) <= Double(modelBytes + 2 * 2 * chunk) * 1.05,
            "the transfer restarted instead of resuming: \(sent) bytes for a \(modelBytes)-byte model")

        agent.signal(SIGTERM)
        #expect(await agent.waitForExit() == 0)
        manager.signal(SIGTERM)
        #expect(await manager.waitForExit() == 0)
    }
}
