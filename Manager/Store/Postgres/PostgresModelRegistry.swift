public import Crypto
public import Foundation
import Logging
import LoupeProto
import LoupeSegmentation
import PostgresNIO

/// The model registry (`ModelRegistryStoring`) in PostgreSQL: signed model
/// files as `bytea` pieces beside their version rows, what each camera
/// should run and runs, camera groups and rollouts, so one database holds
/// everything a manager needs. The decisions are `RegistryRules`, the same
/// as the SQLite registry's. Every write holds the row of the registry's one
/// counter for its transaction, so writes from any number of managers run
/// one at a time, as on SQLite: version numbers, rollout numbers and signed
/// sequences follow the order in which writes commit. The signing key stays
/// in its file on the manager's host; only signatures reach the database.
public final class PostgresModelRegistry: Sendable {
    public let signingKey: Curve25519.Signing.PrivateKey
    private let rules: RegistryRules
    private let database: PostgresDatabase

    /// Model files are stored in pieces of this size, so no write or chunk read moves a whole file as one value.
    static let pieceBytes = 1 << 20

    public init(database: PostgresDatabase, signingKeyPath: String) async throws {
        signingKey = try ModelSigningKey.loadOrCreate(signingKeyPath)
        rules = RegistryRules(signingKey: signingKey)
        self.database = database
        try await database.migrate(
            "models",
            [
                (
                    "1 versions, files, cameras, groups and rollouts",
                    [
                        "CREATE TABLE registry_sequence (id integer PRIMARY KEY CHECK (id = 1), value bigint NOT NULL)",
                        "INSERT INTO registry_sequence (id, value) VALUES (1, 0)",
                        """
                        CREATE TABLE model_version (
                            version text PRIMARY KEY, number bigint NOT NULL UNIQUE, inspection_type text NOT NULL, sha256 text NOT NULL,
                            bytes bigint NOT NULL, offer_signature text NOT NULL, parent_version text, description text NOT NULL,
                            validation_miou double precision NOT NULL, dataset_sha256 text NOT NULL, created_at timestamptz NOT NULL,
                            sequence bigint NOT NULL)
                        """,
                        "CREATE INDEX model_version_inspection_type ON model_version (inspection_type, number)",
                        """
                        CREATE TABLE model_file_piece (
                            version text NOT NULL REFERENCES model_version (version), piece integer NOT NULL, data bytea NOT NULL,
                            PRIMARY KEY (version, piece))
                        """,
                        """
                        CREATE TABLE camera_model (
                            camera_id text PRIMARY KEY, desired_version text, installed_version text, installed_at timestamptz,
                            last_error text, updated_at timestamptz NOT NULL, previous_version text, assignment text,
                              assignment_signature text)
                        """,
                        "CREATE TABLE camera_group (name text PRIMARY KEY, cameras text[] NOT NULL)",
                        "CREATE TABLE rollout (id text PRIMARY KEY, state text NOT NULL, started_at timestamptz NOT NULL, document jsonb "
                            + "NOT NULL)",
                        "CREATE INDEX rollout_state ON rollout (state)",
                    ]
                ),
                ("2 validation part figures", ["ALTER TABLE model_version ADD COLUMN validation_parts jsonb"]),
            ])
    }

    // MARK: The registry's calls

    public func publish(_ modelFile: Data, inspectionType: String) async throws(ModelRegistryError) -> ModelVersionRecord {
        let model = try RegistryRules.publishable(modelFile, inspectionType: inspectionType)
        let rules = self.rules
        return try await write { connection, logger in
            let sequence = try await Self.reserveSequences(1, connection, logger)
            let newest = try await Self.versions(connection, logger, inspectionType: nil).first
            let parent = try await Self.versions(connection, logger, inspectionType: inspectionType).first
            let (signed, record) = try rules.sign(
                modelFile, model: model, inspectionType: inspectionType,
                number: (newest?.number ?? 0) + 1, sequence: sequence, parent: parent?.version)
            try await Self.insert(record, file: signed, connection, logger)
            return record
        }
    }

