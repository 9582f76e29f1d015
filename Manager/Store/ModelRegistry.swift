public import Crypto
public import Foundation
public import GRDB
import LoupeProto
public import LoupeSegmentation
import LoupeStorage
import SwiftProtobuf

/// Why the registry refused or failed.
public enum ModelRegistryError: Error, Equatable, CustomStringConvertible {
    case invalid(String)
    case notFound(String)
    case database(String)
    case io(String)
    case diskFull(String)

    public var description: String {
        switch self {
        case .invalid(let why): "invalid: \(why)"
        case .notFound(let what): "not found: \(what)"
        case .diskFull(let path): "disk full while writing \(path); free space and retry (nothing was changed)"
        case .database(let why): "model registry database: \(why)"
        case .io(let why): why
        }
    }
}

/// A model version as the manager holds it.
public struct ModelVersionRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "modelVersion"
    public var version: String
    public var number: Int
    public var inspectionType: String
    /// SHA-256 of the whole model file, hex.
    public var sha256: String
    public var bytes: Int
    /// Ed25519 signature by the manager's key over the raw SHA-256, hex.
    public var offerSignature: String
    public var parentVersion: String?
    public var description: String
    public var validationMIoU: Double
    public var datasetSHA256: String
    public var createdAt: Date
    /// The registry's monotonic sequence at publication, signed into the file (0 for versions published before provenance).
    public var sequence: Int = 0
    /// The validation split judged as parts at the version's calibrated threshold (stored as JSON); nil when it was
    /// trained without one, or published before the registry kept them.
    public var validationParts: PartFigures? = nil
}

/// Which model each camera should run and which it reports running.
public struct CameraModelRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "cameraModel"
    public var cameraId: String
    public var desiredVersion: String?
    public var installedVersion: String?
    public var installedAt: Date?
    public var lastError: String?
    public var updatedAt: Date
    /// The version desired before the current one: where a rollback goes.
    public var previousVersion: String?
    /// The signed `ModelAssignment` of the desired version, sent with its
    /// offer (hex of the bytes, and of the signature).
    public var assignment: String?
    public var assignmentSignature: String?
}

/// The manager's signed model versions (`models/<version>.loupe` plus rows in
/// `models.sqlite`, WAL) and the desired/installed version of each camera.
/// Every version is signed with the manager's key as it is published: the
/// file's own signature, and the offer's signature over the file's SHA-256.
public final class ModelRegistry: Sendable {
    public let directory: String
    public let signingKey: Curve25519.Signing.PrivateKey
    let rules: RegistryRules
    private let pool: DatabasePool

    public init(directory: String, signingKeyPath: String) throws(ModelRegistryError) {
        self.directory = directory
        do {
            try FileManager.default.createDirectory(atPath: directory + "/models", withIntermediateDirectories: true)
        } catch {
            throw .io("cannot make \(directory)/models: \(error)")
        }
        signingKey = try ModelSigningKey.loadOrCreate(signingKeyPath)
        rules = RegistryRules(signingKey: signingKey)
        do {
            pool = try SQLiteDatabase.open(directory + "/models.sqlite", durability: .full, migrator: Self.migrator)
        } catch {
            throw .database("\(error)")
        }
        try signMissingAssignments()
    }

