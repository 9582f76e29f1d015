import ArgumentParser
import Foundation
import Logging
import LoupeAgent
import LoupeCapture
import LoupeImaging
import LoupeManager
import LoupePKI
import LoupeTesting
import LoupeVision
import LoupeWire
import ServiceLifecycle

/// The demo's triggered station: one more camera agent, this one streaming
/// from a GigE Vision camera (Aravis' simulator on loopback, showing one part
/// with defects) in software trigger mode, with its Modbus TCP server on; the
/// demo's PLC side (libmodbus, as a PLC talks) fires each trigger by the coil,
/// waits for the coil to fall, and reads the verdict back from the registers.
struct DemoStation {
    static let camera = "station-1"
    static let serial = "LOUPE-DEMO-ST1"

    struct Outcome {
        var triggers: Int
        /// The verdicts the PLC read, with the trigger number beside each.
        var read: [(trigger: Int, verdict: UInt16)]
        /// The agent's own results for the same triggers, in order.
        var agentVerdicts: [InspectionResult.Verdict]
        /// PLC cycle times (coil written to result read), ms.
        var cycles: [Double]
        var missed: Int
    }

    let root: String
    let helper: String
    let tls: TLSFiles
    let managerPort: Int
    let modelKey: String
    let version: String
    let registry: any ModelRegistryStoring
    let threshold: Double
    let logger: Logger

    /// Where the simulator comes from: `--fake-gige`, or built from Tests/FakeGigE when run from the repository; nil: neither.
    static func helper(_ given: String?, root: String) throws -> String? {
        if let given { return given }
        let sources = FileManager.default.currentDirectoryPath + "/Tests/FakeGigE"
        guard FileManager.default.fileExists(atPath: sources + "/Makefile") else { return nil }
        return try FakeGigELauncher.build(sources: sources, into: root + "/fake-gige")
    }

    func run(triggers: Int, step: (String) -> Void) async throws -> Outcome {
        // The part the camera sees: aligned as the reference is, with defects its ground truth fails.
        var configuration = SyntheticCamera.Configuration(width: DemoCommand.width, height: DemoCommand.height, seed: 4242)
        configuration.partSeed = 7
        let partCamera = try SyntheticCamera(configuration: configuration)
        var picture: Image8?
        for _ in 0..<100 {
            let (frame, _) = partCamera.render()
            // The station's part is one its ground truth fails (a true defect region of the fail rule's size in some ROI).
            if try DemoCommand.rois.contains(where: {
                DemoCommand.failRule.fails(MaskTools.blobs(try frame.referenceMask.cropped(to: $0.rect)))
            }) {
                picture = try frame.image.warped(by: frame.pose.inverse, width: DemoCommand.width, height: DemoCommand.height)
                break
            }
        }
        guard let picture else { throw ValidationError("no synthetic part with a failing defect in 100 renders") }
        try FileManager.default.createDirectory(atPath: root + "/station-camera", withIntermediateDirectories: true)
        var fake: FakeGigELauncher.Running?
        for _ in 0..<20 where fake == nil {
            fake = try FakeGigELauncher.launch(
                helper, serial: Self.serial, width: DemoCommand.width, height: DemoCommand.height,
                grey: picture.samples, folder: root + "/station-camera")
            if fake == nil { try await Task.sleep(for: .milliseconds(250)) }
        }
        guard let fake else { throw ValidationError("the GigE Vision simulator did not start (is UDP 127.0.0.1:3956 taken?)") }
        defer {
            kill(fake.process.processIdentifier, SIGKILL)
            fake.process.waitUntilExit()
        }
        step("GigE Vision camera \(Self.serial) on 127.0.0.1 (Aravis' simulator), showing a part with defects")

        var config = AgentConfig(
            cameraId: Self.camera,
            manager: .init(
                address: "localhost:\(managerPort)", heartbeatSeconds: 2, idleTimeoutSeconds: 10, statusIntervalSeconds: 1,
                reconnectInitialSeconds: 0.2, reconnectMaxSeconds: 2),
            tls: tls, dataDir: root + "/\(Self.camera)",
            http: .init(address: "127.0.0.1:0", initialAdminPassword: DemoCommand.password),
            camera: .init(
                source: .genicam, device: Self.serial, width: DemoCommand.width, height: DemoCommand.height, framesPerSecond: 10,
                inferenceThreads: 1, live: false))
        config.camera?.trigger = "software"
        config.line = .init(modbus: .init(address: "127.0.0.1:0"))
        config.modelKeys = [modelKey]
        let url = LateBound<String>()
        let agent = try await AgentAssembly(config: config, logger: logger) { url.set($0) }
        let group = ServiceGroup(configuration: .init(services: agent.services.map { .init(service: $0) }, logger: logger))
        let task = Task { try await group.run() }
        let outcome: Result<Outcome, any Error>
        do { outcome = .success(try await drive(agent, url: url, picture: picture, triggers: triggers, step: step)) } catch {
            outcome = .failure(error)
        }
        // The group's shutdown ends the station's training jobs too.
        await group.triggerGracefulShutdown()
        _ = try? await task.value
        return try outcome.get()
    }