    public func versions(inspectionType: String?) async throws(ModelRegistryError) -> [ModelVersionRecord] {
        try await read { connection, logger in try await Self.versions(connection, logger, inspectionType: inspectionType) }
    }

    public func version(_ name: String) async throws(ModelRegistryError) -> ModelVersionRecord {
        guard let record = try await read({ connection, logger in try await Self.versions(connection, logger, named: [name]).first }) else {
            throw .notFound("model version \(name)")
        }
        return record
    }

    public func assign(_ version: String, to cameras: [String], remember: Bool) async throws(ModelRegistryError) {
        let rules = self.rules
        try await write { connection, logger in
            let target = try await Self.target(version, connection, logger)
            let written = try rules.assign(
                target, to: cameras, rows: try await Self.rows(cameras, connection, logger), remember: remember,
                firstSequence: try await Self.reserveSequences(cameras.count, connection, logger))
            for row in written { try await Self.save(row, connection, logger) }
        }
    }

    public func camera(_ cameraId: String) async throws(ModelRegistryError) -> CameraModelRecord? {
        try await read { connection, logger in try await Self.rows([cameraId], connection, logger)[cameraId] }
    }

    public func cameras() async throws(ModelRegistryError) -> [CameraModelRecord] {
        try await read { connection, logger in try await Self.rows(nil, connection, logger).values.sorted { $0.cameraId < $1.cameraId } }
    }

    public func recordInstall(cameraId: String, version: String, ok: Bool, error: String) async throws(ModelRegistryError) {
        try await write { connection, logger in
            var row = RegistryRules.row(cameraId, in: try await Self.rows([cameraId], connection, logger))
            RegistryRules.recordInstall(on: &row, version: version, ok: ok, error: error)
            try await Self.save(row, connection, logger)
        }
    }

    public func chunk(_ version: String, offset: UInt64, length: Int) async throws(ModelRegistryError) -> (Data, last: Bool) {
        let record = try await self.version(version)
        let range = try RegistryRules.chunkRange(of: record, offset: offset, length: length)
        guard !range.isEmpty else { return (Data(), range.lowerBound >= record.bytes) }
        let first = range.lowerBound / Self.pieceBytes, last = (range.upperBound - 1) / Self.pieceBytes
        let pieces = try await read { connection, logger in
            var pieces: [(Int, Data)] = []
            for try await piece in try await connection.query(
                """
                SELECT piece, data FROM model_file_piece WHERE version = \(version) AND piece BETWEEN \(first) AND \(last) ORDER BY piece
                """, logger: logger
            ).decode((Int, Data).self) {
                pieces.append(piece)
            }
            return pieces
        }
        guard pieces.map(\.0) == Array(first...last) else { throw .io("model file of \(version) is incomplete in \(database.description)") }
        var bytes = Data(capacity: pieces.reduce(0) { $0 + $1.1.count })
        for (_, data) in pieces { bytes.append(data) }
        let start = range.lowerBound - first * Self.pieceBytes
        guard start + range.count <= bytes.count else {
            throw .io("model file of \(version) is shorter in \(database.description) than its record")
        }
        let data = bytes.subdata(in: start..<(start + range.count))
        return (data, range.upperBound >= record.bytes)
    }

    public func setGroup(_ name: String, cameras: [String]) async throws(ModelRegistryError) {
        let members = try RegistryRules.group(name, cameras: cameras)
        try await write { connection, logger in
            if members.isEmpty {
                _ = try await connection.query("DELETE FROM camera_group WHERE name = \(name)", logger: logger)
            } else {
                _ = try await connection.query(
                    """
                    INSERT INTO camera_group (name, cameras) VALUES (\(name), \(members))
                    ON CONFLICT (name) DO UPDATE SET cameras = EXCLUDED.cameras
                    """, logger: logger)
            }
        }
    }

    public func groups() async throws(ModelRegistryError) -> [String: [String]] {
        try await read { connection, logger in
            var groups: [String: [String]] = [:]
            for try await (name, cameras) in try await connection.query("SELECT name, cameras FROM camera_group", logger: logger)
                .decode((String, [String]).self)
            {
                groups[name] = cameras
            }
            return groups
        }
    }

