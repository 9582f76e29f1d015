public import Crypto
public import Foundation
public import LoupeProto
public import LoupeSegmentation
public import Logging

// The manager's storage behind three narrow interfaces. By default SQLite
// (WAL) files and content-addressed blobs in the data directory, so a plant
// needs no setup; with `storage.postgres` in the config, the fleet, the
// training data and the model registry live in a PostgreSQL database
// (Store/Postgres/) that several managers may share. Only `ManagerStorage.open` names a concrete store.
// What the registry decides is `RegistryRules`, shared by both backends.

/// Labelled ROIs from every camera, one per content hash.
public protocol TrainingDataStoring: Sendable {
    /// Stores an upload durably (returns after the commit); false when that content hash is already held.
    func store(_ upload: Loupe_V1_RoiUpload, from cameraId: String) async throws(TrainingDataError) -> Bool
    /// How many ROIs are held: in all, from one camera, of one inspection type, or both.
    func count(cameraId: String?, inspectionType: String?) async throws(TrainingDataError) -> Int
    /// The inspection types a camera has sent ROIs for.
    func inspectionTypes(cameraId: String) async throws(TrainingDataError) -> Set<String>
    /// How many ROIs of an inspection type are held, and the class names of the newest upload (nil: none held).
    func datasetHead(inspectionType: String) async throws(TrainingDataError) -> DatasetHead?
    /// Up to `limit` ROIs of an inspection type whose content hash sorts after `after` (byte order), with their
    /// PNGs: the training set read a page at a time (`dataset(inspectionType:)`, and workers over the wire).
    func datasetPage(inspectionType: String, after: String?, limit: Int) async throws(TrainingDataError) -> [DatasetPiece]
    func statistics(inspectionType: String?, validationFraction: Double) async throws(TrainingDataError) -> [Loupe_V1_DatasetStats]
    /// Every content hash held, in order (for audits, a migration's check, and tests).
    func contentHashes() async throws(TrainingDataError) -> [String]
}

/// Every camera ever seen and its latest status.
public protocol FleetStoring: Sendable {
    func save(_ camera: Loupe_V1_CameraStatus) async throws
    /// Every camera known, offline, as a restarted manager first sees them.
    func load() async throws -> [Loupe_V1_CameraStatus]
    /// Every camera as last stored by whichever manager it was connected to, online when that manager said so
    /// within `CameraRegistry.sharedOnlineWithin`: a shared store's view of the cameras on other managers.
    func latest() async throws -> [Loupe_V1_CameraStatus]
}

/// Signed model versions, what each camera should run and runs, groups and rollouts.
public protocol ModelRegistryStoring: Sendable {
    var signingKey: Curve25519.Signing.PrivateKey { get }
    func publish(_ modelFile: Data, inspectionType: String) async throws(ModelRegistryError) -> ModelVersionRecord
    func versions(inspectionType: String?) async throws(ModelRegistryError) -> [ModelVersionRecord]
    func version(_ name: String) async throws(ModelRegistryError) -> ModelVersionRecord
    func assign(_ version: String, to cameras: [String], remember: Bool) async throws(ModelRegistryError)
    func camera(_ cameraId: String) async throws(ModelRegistryError) -> CameraModelRecord?
    func cameras() async throws(ModelRegistryError) -> [CameraModelRecord]
    func recordInstall(cameraId: String, version: String, ok: Bool, error: String) async throws(ModelRegistryError)
    func chunk(_ version: String, offset: UInt64, length: Int) async throws(ModelRegistryError) -> (Data, last: Bool)
    func setGroup(_ name: String, cameras: [String]) async throws(ModelRegistryError)
    func groups() async throws(ModelRegistryError) -> [String: [String]]
    func startRollout(
        _ version: String, canaries: [String], remaining: [String], policy: CanaryPolicyRecord,
        priorDefectRate: Double?
    ) async throws(ModelRegistryError) -> RolloutRecord
    func rollouts(state: RolloutRecord.State?) async throws(ModelRegistryError) -> [RolloutRecord]
    func update(_ rollout: RolloutRecord) async throws(ModelRegistryError)
    func decide(_ id: String, promote: Bool, reason: String, figures: RolloutRecord?) async throws(ModelRegistryError) -> RolloutRecord
    /// Runs until cancelled, telling this manager what a registry shared with other managers needs it to know:
    /// `.changed` when the registry may have changed behind its back, `.leading` as it gains or loses the right to
    /// run the work that must run once in the plant (the rollout supervisor). A registry only this manager opens
    /// leads at once and returns.
    func watch(_ event: @escaping @Sendable (RegistryEvent) -> Void) async
}