    private func drive(
        _ agent: AgentAssembly, url: LateBound<String>, picture: Image8, triggers: Int,
        step: (String) -> Void
    ) async throws -> Outcome {
        try await DemoCommand.waitFor(
            "the station to serve its page and reach the manager", timeout: .seconds(60), every: .milliseconds(20)
        ) { url.value != nil && agent.link.connection != nil }
        let api = try await AgentPageClient.signIn(base: url.value!, user: "admin", password: DemoCommand.password)
        try await api.send("PUT", "/api/v1/classes", json: DemoCommand.classes)
        let reference = try await api.importImage(try PNGCodec.encode(picture), name: "reference.png")
        var recipe = DemoCommand.recipe
        recipe["referenceCapture"] = reference
        try await api.send("PUT", "/api/v1/recipe", json: recipe)
        try await registry.assign(version, to: [Self.camera])
        try await DemoCommand.waitFor("the station to install \(version)", timeout: .seconds(60), every: .milliseconds(20)) {
            agent.runtime.shelf.state.current?.version == version
        }
        try await api.send("PUT", "/api/v1/live", json: ["live": true, "threshold": threshold])
        guard let modbus = agent.services.compactMap({ $0 as? ModbusServer }).first else {
            throw ValidationError("the station has no Modbus server")
        }
        try await DemoCommand.waitFor("the station's Modbus server", timeout: .seconds(10), every: .milliseconds(20)) { modbus.port != nil }
        let port = modbus.port!
        step("\(Self.camera): software trigger mode, \(version) installed, Modbus TCP on 127.0.0.1:\(port)")

        // The PLC side.
        let plc = try ModbusPLC(port: port)
        var read: [(trigger: Int, verdict: UInt16)] = []
        var cycles: [Double] = []
        let clock = ContinuousClock()
        let progress = ProgressBar()
        for n in 1...triggers {
            try await DemoCommand.waitFor("the station to be ready", timeout: .seconds(10), every: .milliseconds(20)) {
                try plc.input(ModbusMap.Input.ready)
            }
            let start = clock.now
            try plc.writeCoil(ModbusMap.Coil.trigger)
            try await DemoCommand.waitFor("the result of trigger \(n)", timeout: .seconds(10), every: .milliseconds(20)) {
                try !plc.coil(ModbusMap.Coil.trigger)
            }
            let registers = try plc.registers(0, ModbusMap.Register.firstROI)
            cycles.append((clock.now - start).milliseconds)
            read.append(
                (
                    Int(registers[ModbusMap.Register.lastTrigger]) | Int(registers[ModbusMap.Register.lastTrigger + 1]) << 16,
                    registers[ModbusMap.Register.lastVerdict]
                ))
            progress.update(fraction: Double(n) / Double(triggers), "PLC: trigger \(n) of \(triggers)")
        }
        progress.finish()
        let results = agent.runtime.pipeline.results(limit: triggers).reversed().map(\.verdict)
        return Outcome(
            triggers: triggers, read: read, agentVerdicts: results, cycles: cycles,
            missed: agent.runtime.pipeline.triggerStatistics?.missed ?? 0)
    }

}