    public func startRollout(
        _ version: String, canaries: [String], remaining: [String], policy: CanaryPolicyRecord,
        priorDefectRate: Double?
    ) async throws(ModelRegistryError) -> RolloutRecord {
        try RegistryRules.checkRollout(canaries: canaries, policy: policy)
        let rules = self.rules
        return try await write { connection, logger in
            let target = try await Self.target(version, connection, logger)
            let held = try await Self.scalar("SELECT count(*) FROM rollout", as: Int.self, connection, logger) ?? 0
            let (rollout, written) = try rules.startRollout(
                target, .init(canaries: canaries, remaining: remaining, policy: policy, priorDefectRate: priorDefectRate),
                holding: .init(
                    open: try await Self.rollouts(connection, logger, state: .canary),
                    rows: try await Self.rows(canaries, connection, logger),
                    number: held + 1, firstSequence: try await Self.reserveSequences(canaries.count, connection, logger)))
            try await Self.save(rollout, insert: true, connection, logger)
            for row in written { try await Self.save(row, connection, logger) }
            return rollout
        }
    }

    public func rollouts(state: RolloutRecord.State?) async throws(ModelRegistryError) -> [RolloutRecord] {
        try await read { connection, logger in try await Self.rollouts(connection, logger, state: state) }
    }

    /// Saves the observation figures of a rollout still in its canary phase (a decided one is left as decided).
    public func update(_ rollout: RolloutRecord) async throws(ModelRegistryError) {
        try await write { connection, logger in try await Self.save(rollout, insert: false, connection, logger) }
    }

    public func decide(
        _ id: String, promote: Bool, reason: String,
        figures: RolloutRecord?
    ) async throws(ModelRegistryError) -> RolloutRecord {
        let rules = self.rules
        return try await write { connection, logger in
            guard let held = try await Self.rollouts(connection, logger, id: id).first else {
                throw ModelRegistryError.notFound("rollout \(id)")
            }
            let (rollout, moves) = try RegistryRules.decide(held, promote: promote, reason: reason, figures: figures)
            let versions = try await Self.versions(connection, logger, named: Array(Set(moves.map(\.version))))
            let written = try rules.move(
                moves, promote: promote, rows: try await Self.rows(moves.map(\.camera), connection, logger),
                versions: Dictionary(uniqueKeysWithValues: versions.map { ($0.version, $0) }),
                firstSequence: try await Self.reserveSequences(moves.count, connection, logger))
            try await Self.save(rollout, insert: false, connection, logger)
            for row in written { try await Self.save(row, connection, logger) }
            return rollout
        }
    }

    // MARK: Transactions

    /// What a read or a write does on its connection.
    private typealias Work<T> = @Sendable (PostgresConnection, Logger) async throws -> T

    /// A read on one pooled connection, within `PostgresDatabase.answerWithin`.
    private func read<T: Sendable>(_ body: @escaping Work<T>) async throws(ModelRegistryError) -> T {
        try await run { client, logger in try await client.withConnection { connection in try await body(connection, logger) } }
    }

    /// A write in one transaction that first takes the registry counter's row lock (writes run one at a time) and
    /// last notifies `channel`, which the server delivers to every manager's session when the write commits.
    private func write<T: Sendable>(_ body: @escaping Work<T>) async throws(ModelRegistryError) -> T {
        try await run { client, logger in
            try await client.withTransaction(logger: logger) { connection in
                try await connection.query("SELECT value FROM registry_sequence WHERE id = 1 FOR UPDATE", logger: logger)
                let result = try await body(connection, logger)
                try await connection.query("SELECT pg_notify(\(Self.channel), '')", logger: logger)
                return result
            }
        }
    }

    /// The channel every registry write notifies.
    static let channel = "loupe_registry"
    /// The session advisory lock held by the manager that runs the rollout supervisor ("loupe" and 1).
    static let supervisorLock: Int64 = 0x6C_6F_75_70_65_01