    /// Numbered migrations. Released ones are never edited; changes get a new one.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("1 model versions and camera models") { db in
            try db.create(table: "modelVersion") { t in
                t.primaryKey("version", .text)
                t.column("number", .integer).notNull().unique()
                t.column("inspectionType", .text).notNull().indexed()
                t.column("sha256", .text).notNull()
                t.column("bytes", .integer).notNull()
                t.column("offerSignature", .text).notNull()
                t.column("parentVersion", .text)
                t.column("description", .text).notNull()
                t.column("validationMIoU", .double).notNull()
                t.column("datasetSHA256", .text).notNull()
                t.column("createdAt", .datetime).notNull()
            }
            try db.create(table: "cameraModel") { t in
                t.primaryKey("cameraId", .text)
                t.column("desiredVersion", .text)
                t.column("installedVersion", .text)
                t.column("installedAt", .datetime)
                t.column("lastError", .text)
                t.column("updatedAt", .datetime).notNull()
            }
        }
        migrator.registerMigration("2 previous versions, groups and rollouts") { db in
            try db.alter(table: "cameraModel") { t in t.add(column: "previousVersion", .text) }
            try db.create(table: "cameraGroup") { t in
                t.primaryKey("name", .text)
                t.column("cameras", .text).notNull()
            }
            try db.create(table: "rollout") { t in
                t.primaryKey("id", .text)
                t.column("version", .text).notNull()
                t.column("state", .text).notNull().indexed()
                t.column("canaryCameras", .text).notNull()
                t.column("remainingCameras", .text).notNull()
                t.column("previousVersions", .text).notNull()
                t.column("policy", .text).notNull()
                t.column("startedAt", .datetime).notNull()
                t.column("canariesInstalledAt", .datetime)
                t.column("decidedAt", .datetime)
                t.column("countsAtInstall", .text).notNull()
                t.column("priorDefectRate", .double)
                t.column("canaryParts", .integer).notNull()
                t.column("canaryDefectRate", .double).notNull()
                t.column("baselineParts", .integer).notNull()
                t.column("baselineDefectRate", .double).notNull()
                t.column("reason", .text).notNull()
            }
        }
        migrator.registerMigration("3 provenance: a monotonic sequence and signed assignments") { db in
            try db.create(table: "registrySequence") { t in
                t.primaryKey("id", .integer)
                t.column("value", .integer).notNull()
            }
            let highest = try Int.fetchOne(db, sql: "SELECT MAX(number) FROM modelVersion") ?? 0
            try db.execute(sql: "INSERT INTO registrySequence (id, value) VALUES (1, ?)", arguments: [highest])
            try db.alter(table: "modelVersion") { t in t.add(column: "sequence", .integer).notNull().defaults(to: 0) }
            try db.alter(table: "cameraModel") { t in
                t.add(column: "assignment", .text)
                t.add(column: "assignmentSignature", .text)
            }
        }
        migrator.registerMigration("4 validation part figures") { db in
            try db.alter(table: "modelVersion") { t in t.add(column: "validationParts", .text) }
        }
        return migrator
    }

    /// Reserves `count` values of the registry's one counter, shared by publications and every signed assignment,
    /// so each is newer than everything signed before it; returns the first.
    func reserveSequences(_ count: Int, _ db: Database) throws -> UInt64 {
        try db.execute(sql: "UPDATE registrySequence SET value = value + ? WHERE id = 1", arguments: [count])
        let value = try Int.fetchOne(db, sql: "SELECT value FROM registrySequence WHERE id = 1") ?? 0
        return UInt64(value - count + 1)
    }

    /// The rows of these cameras that exist.
    func rows(_ cameras: [String], _ db: Database) throws -> [String: CameraModelRecord] {
        Dictionary(uniqueKeysWithValues: try CameraModelRecord.fetchAll(db, keys: cameras).map { ($0.cameraId, $0) })
    }

    /// Cameras whose desired version was set before assignments existed get one now.
    private func signMissingAssignments() throws(ModelRegistryError) {
        try write { db in
            for var row in try CameraModelRecord.filter(Column("desiredVersion") != nil && Column("assignment") == nil).fetchAll(db) {
                guard let desired = row.desiredVersion else { continue }
                guard let target = try ModelVersionRecord.fetchOne(db, key: desired) else {
                    throw ModelRegistryError.notFound("model version \(desired)")
                }
                try rules.desire(target, for: &row, sequence: try reserveSequences(1, db))
                try row.save(db)
            }
        }
    }

    func write<T>(_ body: (Database) throws -> T) throws(ModelRegistryError) -> T {
        do { return try pool.write(body) } catch let error as ModelRegistryError { throw error } catch {
            throw Self.failure(error, path: directory + "/models.sqlite")
        }
    }

    func read<T>(_ body: (Database) throws -> T) throws(ModelRegistryError) -> T {
        do { return try pool.read(body) } catch let error as ModelRegistryError { throw error } catch {
            throw Self.failure(error, path: directory + "/models.sqlite")
        }
    }

    /// A database error in the registry's terms (`SQLiteDatabase.failure`: a full disk is named as such).
    static func failure(_ error: any Error, path: String) -> ModelRegistryError {
        switch SQLiteDatabase.failure(error, path: path) {
        case .diskFull(let path): .diskFull(path)
        case .database(let why): .database(why)
        case let other: .database(other.description)
        }
    }

    public func path(of version: String) -> String { directory + "/models/\(version).loupe" }

    /// Signs a trained model with the manager's key and stores it as the next version of its inspection type.
    public func publish(_ modelFile: Data, inspectionType: String) throws(ModelRegistryError) -> ModelVersionRecord {
        let model = try RegistryRules.publishable(modelFile, inspectionType: inspectionType)
        return try write { db in
            let sequence = try reserveSequences(1, db)
            let number = (try Int.fetchOne(db, sql: "SELECT MAX(number) FROM modelVersion") ?? 0) + 1
            let parent = try String.fetchOne(
                db, sql: "SELECT version FROM modelVersion WHERE inspectionType = ? ORDER BY number DESC LIMIT 1",
                arguments: [inspectionType])
            let (signed, record) = try rules.sign(
                modelFile, model: model, inspectionType: inspectionType, number: number,
                sequence: sequence, parent: parent)
            // The file is durable (file and directory fsynced) before the row that names it commits.
            do {
                try BlobStore.replaceDurably(self.path(of: record.version), with: signed)
            } catch {
                throw ModelRegistryError.io("cannot write model \(record.version): \(error)")
            }
            try record.insert(db)
            return record
        }
    }

    public func versions(inspectionType: String?) throws(ModelRegistryError) -> [ModelVersionRecord] {
        try read { db in
            var request = ModelVersionRecord.order(Column("number").desc)
            if let inspectionType { request = request.filter(Column("inspectionType") == inspectionType) }
            return try request.fetchAll(db)
        }
    }

    public func version(_ name: String) throws(ModelRegistryError) -> ModelVersionRecord {
        guard let record = try read({ db in try ModelVersionRecord.fetchOne(db, key: name) }) else {
            throw .notFound("model version \(name)")
        }
        return record
    }

    /// Sets the version these cameras should run (a push, or a rollback to an earlier version; `RegistryRules.assign`).
    public func assign(_ version: String, to cameras: [String], remember: Bool) throws(ModelRegistryError) {
        let target = try self.version(version)
        try write { db in
            let written = try rules.assign(
                target, to: cameras, rows: try rows(cameras, db), remember: remember,
                firstSequence: try reserveSequences(cameras.count, db))
            for row in written { try row.save(db) }
        }
    }

    public func camera(_ cameraId: String) throws(ModelRegistryError) -> CameraModelRecord? {
        try read { db in try CameraModelRecord.fetchOne(db, key: cameraId) }
    }

    public func cameras() throws(ModelRegistryError) -> [CameraModelRecord] {
        try read { db in try CameraModelRecord.order(Column("cameraId")).fetchAll(db) }
    }

    /// Records what a camera reported after an offer.
    public func recordInstall(cameraId: String, version: String, ok: Bool, error: String) throws(ModelRegistryError) {
        try write { db in
            var row = RegistryRules.row(cameraId, in: try rows([cameraId], db))
            RegistryRules.recordInstall(on: &row, version: version, ok: ok, error: error)
            try row.save(db)
        }
    }

    /// Part of a version's file, for ModelChunkRequest.
    public func chunk(_ version: String, offset: UInt64, length: Int) throws(ModelRegistryError) -> (Data, last: Bool) {
        let record = try self.version(version)
        let range = try RegistryRules.chunkRange(of: record, offset: offset, length: length)
        guard let handle = FileHandle(forReadingAtPath: path(of: version)) else { throw .io("model file of \(version) is missing") }
        defer { try? handle.close() }
        do {
            try handle.seek(toOffset: offset)
            let data = try handle.read(upToCount: range.count) ?? Data()
            return (data, offset + UInt64(data.count) >= UInt64(record.bytes))
        } catch {
            throw .io("reading model \(version): \(error)")
        }
    }
}