/// What `ModelRegistryStoring.watch` reports.
public enum RegistryEvent: Sendable, Equatable {
    /// Another manager changed the registry, or this one reconnected to it (what was said meanwhile is lost): look again.
    case changed
    /// This manager now runs (true), or no longer runs (false), the work that must run once.
    case leading(Bool)
}

extension ModelRegistryStoring {
    public func versions() async throws(ModelRegistryError) -> [ModelVersionRecord] { try await versions(inspectionType: nil) }
    public func assign(_ version: String, to cameras: [String]) async throws(ModelRegistryError) {
        try await assign(version, to: cameras, remember: true)
    }
    public func rollouts() async throws(ModelRegistryError) -> [RolloutRecord] { try await rollouts(state: nil) }

    public func group(_ name: String) async throws(ModelRegistryError) -> [String] {
        guard let cameras = try await groups()[name] else { throw .notFound("camera group \(name)") }
        return cameras
    }
}

extension TrainingDataStoring {
    public func count() async throws(TrainingDataError) -> Int { try await count(cameraId: nil, inspectionType: nil) }

    /// Every ROI of an inspection type as training images named by content hash (so the train/validation split,
    /// made by name hash, stays put as data grows), with the class names of the newest upload: read a page at a
    /// time and spooled to `scratchDirectory` (`DatasetAssembler`), so only one page is held at once.
    public func dataset(
        inspectionType: String, scratchDirectory: String
    ) async throws(TrainingDataError) -> (dataset: SpooledImages, classNames: [String]) {
        guard let head = try await datasetHead(inspectionType: inspectionType) else {
            throw .invalid("no labelled ROIs of inspection type \(inspectionType) have been uploaded")
        }
        var assembler = try DatasetAssembler(classNames: head.classNames, scratchDirectory: scratchDirectory)
        var page: [DatasetPiece]
        repeat {
            page = try await datasetPage(inspectionType: inspectionType, after: assembler.after, limit: DatasetAssembler.pageSize)
            for piece in page { try assembler.add(piece) }
        } while page.count == DatasetAssembler.pageSize
        return assembler.finish()
    }

    public func count(cameraId: String?) async throws(TrainingDataError) -> Int { try await count(cameraId: cameraId, inspectionType: nil) }
}

extension TrainingDataStore: TrainingDataStoring {}
extension FleetStore: FleetStoring {}
extension ModelRegistry: ModelRegistryStoring {}

extension PostgresTrainingDataStore: TrainingDataStoring {}
extension PostgresFleetStore: FleetStoring {}
extension PostgresModelRegistry: ModelRegistryStoring {}

/// The stores of a manager.
public struct ManagerStorage: Sendable {
    public var trainingData: any TrainingDataStoring
    public var fleet: any FleetStoring
    public var models: any ModelRegistryStoring
    /// The training queue: in the database, shared by every manager and worker (PostgreSQL), or in memory (SQLite).
    public var trainingJobs: any TrainingJobStoring
    /// The PostgreSQL database behind the stores, when they are there.
    public var database: PostgresDatabase?

    /// The stores `config.storage` names: by default the SQLite backend in
    /// `config.dataDir` (training-data.sqlite, fleet.sqlite, models.sqlite and
    /// models/); with `storage.postgres`, all three in that database (migrated
    /// on open). The model-signing key is a file on this host either way.
    public static func open(_ config: ManagerConfig, logger: Logger) async throws -> ManagerStorage {
        try FileManager.default.createDirectory(atPath: config.dataDir, withIntermediateDirectories: true)
        if let settings = config.storage?.postgres {
            let database = try await PostgresDatabase.open(settings, logger: logger)
            do {
                return ManagerStorage(
                    trainingData: try await PostgresTrainingDataStore(database: database),
                    fleet: try await PostgresFleetStore(database: database),
                    models: try await PostgresModelRegistry(database: database, signingKeyPath: config.signingKeyPath),
                    trainingJobs: try await PostgresTrainingJobs(database: database), database: database)
            } catch let error as ModelRegistryError {
                database.close()
                throw error
            } catch {
                database.close()
                throw StorageSetupError.unreachable("\(database.description): \(PostgresDatabase.describe(error))")
            }
        }
        return ManagerStorage(
            trainingData: try TrainingDataStore(path: config.dataDir + "/training-data.sqlite"),
            fleet: try FleetStore(path: config.dataDir + "/fleet.sqlite"),
            models: try ModelRegistry(directory: config.dataDir, signingKeyPath: config.signingKeyPath), trainingJobs: MemoryTrainingJobs())
    }

    /// The fleet store when other managers share it (PostgreSQL), for their cameras' latest status; nil on SQLite.
    public var sharedFleet: (any FleetStoring)? { database == nil ? nil : fleet }

    /// Where the stores are, for the log.
    public var location: String { database?.description ?? "SQLite" }
}
