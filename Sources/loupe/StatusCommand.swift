import ArgumentParser
import Foundation
import LoupePKI
import LoupeProto
import LoupeWire
import SwiftProtobuf

/// Address and operator credentials for fleet commands, from flags or the
/// LOUPE_ADDR, LOUPE_CACERT, LOUPE_CERT and LOUPE_KEY environment variables.
struct ManagerConnectionOptions: ParsableArguments {
    @Option(help: "Manager HOST:PORT. Env: LOUPE_ADDR.") var addr: String?
    @Option(help: "Fleet CA certificate. Env: LOUPE_CACERT.") var cacert: String?
    @Option(help: "Operator certificate. Env: LOUPE_CERT.") var cert: String?
    @Option(help: "Operator private key. Env: LOUPE_KEY.") var key: String?

    func clientConfiguration() throws -> WireClientConfiguration {
        func pick(_ flag: String?, _ variable: String, _ what: String) throws -> String {
            if let value = flag ?? ProcessEnvironment.value(variable) { return value }
            throw ValidationError("no \(what): pass --\(what) or set \(variable)")
        }
        let address = try pick(addr, "LOUPE_ADDR", "addr")
        let (host, port) = try parseAddress(address)
        let files = TLSFiles(
            ca: try pick(cacert, "LOUPE_CACERT", "cacert"),
            cert: try pick(cert, "LOUPE_CERT", "cert"),
            key: try pick(key, "LOUPE_KEY", "key")
        )
        return WireClientConfiguration(host: host, port: port, tls: files, connectTimeout: .seconds(10))
    }
}

/// `loupe status`: the fleet at a glance.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "List the fleet's cameras. Exits 2 when any camera is offline."
    )

    @OptionGroup var connection: ManagerConnectionOptions
    @Flag(help: "Print JSON instead of a table.") var json = false

    func run() async throws {
        let client = try connection.clientConfiguration()
        let reply = try await WireClient.withConnection(client) { connection, _ in
            try await connection.request(.fleetStatusQuery(Loupe_V1_FleetStatusQuery()))
        }
        guard case .fleetStatusReply(let fleet) = reply.body else {
            throw WireError.unexpectedReply(expected: "fleet_status_reply", received: reply.bodyName)
        }
        if json {
            var options = JSONEncodingOptions()
            options.alwaysPrintInt64sAsNumbers = true
            print(try fleet.jsonString(options: options))
        } else {
            print(StatusTable.render(fleet.cameras))
        }
        if fleet.cameras.contains(where: { !$0.online }) {
            throw ExitCode(2)
        }
    }
}

/// Renders cameras as an aligned text table.
enum StatusTable {
    static func render(_ cameras: [Loupe_V1_CameraStatus]) -> String {
        let header = ["CAMERA", "STATE", "LAST SEEN", "ADDRESS", "MODEL", "RECIPE", "FPS", "P50 ms", "P99 ms", "PASS", "FAIL", "OUTBOX", "DISK FREE"]
        let now = Date().timeIntervalSince1970
        let rows = cameras.map { camera -> [String] in
            let status = camera.status
            let age = max(0, now - Double(camera.lastSeenUnixMs) / 1000)
            return [
                camera.cameraID, camera.online ? "online" : "offline", camera.online ? "now" : "\(Int(age)) s ago",
                camera.address, status.modelVersion.isEmpty ? "-" : status.modelVersion,
                status.recipeVersion.isEmpty ? "-" : status.recipeVersion,
                String(format: "%.1f", status.framesPerSecond), String(format: "%.1f", status.latencyP50Ms),
                String(format: "%.1f", status.latencyP99Ms), "\(status.passCount)", "\(status.failCount)",
                "\(status.outboxDepth)", ByteCountFormatter.string(fromByteCount: Int64(status.diskFreeBytes), countStyle: .file),
            ]
        }
        let table = [header] + rows
        let widths = header.indices.map { column in table.map { $0[column].count }.max() ?? 0 }
        let lines = table.map { row in
            row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  ")
        }
        return (lines + (cameras.isEmpty ? ["(no cameras have connected yet)"] : [])).joined(separator: "\n")
    }
}
