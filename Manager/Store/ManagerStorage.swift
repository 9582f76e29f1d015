import Crypto
import Foundation
import LoupeProto
import LoupeSegmentation

// The manager's storage behind three narrow interfaces. Today: SQLite (WAL)
// files and content-addressed blobs in the data directory, so a plant needs
// no setup. A PostgreSQL backend shared by several managers would implement
// the same three protocols (and `ManagerStorage.open`); nothing else in the
// manager names a concrete store.

/// Labelled ROIs from every camera, one per content hash.
public protocol TrainingDataStoring: Sendable {
    /// Stores an upload durably (returns after the commit); false when that content hash is already held.
    func store(_ upload: Loupe_V1_RoiUpload, from cameraId: String) async throws(TrainingDataError) -> Bool
    /// How many ROIs are held: in all, from one camera, of one inspection type, or both.
    func count(cameraId: String?, inspectionType: String?) throws(TrainingDataError) -> Int
    /// The inspection types a camera has sent ROIs for.
    func inspectionTypes(cameraId: String) throws(TrainingDataError) -> Set<String>
    /// Every ROI of an inspection type as training images named by content hash.
    func dataset(inspectionType: String) throws(TrainingDataError) -> (dataset: SegmentationDataset, classNames: [String], sha256: String)
    func statistics(inspectionType: String?, validationFraction: Double) throws(TrainingDataError) -> [Loupe_V1_DatasetStats]
}

/// Every camera ever seen and its latest status.
public protocol FleetStoring: Sendable {
    func save(_ camera: Loupe_V1_CameraStatus) throws
    func load() throws -> [Loupe_V1_CameraStatus]
}

/// Signed model versions, what each camera should run and runs, groups and rollouts.
public protocol ModelRegistryStoring: Sendable {
    var signingKey: Curve25519.Signing.PrivateKey { get }
    func publish(_ modelFile: Data, inspectionType: String) throws(ModelRegistryError) -> ModelVersionRecord
    func versions(inspectionType: String?) throws(ModelRegistryError) -> [ModelVersionRecord]
    func version(_ name: String) throws(ModelRegistryError) -> ModelVersionRecord
    func assign(_ version: String, to cameras: [String], remember: Bool) throws(ModelRegistryError)
    func camera(_ cameraId: String) throws(ModelRegistryError) -> CameraModelRecord?
    func cameras() throws(ModelRegistryError) -> [CameraModelRecord]
    func recordInstall(cameraId: String, version: String, ok: Bool, error: String) throws(ModelRegistryError)
    func chunk(_ version: String, offset: UInt64, length: Int) throws(ModelRegistryError) -> (Data, last: Bool)
    func setGroup(_ name: String, cameras: [String]) throws(ModelRegistryError)
    func groups() throws(ModelRegistryError) -> [String: [String]]
    func startRollout(_ version: String, canaries: [String], remaining: [String], policy: CanaryPolicyRecord,
                      priorDefectRate: Double?) throws(ModelRegistryError) -> RolloutRecord
    func rollouts(state: RolloutRecord.State?) throws(ModelRegistryError) -> [RolloutRecord]
    func update(_ rollout: RolloutRecord) throws(ModelRegistryError)
    func decide(_ id: String, promote: Bool, reason: String, figures: RolloutRecord?) throws(ModelRegistryError) -> RolloutRecord
}

extension ModelRegistryStoring {
    public func versions() throws(ModelRegistryError) -> [ModelVersionRecord] { try versions(inspectionType: nil) }
    public func assign(_ version: String, to cameras: [String]) throws(ModelRegistryError) { try assign(version, to: cameras, remember: true) }
    public func rollouts() throws(ModelRegistryError) -> [RolloutRecord] { try rollouts(state: nil) }

    public func group(_ name: String) throws(ModelRegistryError) -> [String] {
        guard let cameras = try groups()[name] else { throw .notFound("camera group \(name)") }
        return cameras
    }
}

extension TrainingDataStoring {
    public func count() throws(TrainingDataError) -> Int { try count(cameraId: nil, inspectionType: nil) }
    public func count(cameraId: String?) throws(TrainingDataError) -> Int { try count(cameraId: cameraId, inspectionType: nil) }
}

extension TrainingDataStore: TrainingDataStoring {}
extension FleetStore: FleetStoring {}
extension ModelRegistry: ModelRegistryStoring {}

/// The three stores of a manager.
public struct ManagerStorage: Sendable {
    public var trainingData: any TrainingDataStoring
    public var fleet: any FleetStoring
    public var models: any ModelRegistryStoring

    /// The SQLite backend in `config.dataDir`: training-data.sqlite,
    /// fleet.sqlite, models.sqlite and models/.
    public static func open(_ config: ManagerConfig) throws -> ManagerStorage {
        try FileManager.default.createDirectory(atPath: config.dataDir, withIntermediateDirectories: true)
        return ManagerStorage(
            trainingData: try TrainingDataStore(path: config.dataDir + "/training-data.sqlite"),
            fleet: try FleetStore(path: config.dataDir + "/fleet.sqlite"),
            models: try ModelRegistry(directory: config.dataDir, signingKeyPath: config.signingKeyPath))
    }
}