/// Everything a registry holds but its files, for a move to another backend (`loupe manager migrate`).
public struct RegistryContents: Sendable {
    /// Oldest first.
    public var versions: [ModelVersionRecord]
    public var cameras: [CameraModelRecord]
    public var groups: [String: [String]]
    public var rollouts: [RolloutRecord]
    /// The counter's value: the newest sequence signed so far.
    public var sequence: UInt64
}

extension ModelRegistry {
    /// What this registry holds, read in one transaction.
    public func contents() throws(ModelRegistryError) -> RegistryContents {
        try read { db in
            RegistryContents(
                versions: try ModelVersionRecord.order(Column("number")).fetchAll(db),
                cameras: try CameraModelRecord.order(Column("cameraId")).fetchAll(db),
                groups: Dictionary(uniqueKeysWithValues: try CameraGroupRecord.fetchAll(db).map { ($0.name, $0.cameras) }),
                rollouts: try RolloutRecord.order(Column("startedAt")).fetchAll(db),
                sequence: UInt64(try Int.fetchOne(db, sql: "SELECT value FROM registrySequence WHERE id = 1") ?? 0))
        }
    }

    /// A version's whole signed file.
    public func file(of version: String) throws(ModelRegistryError) -> Data {
        guard let data = FileManager.default.contents(atPath: path(of: version)) else { throw .io("model file of \(version) is missing") }
        return data
    }
}