    /// Every other manager's write wakes this one within a notification's delivery; the manager whose session
    /// holds `supervisorLock` leads, and another takes over within seconds of its connection ending.
    public func watch(_ event: @escaping @Sendable (RegistryEvent) -> Void) async {
        await database.session(channel: Self.channel, lock: Self.supervisorLock) { happened in
            switch happened {
            case .changed: event(.changed)
            case .leading(let leading): event(.leading(leading))
            }
        }
    }

    /// Every failure as a `ModelRegistryError` naming the database (the registry's own refusals pass as they are).
    private func run<T: Sendable>(
        _ body: @escaping @Sendable (PostgresClient, Logger) async throws -> T
    ) async throws(ModelRegistryError) -> T {
        let logger = database.logger
        do {
            return try await database.run { client in try await body(client, logger) }
        } catch {
            let cause = (error as? PostgresTransactionError)?.closureError ?? error
            if let refusal = cause as? ModelRegistryError { throw refusal }
            if PostgresDatabase.isDiskFull(cause) { throw .diskFull(database.description) }
            throw .database("\(database.description): \(PostgresDatabase.describe(cause))")
        }
    }

    // MARK: Rows

    /// Reserves `count` values of the registry's counter (held by the transaction's lock); returns the first.
    private static func reserveSequences(_ count: Int, _ connection: PostgresConnection, _ logger: Logger) async throws -> UInt64 {
        let value =
            try await scalar(
                "UPDATE registry_sequence SET value = value + \(count) WHERE id = 1 RETURNING value", as: Int.self,
                connection, logger) ?? 0
        return UInt64(value - count + 1)
    }

    /// The one value a query answers (its first row's first column), nil when it returns no row.
    private static func scalar<T: PostgresDecodable & Sendable>(
        _ query: PostgresQuery, as type: T.Type, _ connection: PostgresConnection,
        _ logger: Logger
    ) async throws -> T? {
        var value: T?
        for try await next in try await connection.query(query, logger: logger).decode(T.self) where value == nil { value = next }
        return value
    }

    private static let versionColumnNames = """
        version, number, inspection_type, sha256, bytes, offer_signature, parent_version, description, validation_miou,
        dataset_sha256, created_at, sequence, validation_parts
        """
    /// The columns as read: the part figures as JSON text.
    private static let versionColumns = versionColumnNames + "::text"

    private static func versions(
        _ connection: PostgresConnection, _ logger: Logger,
        inspectionType: String?
    ) async throws -> [ModelVersionRecord] {
        try await versions(
            connection, logger,
            query: """
                SELECT \(unescaped: versionColumns) FROM model_version
                WHERE \(inspectionType)::text IS NULL OR inspection_type = \(inspectionType) ORDER BY number DESC
                """)
    }

    private static func versions(
        _ connection: PostgresConnection, _ logger: Logger,
        named names: [String]
    ) async throws -> [ModelVersionRecord] {
        try await versions(
            connection, logger,
            query: """
                SELECT \(unescaped: versionColumns) FROM model_version WHERE version = ANY(\(names)) ORDER BY number DESC
                """)
    }

    private static func versions(
        _ connection: PostgresConnection, _ logger: Logger,
        query: PostgresQuery
    ) async throws -> [ModelVersionRecord] {
        var records: [ModelVersionRecord] = []
        for try await (version, number, type, sha256, bytes, signature, parent, description, mIoU, dataset, created, sequence, parts)
            in try await connection.query(query, logger: logger)
            .decode((String, Int, String, String, Int, String, String?, String, Double, String, Date, Int, String?).self)
        {
            records.append(
                ModelVersionRecord(
                    version: version, number: number, inspectionType: type, sha256: sha256, bytes: bytes, offerSignature: signature,
                    parentVersion: parent, description: description, validationMIoU: mIoU, datasetSHA256: dataset, createdAt: created,
                    sequence: sequence, validationParts: try parts.map { try JSONDecoder().decode(PartFigures.self, from: Data($0.utf8)) }))
        }
        return records
    }

