import Foundation
import Logging

/// `loupe manager migrate --to postgres://…`: moves a manager's fleet and
/// training data from its SQLite files to a PostgreSQL database, every row
/// and every PNG, then checks the copy: the same number of ROIs, the same
/// content hashes, and every copied image and mask hashing (on the server)
/// to the content hash it is stored under. Rows already in the database are
/// left alone, so an interrupted run is simply run again. The manager must
/// be stopped while it runs (an upload taken meanwhile would not be copied).
public enum StorageMigration {
    public struct Report: Sendable, Equatable {
        public var cameras = 0
        public var rois = 0
        public var roisCopied = 0
        public var roisAlreadyThere = 0
        public var roisChecked = 0
    }

    public enum Failure: Error, CustomStringConvertible {
        case alreadyOnPostgres(String)
        case mismatch(String)

        public var description: String {
            switch self {
            case .alreadyOnPostgres(let url): "this manager's config already keeps its stores in \(url); migrate copies from the SQLite files in dataDir"
            case .mismatch(let why): "the copy does not match the SQLite store: \(why)"
            }
        }
    }

    /// Rows copied (and checked) per transaction.
    static let batch = 200

    public static func toPostgres(_ config: ManagerConfig, _ settings: PostgresSettings, logger: Logger,
                                  progress: @Sendable (String) -> Void) async throws -> Report {
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
        var report = Report()

        let cameras = try sourceFleet.load()
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
                    throw Failure.mismatch("PostgreSQL holds ROI \(row.held.prefix(12)) where SQLite has \(index < expected.count ? String(expected[index].prefix(12)) : "none")")
                }
                guard row.computed == row.held else {
                    throw Failure.mismatch("ROI \(row.held.prefix(12)): its image and mask in PostgreSQL hash to \(row.computed.prefix(12))")
                }
                index += 1
            }
            after = last.held
            progress("check: \(index) of \(report.rois) ROIs")
        }
        report.roisChecked = index
        let heldCameras = Set(try await targetFleet.load().map(\.cameraID))
        let missing = Set(cameras.map(\.cameraID)).subtracting(heldCameras)
        guard missing.isEmpty else { throw Failure.mismatch("cameras not in PostgreSQL: \(missing.sorted().joined(separator: ", "))") }
        return report
    }
}
