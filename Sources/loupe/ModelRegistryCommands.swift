import ArgumentParser
import Foundation
import LoupeManager

/// Registry commands run on the manager's host, against its data directory.
/// They write the registry; the running manager delivers pushes within a second.
extension ModelCommand {
    struct ManagerOptions: ParsableArguments {
        @Option(help: "The manager's JSON config file (its data directory holds the registry).") var managerConfig: String

        func registry() throws -> ModelRegistry {
            let config = try ManagerConfig.load(path: managerConfig)
            return try ModelRegistry(directory: config.dataDir, signingKeyPath: config.signingKeyPath)
        }
    }

    struct Publish: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Sign a trained model with the manager's key and add it to the registry as a new version.")
        @Argument(help: "Model file (from `loupe train` or a training job).") var file: String
        @Option(help: "Inspection type the model is for.") var inspectionType: String
        @OptionGroup var manager: ManagerOptions

        func run() async throws {
            let data = try Data(contentsOf: URL(fileURLWithPath: file))
            let record = try manager.registry().publish(data, inspectionType: inspectionType)
            print("published \(record.version): \(record.bytes) bytes, sha256 \(record.sha256.prefix(16))…, parent \(record.parentVersion ?? "-")")
        }
    }

    struct Push: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set the model version cameras should run (a push, or a rollback to an earlier version).",
            discussion: "Connected cameras are offered the version within a second; cameras that are offline get it when they reconnect."
        )
        @Argument(help: "Model version, e.g. disc-v3.") var version: String
        @Option(help: "Comma-separated camera ids.") var cameras: String?
        @Flag(help: "Every camera whose latest report names the version's inspection type.") var allOfType = false
        @OptionGroup var manager: ManagerOptions

        func validate() throws {
            guard (cameras != nil) != allOfType else { throw ValidationError("give exactly one of --cameras IDS or --all-of-type") }
        }

        func run() async throws {
            let registry = try manager.registry()
            var ids = (cameras ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            if allOfType {
                let type = try registry.version(version).inspectionType
                let config = try ManagerConfig.load(path: manager.managerConfig)
                ids = try FleetStore(path: config.dataDir + "/fleet.sqlite").cameras(inspectionType: type)
                guard !ids.isEmpty else { throw ValidationError("no camera has reported inspection type \(type) yet") }
            }
            try registry.assign(version, to: ids)
            print("\(version) assigned to \(ids.joined(separator: ", "))")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the registry's model versions and what each camera runs.")
        @OptionGroup var manager: ManagerOptions

        func run() async throws {
            let registry = try manager.registry()
            let formatter = ISO8601DateFormatter()
            print(TextTable.render(header: ["version", "inspection type", "bytes", "val mIoU", "parent", "created"], rows: try registry.versions().map {
                [$0.version, $0.inspectionType, String($0.bytes), String(format: "%.3f", $0.validationMIoU), $0.parentVersion ?? "-", formatter.string(from: $0.createdAt)]
            }))
            print(TextTable.render(header: ["camera", "desired", "installed", "last error"], rows: try registry.cameras().map {
                [$0.cameraId, $0.desiredVersion ?? "-", $0.installedVersion ?? "-", $0.lastError ?? ""]
            }))
        }
    }
}
