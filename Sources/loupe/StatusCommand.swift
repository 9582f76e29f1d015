import ArgumentParser
import Foundation
import LoupePKI
import LoupeProto
import LoupeWire
import SwiftProtobuf

/// Address and operator credentials for fleet commands, from flags or the
/// LOUPE_ADDR, LOUPE_CACERT, LOUPE_CERT and LOUPE_KEY environment variables.
struct ManagerConnectionOptions: ParsableArguments {
    @Option(help: "Manager HOST:PORT; several managers of one database comma-separated, tried in turn. Env: LOUPE_ADDR.") var addr: String?
    @Option(help: "Fleet CA certificate. Env: LOUPE_CACERT.") var cacert: String?
    @Option(help: "Operator certificate. Env: LOUPE_CERT.") var cert: String?
    @Option(help: "Operator private key. Env: LOUPE_KEY.") var key: String?

    /// One configuration per manager address, in the order they are tried.
    func clientConfigurations() throws -> [WireClientConfiguration] {
        func pick(_ flag: String?, _ variable: String, _ what: String) throws -> String {
            if let value = flag ?? ProcessEnvironment.value(variable) { return value }
            throw ValidationError("no \(what): pass --\(what) or set \(variable)")
        }
        let addresses = commaList(try pick(addr, "LOUPE_ADDR", "addr"))
        guard !addresses.isEmpty else { throw ValidationError("--addr / LOUPE_ADDR names no HOST:PORT") }
        let files = TLSFiles(
            ca: try pick(cacert, "LOUPE_CACERT", "cacert"),
            cert: try pick(cert, "LOUPE_CERT", "cert"),
            key: try pick(key, "LOUPE_KEY", "key")
        )
        return try addresses.map { address in
            let (host, port) = try parseAddress(address)
            return WireClientConfiguration(host: host, port: port, tls: files, connectTimeout: .seconds(10))
        }
    }
}

/// `loupe status`: the fleet at a glance.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "List the fleet's cameras. Exits 2 when any camera is offline.",
        discussion: "Connects with an operator certificate. With --watch it redraws every few seconds until Ctrl-C."
    )

    @OptionGroup var connection: ManagerConnectionOptions
    @Flag(help: "Print JSON instead of a table.") var json = false
    @Flag(help: "Redraw every --interval seconds until interrupted.") var watch = false
    @Option(help: "Seconds between redraws with --watch.") var interval: Double = 2
    @Option(help: "Only cameras of this inspection type.") var inspectionType: String?

    func validate() throws {
        guard interval >= 0.2 else { throw ValidationError("--interval must be at least 0.2 seconds") }
    }

    func fleet() async throws -> Loupe_V1_FleetStatusReply {
        var query = Loupe_V1_FleetStatusQuery()
        query.inspectionType = inspectionType ?? ""
        let reply = try await connection.ask(.fleetStatusQuery(query))
        guard case .fleetStatusReply(let fleet) = reply else { throw unexpected(reply, expected: "fleet_status_reply") }
        return fleet
    }

    func render(_ fleet: Loupe_V1_FleetStatusReply) throws -> String {
        json ? try jsonText(fleet) : StatusTable.render(fleet.cameras)
    }

    func run() async throws {
        guard watch else {
            let fleet = try await fleet()
            print(try render(fleet))
            if fleet.cameras.contains(where: { !$0.online }) { throw ExitCode(2) }
            return
        }
        let terminal = isatty(STDOUT_FILENO) == 1
        while true {
            let text: String
            do {
                let fleet = try await fleet()
                let offline = fleet.cameras.filter { !$0.online }.count
                text =
                    try render(fleet)
                    + (json
                        ? ""
                        : "\n\n\(fleet.cameras.count) cameras, \(offline) offline — \(Date().formatted(date: .omitted, time: .standard)), "
                            + "every \(interval) s, Ctrl-C to stop")
            } catch {
                text = "\(error)\n(retrying every \(interval) s, Ctrl-C to stop)"
            }
            print(terminal ? "\u{1B}[H\u{1B}[2J" + text : text + "\n")
            fflush(nil)
            try await Task.sleep(for: .seconds(interval))
        }
    }
}

/// Renders cameras as an aligned text table.
enum StatusTable {
    static func render(_ cameras: [Loupe_V1_CameraStatus]) -> String {
        let header = [
            "CAMERA", "STATE", "LAST SEEN", "MODEL", "RECIPE", "FPS", "P50 ms", "P99 ms", "PASS 1h", "FAIL 1h", "TO SYNC", "DISK FREE",
        ]
        let now = Date().timeIntervalSince1970
        let rows = cameras.map { camera -> [String] in
            let status = camera.status
            let age = max(0, now - Double(camera.lastSeenUnixMs) / 1000)
            return [
                camera.cameraID, camera.online ? "online" : "offline", camera.online ? "now" : Self.age(age),
                status.modelVersion.isEmpty ? "-" : status.modelVersion,
                status.recipeVersion.isEmpty ? "-" : status.recipeVersion,
                String(format: "%.1f", status.framesPerSecond), String(format: "%.1f", status.latencyP50Ms),
                String(format: "%.1f", status.latencyP99Ms), "\(status.passCountLastHour)", "\(status.failCountLastHour)",
                "\(status.outboxDepth)", ByteCountFormatter.string(fromByteCount: Int64(status.diskFreeBytes), countStyle: .file),
            ]
        }
        return TextTable.render(header: header, rows: rows) + (cameras.isEmpty ? "\n(no cameras have connected yet)" : "")
    }

    static func age(_ seconds: Double) -> String {
        switch seconds {
        case ..<120: "\(Int(seconds)) s ago"
        case ..<7200: "\(Int(seconds / 60)) min ago"
        case ..<172_800: "\(Int(seconds / 3600)) h ago"
        default: "\(Int(seconds / 86_400)) days ago"
        }
    }
}
