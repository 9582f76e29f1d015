import Foundation
import Testing
import LoupeTesting

/// The Label & Train page in a real browser: Debian's chromium and
/// chromium-driver, driven by Selenium (Tests/Browser/label_and_train.py,
/// from the virtualenv Deploy/install-deps makes), against a real
/// `loupe agent` process on the synthetic camera. The script signs in, sets
/// up a recipe, captures, imports, navigates, paints, erases, uses the wand,
/// undoes and redoes, ticks an ROI, opens View All ROIs, trains, and runs
/// Live Preview Mode with the threshold, checking the agent's store through
/// its API after each step. Screenshots go to .build-artifacts/browser (or
/// LOUPE_ARTIFACTS).
///
/// The browser is part of the test command: this fails, naming the fix, when
/// chromium, chromium-driver or Selenium is missing. LOUPE_NO_BROWSER=1
/// skips it explicitly (and says so).
@Suite(.serialized) struct BrowserTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../..")
        .standardizedFileURL

    @Test func anOperatorDoesEverythingOnTheLabelAndTrainPageInChromium() async throws {
        let environment = ProcessInfo.processInfo.environment
        if environment["LOUPE_NO_BROWSER"] == "1" {
            print("SKIPPED the browser test: LOUPE_NO_BROWSER=1")
            return
        }
        let chromium = environment["LOUPE_CHROMIUM"] ?? "/usr/bin/chromium"
        let driver = environment["LOUPE_CHROMEDRIVER"] ?? "/usr/bin/chromedriver"
        for (path, package) in [(chromium, "chromium"), (driver, "chromium-driver")]
        where !FileManager.default.isExecutableFile(atPath: path) {
            Issue.record(
                "no \(path): run Deploy/install-deps (it installs Debian's \(package)), or set LOUPE_NO_BROWSER=1 to skip the browser test")
            return
        }
        guard let python = venvPython() else {
            Issue.record("no Python virtualenv with Selenium: run Deploy/install-deps (it makes ~/.cache/loupe/venv) or set LOUPE_VENV")
            return
        }

        let pki = try TestPKI()
        let password = "browser-\(UUID().uuidString.prefix(8))"
        let config = try await writeAgentConfig(
            pki: pki, camera: "browser-cam", port: nil,
            extra: [
                // The page level with inspection here: the test runner's other suites load every core at nice 0
                // from another process, which on a camera nothing does (PagePriorityTests and
                // `loupe bench login-flood` check the page's priority).
                "http": ["address": "127.0.0.1:0", "initialAdminPassword": password, "pageNice": 0],
                "camera": [
                    "source": "synthetic", "width": 640, "height": 512, "framesPerSecond": 6, "seed": 3, "partSeed": 5,
                    "inferenceThreads": 1, "precision": "fp32", "live": false,
                ],
            ])
        let agent = try LoupeProcess(["agent", "--config", config], log: pki.dir + "/agent.log")
        defer { agent.signal(SIGTERM) }
        let address = try #require(try await agent.loggedAddress(after: "http listening"), "the agent never listened:\n\(agent.log)")

        let artifacts =
            environment["LOUPE_ARTIFACTS"].map { $0 + "/browser" }
            ?? Self.repository.appendingPathComponent(".build-artifacts/browser").path
        try? FileManager.default.removeItem(atPath: artifacts)
        try FileManager.default.createDirectory(atPath: artifacts, withIntermediateDirectories: true)
        let script = Self.repository.appendingPathComponent("Tests/Browser/label_and_train.py").path
        let output = pki.dir + "/browser.log"
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["-u", script, "--url", "http://\(address)", "--password", password, "--artifacts", artifacts]
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        let deadline = ContinuousClock.now + .seconds(600)
        while process.isRunning, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(200)) }
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        let log = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        print(log)
        #expect(
            process.terminationStatus == 0,
            "the browser test failed (screenshots in \(artifacts)):\n\(log)\nagent log:\n\(agent.log.suffix(4000))")
        #expect(log.contains("browser test passed"))
        for name in ["before-labelling", "after-labelling"] {
            #expect(FileManager.default.fileExists(atPath: "\(artifacts)/\(name).png"), "screenshot \(name).png")
        }
    }
}
