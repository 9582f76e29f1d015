import Foundation
public import Logging
import LoupeProto

/// `loupe manager migrate --to postgres://…`: moves a manager's fleet,
/// training data and model registry from its SQLite files to a PostgreSQL
/// database, every row, every PNG and every signed model file, then checks
/// the copy: the same number of ROIs, the same content hashes, every copied
/// image and mask hashing (on the server) to the content hash it is stored
/// under, every model file to its version's SHA-256, and the registry's
/// counter at least where it was (cameras refuse assignments older than the
/// newest they have seen). Rows already in the database are
/// left alone, so an interrupted run is simply run again. The manager must
/// be stopped while it runs (an upload taken meanwhile would not be copied).
public enum StorageMigration {
    public struct Report: Sendable, Equatable {
        public var cameras = 0
        public var rois = 0
        public var roisCopied = 0
        public var roisAlreadyThere = 0
        public var roisChecked = 0
        public var modelVersions = 0
        public var modelVersionsCopied = 0
        public var cameraModels = 0
        public var rollouts = 0
    }

    public enum Failure: Error, CustomStringConvertible {
        case alreadyOnPostgres(String)
        case mismatch(String)

        public var description: String {
            switch self {
            case .alreadyOnPostgres(let url):
                "this manager's config already keeps its stores in \(url); migrate copies from the SQLite files in dataDir"
            case .mismatch(let why): "the copy does not match the SQLite store: \(why)"
            }
        }
    }

    /// Rows copied (and checked) per transaction.
    static let batch = 200

    public static func toPostgres(
        _ config: ManagerConfig, _ settings: PostgresSettings, logger: Logger,
        progress: @Sendable (String) -> Void
    ) async throws -> Report {
        if let postgres = config.storage?.postgres { throw Failure.alreadyOnPostgres(postgres.url) }
        let trainingPath = config.dataDir + "/training-data.sqlite"
        guard FileManager.default.fileExists(atPath: trainingPath) else {
            throw TrainingDataError.database("\(trainingPath) does not exist: nothing to migrate from dataDir \(config.dataDir)")
        }
        let source = try TrainingDataStore(path: trainingPath)
        let sourceFleet = try FleetStore(path: config.dataDir + "/fleet.sqlite")
        let database = try await PostgresDatabase.open(settings, logger: logger)
        defer { database.close() }
        let target = try await PostgresTrainingDataStore(database: database)
        let targetFleet = try await PostgresFleetStore(database: database)
        let sourceModels = try ModelRegistry(directory: config.dataDir, signingKeyPath: config.signingKeyPath)
        let targetModels = try await PostgresModelRegistry(database: database, signingKeyPath: config.signingKeyPath)
        var report = Report()

        let cameras = try await sourceFleet.load()
        for camera in cameras { try await targetFleet.save(camera) }
        report.cameras = cameras.count
        progress("fleet: \(cameras.count) cameras copied")

        report.rois = try await source.count()
        var after: String?
        while true {
            let rows = try await source.export(after: after, limit: batch)
            guard let last = rows.last else { break }
            let copied = try await target.importRows(rows)
            report.roisCopied += copied
            report.roisAlreadyThere += rows.count - copied
            after = last.contentSHA256
            progress("training data: \(report.roisCopied + report.roisAlreadyThere) of \(report.rois) ROIs")
        }

        // The check: counts, then the hash list and the bytes behind each hash, side by side in hash order.
        let held = try await target.count()
        guard held == report.rois else { throw Failure.mismatch("SQLite holds \(report.rois) ROIs, PostgreSQL \(held)") }
        let expected = try source.contentHashes()
        var index = 0
        after = nil
        while true {
            let rows = try await target.checkHashes(after: after, limit: batch)
            guard let last = rows.last else { break }
            for row in rows {
                guard index < expected.count, row.held == expected[index] else {
                    throw Failure.mismatch(
                        "PostgreSQL holds ROI \(row.held.prefix(12)) where SQLite has "
                            + "\(index < expected.count ? String(expected[index].prefix(12)) : "none")"
                    )
                }
                guard row.computed == row.held else {
                    throw Failure.mismatch(
                        "ROI \(row.held.prefix(12)): its image and mask in PostgreSQL hash to \(row.computed.prefix(12))")
                }
                index += 1
            }
            after = last.held
            progress("check: \(index) of \(report.rois) ROIs")
        }
        report.roisChecked = index

        // The registry: each version with its file (one per transaction), then the cameras, groups, rollouts and counter.
        let registry = try sourceModels.contents()
        for record in registry.versions {
            let file = try sourceModels.file(of: record.version)
            if try await targetModels.importVersion(record, file: file) { report.modelVersionsCopied += 1 }
            report.modelVersions += 1
            progress("model registry: \(report.modelVersions) of \(registry.versions.count) versions")
        }
        try await targetModels.importState(registry)
        (report.cameraModels, report.rollouts) = (registry.cameras.count, registry.rollouts.count)
        let audit = try await targetModels.audit()
        for record in registry.versions where audit.fileSHA256[record.version] != record.sha256 {
            let held = audit.fileSHA256[record.version].map { String($0.prefix(12)) } ?? "nothing"
            throw Failure.mismatch("model \(record.version) in PostgreSQL hashes to \(held), not \(record.sha256.prefix(12))")
        }
        guard audit.sequence >= registry.sequence else {
            throw Failure.mismatch("the registry's counter is \(audit.sequence) in PostgreSQL, below SQLite's \(registry.sequence)")
        }
        let heldRows = try await targetModels.cameras()
        guard heldRows.map(\.cameraId) == registry.cameras.map(\.cameraId),
            heldRows.map(\.assignment) == registry.cameras.map(\.assignment)
        else {
            throw Failure.mismatch("the cameras' model assignments in PostgreSQL differ from SQLite's")
        }
        guard try await targetModels.rollouts().count >= registry.rollouts.count else {
            throw Failure.mismatch("rollouts missing in PostgreSQL")
        }
        progress(
            "model registry: \(registry.versions.count) versions, \(registry.cameras.count) cameras, "
                + "\(registry.rollouts.count) rollouts checked")
        let heldCameras = Set(try await targetFleet.load().map(\.cameraID))
        let missing = Set(cameras.map(\.cameraID)).subtracting(heldCameras)
        guard missing.isEmpty else { throw Failure.mismatch("cameras not in PostgreSQL: \(missing.sorted().joined(separator: ", "))") }
        return report
    }
}