    /// The version a write moves cameras to, refused by name when the registry does not hold it.
    private static func target(_ version: String, _ connection: PostgresConnection, _ logger: Logger) async throws -> ModelVersionRecord {
        guard let target = try await versions(connection, logger, named: [version]).first else {
            throw ModelRegistryError.notFound("model version \(version)")
        }
        return target
    }

    /// A version's row and its file's pieces; a version already held is left as it is.
    static func insert(_ record: ModelVersionRecord, file: Data, _ connection: PostgresConnection, _ logger: Logger) async throws {
        let partsJSON = try record.validationParts.map { String(decoding: try JSONEncoder().encode($0), as: UTF8.self) }
        let inserted = try await connection.query(
            """
            INSERT INTO model_version (\(unescaped: versionColumnNames))
            VALUES (\(record.version), \(record.number), \(record.inspectionType), \(record.sha256), \(record.bytes),
                    \(record.offerSignature), \(record.parentVersion), \(record.description), \(record.validationMIoU),
                    \(record.datasetSHA256), \(record.createdAt), \(record.sequence), \(partsJSON)::jsonb)
            ON CONFLICT (version) DO NOTHING RETURNING version
            """, logger: logger)
        var isNew = false
        for try await _ in inserted.decode(String.self) { isNew = true }
        guard isNew else { return }
        for (piece, start) in stride(from: 0, to: file.count, by: pieceBytes).enumerated() {
            let data = file.subdata(in: start..<min(file.count, start + pieceBytes))
            try await connection.query(
                """
                INSERT INTO model_file_piece (version, piece, data) VALUES (\(record.version), \(piece), \(data))
                """, logger: logger)
        }
    }

    private static let cameraColumns = """
        camera_id, desired_version, installed_version, installed_at, last_error, updated_at, previous_version, assignment,
        assignment_signature
        """

    /// The rows of these cameras that exist (of every camera when nil).
    private static func rows(
        _ cameras: [String]?, _ connection: PostgresConnection,
        _ logger: Logger
    ) async throws -> [String: CameraModelRecord] {
        var rows: [String: CameraModelRecord] = [:]
        for try await (id, desired, installed, installedAt, error, updated, previous, assignment, signature)
            in try await connection.query(
                """
                SELECT \(unescaped: cameraColumns) FROM camera_model WHERE \(cameras)::text[] IS NULL OR camera_id = ANY(\(cameras))
                """, logger: logger
            ).decode((String, String?, String?, Date?, String?, Date, String?, String?, String?).self)
        {
            rows[id] = CameraModelRecord(
                cameraId: id, desiredVersion: desired, installedVersion: installed, installedAt: installedAt,
                lastError: error, updatedAt: updated, previousVersion: previous, assignment: assignment,
                assignmentSignature: signature)
        }
        return rows
    }

    static func save(_ row: CameraModelRecord, _ connection: PostgresConnection, _ logger: Logger) async throws {
        try await connection.query(
            """
            INSERT INTO camera_model (\(unescaped: cameraColumns))
            VALUES (\(row.cameraId), \(row.desiredVersion), \(row.installedVersion), \(row.installedAt), \(row.lastError), \(row.updatedAt),
                    \(row.previousVersion), \(row.assignment), \(row.assignmentSignature))
            ON CONFLICT (camera_id) DO UPDATE SET
                desired_version = EXCLUDED.desired_version, installed_version = EXCLUDED.installed_version,
                installed_at = EXCLUDED.installed_at, last_error = EXCLUDED.last_error, updated_at = EXCLUDED.updated_at,
                previous_version = EXCLUDED.previous_version, assignment = EXCLUDED.assignment,
                assignment_signature = EXCLUDED.assignment_signature
            """, logger: logger)
    }

