import Foundation
import Logging
import LoupeManager
import LoupeTesting
import Testing

/// Where a store suite's stores live: the SQLite files of a fresh folder, or
/// a fresh database on the tests' own PostgreSQL server. Each `open` is a new
/// store object on the same place, as a restarted (or a second) manager opens it.
final class StoreBackend: @unchecked Sendable, CustomTestStringConvertible {
    enum Kind: String, CaseIterable, Sendable { case sqlite, postgres }
    let kind: Kind
    let folder: String
    private(set) var settings: PostgresSettings?
    private var databases: [PostgresDatabase] = []
    private let lock = NSLock()

    var testDescription: String { kind.rawValue }

    private let ownsFolder: Bool

    /// `folder` is where the SQLite files are (a manager's `dataDir`); a fresh temporary folder when nil.
    /// `database` is a PostgreSQL database already made (a fresh one when nil).
    init(_ kind: Kind, database: PostgresSettings? = nil, folder: String? = nil) async throws {
        self.kind = kind
        ownsFolder = folder == nil
        self.folder = folder ?? NSTemporaryDirectory() + "loupe-store-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: self.folder, withIntermediateDirectories: true)
        if kind == .postgres {
            if let database { settings = database } else { settings = try await PostgresServer.shared().createDatabase() }
        }
    }

    deinit {
        for database in databases { database.close() }
        if ownsFolder { try? FileManager.default.removeItem(atPath: folder) }
    }

    /// The manager config keys that put a manager's stores here (none for SQLite: its `dataDir` is `folder`).
    var managerConfig: [String: Any] {
        guard let settings else { return [:] }
        return [
            "storage": [
                "postgres": [
                    "url": settings.url, "passwordFile": settings.passwordFile ?? "",
                    "answerSeconds": settings.answerSeconds ?? PostgresServer.testAnswerSeconds,
                ]
            ]
        ]
    }

    private func database() async throws -> PostgresDatabase {
        let database = try await PostgresDatabase.open(settings!, logger: Logger(label: "store-test"))
        lock.withLock { databases.append(database) }
        return database
    }

    func trainingData() async throws -> any TrainingDataStoring {
        switch kind {
        case .sqlite: try TrainingDataStore(path: folder + "/training-data.sqlite")
        case .postgres: try await PostgresTrainingDataStore(database: database())
        }
    }

    func fleet() async throws -> any FleetStoring {
        switch kind {
        case .sqlite: try FleetStore(path: folder + "/fleet.sqlite")
        case .postgres: try await PostgresFleetStore(database: database())
        }
    }

    /// The model registry, signing with the key file in `folder` (made on first open).
    func models() async throws -> any ModelRegistryStoring {
        switch kind {
        case .sqlite: try ModelRegistry(directory: folder, signingKeyPath: folder + "/model-signing.key")
        case .postgres: try await PostgresModelRegistry(database: database(), signingKeyPath: folder + "/model-signing.key")
        }
    }

    /// The training queue: for SQLite the memory queue a manager keeps (one per backend, so each open is the same
    /// queue, as every open of a database is the same table).
    func trainingJobs() async throws -> any TrainingJobStoring {
        switch kind {
        case .sqlite: memoryJobs
        case .postgres: try await PostgresTrainingJobs(database: database())
        }
    }
    private let memoryJobs = MemoryTrainingJobs()

    static var all: [StoreBackend.Kind] { Kind.allCases }
}