    /// A rollout is kept whole as a JSON document (its policy, previous versions and counts are nested), with
    /// its id, state and start as columns to select by.
    private static func rollouts(
        _ connection: PostgresConnection, _ logger: Logger, state: RolloutRecord.State? = nil,
        id: String? = nil
    ) async throws -> [RolloutRecord] {
        var rollouts: [RolloutRecord] = []
        for try await document in try await connection.query(
            """
            SELECT document::text FROM rollout
            WHERE (\(state?.rawValue)::text IS NULL OR state = \(state?.rawValue)) AND (\(id)::text IS NULL OR id = \(id))
            ORDER BY started_at DESC, id DESC
            """, logger: logger
        ).decode(String.self) {
            rollouts.append(try RolloutDocument.decoder.decode(RolloutRecord.self, from: Data(document.utf8)))
        }
        return rollouts
    }

    /// Inserts a rollout, or saves a held one's figures and state while it is still in its canary phase.
    static func save(_ rollout: RolloutRecord, insert: Bool, _ connection: PostgresConnection, _ logger: Logger) async throws {
        let document = String(decoding: try RolloutDocument.encoder.encode(rollout), as: UTF8.self)
        if insert {
            try await connection.query(
                """
                INSERT INTO rollout (id, state, started_at, document)
                VALUES (\(rollout.id), \(rollout.state.rawValue), \(rollout.startedAt), \(document)::jsonb)
                ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, document = EXCLUDED.document
                """, logger: logger)
        } else {
            try await connection.query(
                """
                UPDATE rollout SET state = \(rollout.state.rawValue), document = \(document)::jsonb
                WHERE id = \(rollout.id) AND state = 'canary'
                """, logger: logger)
        }
    }
}

/// How a rollout is written as JSON in the database: dates as milliseconds since 1970, keys sorted.
enum RolloutDocument {
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .millisecondsSince1970
        encoder.outputFormatting = .sortedKeys
        return encoder
    }()

    static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .millisecondsSince1970
        return decoder
    }()
}

extension PostgresModelRegistry {
    /// Copies one version with its signed file (a migration); false when the database already holds it.
    public func importVersion(_ record: ModelVersionRecord, file: Data) async throws(ModelRegistryError) -> Bool {
        try await write { connection, logger in
            let held = try await Self.versions(connection, logger, named: [record.version]).isEmpty == false
            if !held { try await Self.insert(record, file: file, connection, logger) }
            return !held
        }
    }

    /// Copies the cameras' rows, the groups and the rollouts as the source holds them, and raises the counter to
    /// at least the source's, so nothing signed from here on is older than what the cameras have already seen.
    public func importState(_ contents: RegistryContents) async throws(ModelRegistryError) {
        try await write { connection, logger in
            for row in contents.cameras { try await Self.save(row, connection, logger) }
            for (name, cameras) in contents.groups {
                try await connection.query(
                    """
                    INSERT INTO camera_group (name, cameras) VALUES (\(name), \(cameras))
                    ON CONFLICT (name) DO UPDATE SET cameras = EXCLUDED.cameras
                    """, logger: logger)
            }
            for rollout in contents.rollouts { try await Self.save(rollout, insert: true, connection, logger) }
            let sequence = Int(contents.sequence)
            try await connection.query("UPDATE registry_sequence SET value = GREATEST(value, \(sequence)) WHERE id = 1", logger: logger)
        }
    }

    /// Each version's file as the database holds it, hashed on the server (SHA-256 of its pieces in order, hex),
    /// and the counter's value: what a migration checks.
    public func audit() async throws(ModelRegistryError) -> (fileSHA256: [String: String], sequence: UInt64) {
        try await read { connection, logger in
            var hashes: [String: String] = [:]
            for try await (version, hash) in try await connection.query(
                """
                SELECT v.version, coalesce(encode(sha256(string_agg(p.data, ''::bytea ORDER BY p.piece)), 'hex'), '')
                FROM model_version v LEFT JOIN model_file_piece p ON p.version = v.version GROUP BY v.version
                """, logger: logger
            ).decode((String, String).self) {
                hashes[version] = hash
            }
            let sequence = try await Self.scalar("SELECT value FROM registry_sequence WHERE id = 1", as: Int.self, connection, logger) ?? 0
            return (hashes, UInt64(sequence))
        }
    }
}
