import Foundation
import Logging
public import LoupeProto
import LoupeWire
import PostgresNIO
import SwiftProtobuf

/// The training queue in PostgreSQL, shared by every manager of the plant and, through them, every worker. A
/// claim takes the oldest queued job, or one whose holder's lease ran out, with `FOR UPDATE SKIP LOCKED`: two
/// claims at once never take the same job and never wait on each other. Leases are timed by the database's
/// clock, so managers whose clocks differ agree on when one ran out. What a claim, a renewal or a cancel does to
/// a job is `TrainingJobRecord`'s rules, the same as the memory queue's.
public final class PostgresTrainingJobs: TrainingJobStoring {
    private let database: PostgresDatabase

    public init(database: PostgresDatabase) async throws {
        self.database = database
        try await database.migrate(
            "training",
            [
                (
                    "1 jobs",
                    [
                        """
                        CREATE TABLE training_job (
                            id text PRIMARY KEY, state smallint NOT NULL, requester text NOT NULL, requester_is_camera boolean NOT NULL,
                            queued_at timestamptz NOT NULL, holder text, lease_until timestamptz, attempts integer NOT NULL,
                            cancel_requested boolean NOT NULL, updates integer NOT NULL, record bytea NOT NULL)
                        """,
                        "CREATE INDEX training_job_claim ON training_job (state, queued_at, id)",
                        "CREATE INDEX training_job_requester ON training_job (requester, state)",
                    ]
                )
            ])
    }

    private static let columns = "id, requester_is_camera, queued_at, holder, lease_until, attempts, cancel_requested, updates, record"
    private typealias Row = (String, Bool, Date, String?, Date?, Int, Bool, Int, ByteBuffer)

    private static func decode(_ row: Row) throws -> TrainingJobRecord {
        let (id, isCamera, queuedAt, holder, leaseUntil, attempts, cancelRequested, updates, bytes) = row
        let stored = try Loupe_V1_TrainingJob(serializedBytes: Array(buffer: bytes))
        var job = TrainingJobRecord(
            id: id, request: stored.request, requester: stored.requester, requesterIsCamera: isCamera, queuedAt: queuedAt)
        job.progress = stored.progress
        job.history = stored.history
        (job.updates, job.holder, job.leaseUntil, job.attempts, job.cancelRequested) = (
            updates, holder, leaseUntil, attempts, cancelRequested
        )
        return job
    }

    private static func rows(_ query: PostgresQuery, _ connection: PostgresConnection, _ logger: Logger) async throws -> [TrainingJobRecord]
    {
        var jobs: [TrainingJobRecord] = []
        for try await row in try await connection.query(query, logger: logger).decode(Row.self) { jobs.append(try decode(row)) }
        return jobs
    }

    /// What a write does to a job's lease.
    private enum Lease {
        case keep, none
        /// From now, by the database's clock.
        case renew(Duration)
    }

    /// Writes a job back.
    private static func write(_ job: TrainingJobRecord, lease: Lease, _ connection: PostgresConnection, _ logger: Logger) async throws {
        let record = ByteBuffer(bytes: try job.wire.serializedBytes() as [UInt8])
        let (keep, seconds): (Bool, Double?) =
            switch lease {
            case .keep: (true, nil)
            case .none: (false, nil)
            case .renew(let duration): (false, duration.seconds)
            }
        try await connection.query(
            """
            UPDATE training_job SET state = \(Int(job.state.rawValue)), holder = \(job.holder), attempts = \(job.attempts),
                cancel_requested = \(job.cancelRequested), updates = \(job.updates), record = \(record),
                lease_until = CASE WHEN \(keep) THEN lease_until
                                   WHEN \(seconds)::double precision IS NULL THEN NULL
                                   ELSE now() + make_interval(secs => \(seconds)::double precision) END
            WHERE id = \(job.id)
            """, logger: logger)
    }

    /// Runs `body` in one transaction (or, for a read, on one connection), every failure naming the database.
    private func transaction<T: Sendable>(
        readOnly: Bool = false,
        _ body: @escaping @Sendable (PostgresConnection, Logger) async throws -> T
    ) async throws -> T {
        let logger = database.logger
        do {
            return try await database.run { client in
                readOnly
                    ? try await client.withConnection { try await body($0, logger) }
                    : try await client.withTransaction(logger: logger) { try await body($0, logger) }
            }
        } catch {
            let cause = (error as? PostgresTransactionError)?.closureError ?? error
            throw TrainingQueueError.database("\(database.description): \(PostgresDatabase.describe(cause))")
        }
    }

    /// One locked job that has not ended (its row held until the transaction ends), or nil.
    private static func locked(_ id: String, _ connection: PostgresConnection, _ logger: Logger) async throws -> TrainingJobRecord? {
        try await rows("SELECT \(unescaped: columns) FROM training_job WHERE id = \(id) FOR UPDATE", connection, logger).first
    }

    public func enqueue(_ job: TrainingJobRecord) async throws {
        let record = ByteBuffer(bytes: try job.wire.serializedBytes() as [UInt8])
        try await transaction { connection, logger in
            try await connection.query(
                """
                INSERT INTO training_job (id, state, requester, requester_is_camera, queued_at, holder, lease_until, attempts,
                  cancel_requested,
                                          updates, record)
                VALUES (\(job.id), \(Int(job.state.rawValue)), \(job.requester), \(job.requesterIsCamera), \(job.queuedAt), NULL, NULL,
                        \(job.attempts), \(job.cancelRequested), \(job.updates), \(record))
                """, logger: logger)
            // Finished jobs beyond the newest `finishedLimit` are forgotten, as on one manager.
            try await connection.query(
                """
                DELETE FROM training_job WHERE id IN (
                    SELECT id FROM training_job WHERE state IN (3, 4, 5) ORDER BY queued_at DESC, id DESC OFFSET
                      \(TrainingJobRecord.finishedLimit))
                """, logger: logger)
        }
    }

    public func claim(holder: String, lease: Duration, maxAttempts: Int) async throws -> TrainingJobRecord? {
        try await transaction { connection, logger in
            // A job out of attempts is failed and the next one looked at, within the same transaction.
            for _ in 0..<8 {
                guard
                    var job = try await Self.rows(
                        """
                        SELECT \(unescaped: Self.columns) FROM training_job
                        WHERE state = 1 OR (state = 2 AND lease_until < now())
                        ORDER BY queued_at, id LIMIT 1 FOR UPDATE SKIP LOCKED
                        """, connection, logger
                    ).first
                else { return nil }
                let taken = job.claimed(by: holder, until: Date().addingTimeInterval(lease.seconds), maxAttempts: maxAttempts)
                try await Self.write(job, lease: taken ? .renew(lease) : .none, connection, logger)
                if taken { return try await Self.locked(job.id, connection, logger) }
            }
            return nil
        }
    }

    public func renew(_ id: String, holder: String, updates: [Loupe_V1_TrainingProgress], lease: Duration) async throws -> TrainingLease {
        try await transaction { connection, logger in
            guard var job = try await Self.locked(id, connection, logger) else { return .missing }
            guard job.state == .running, job.holder == holder else {
                return .lost("training job \(id) is not held by \(holder) (\(job.holder.map { "held by \($0)" } ?? "\(job.state)"))")
            }
            for update in updates { job.note(update) }
            try await Self.write(job, lease: .renew(lease), connection, logger)
            return .held(try await Self.locked(id, connection, logger) ?? job)
        }
    }

    public func finish(_ id: String, holder: String, last: Loupe_V1_TrainingProgress) async throws -> TrainingLease {
        try await transaction { connection, logger in
            guard var job = try await Self.locked(id, connection, logger) else { return .missing }
            guard job.state == .running, job.holder == holder else { return .lost("training job \(id) is not held by \(holder)") }
            job.note(last)
            job.leaseUntil = nil
            try await Self.write(job, lease: .none, connection, logger)
            return .held(job)
        }
    }

    public func release(_ id: String, holder: String) async throws {
        try await transaction { connection, logger in
            guard var job = try await Self.locked(id, connection, logger), job.state == .running, job.holder == holder else { return }
            job.release()
            try await Self.write(job, lease: .none, connection, logger)
        }
    }

    public func requestCancel(_ id: String) async throws -> TrainingJobRecord? {
        try await transaction { connection, logger in
            guard var job = try await Self.locked(id, connection, logger), !job.hasEnded else { return nil }
            job.cancel()
            try await Self.write(job, lease: job.state == .running ? .keep : .none, connection, logger)
            return job
        }
    }

    public func job(_ id: String) async throws -> TrainingJobRecord? {
        try await transaction(readOnly: true) { connection, logger in
            try await Self.rows("SELECT \(unescaped: Self.columns) FROM training_job WHERE id = \(id)", connection, logger).first
        }
    }

    public func jobs(limit: Int) async throws -> [TrainingJobRecord] {
        try await transaction(readOnly: true) { connection, logger in
            try await Self.rows(
                "SELECT \(unescaped: Self.columns) FROM training_job ORDER BY queued_at DESC, id DESC LIMIT \(limit)", connection, logger)
        }
    }

    public func active(requester: String) async throws -> Int {
        try await transaction(readOnly: true) { connection, logger in
            var count = 0
            for try await value in try await connection.query(
                "SELECT count(*) FROM training_job WHERE requester = \(requester) AND state IN (1, 2)",
                logger: logger
            ).decode(Int.self) { count = value }
            return count
        }
    }

    public func counts() async throws -> (queued: Int, running: Int) {
        try await transaction(readOnly: true) { connection, logger in
            var (queued, running) = (0, 0)
            for try await (state, count) in try await connection.query(
                "SELECT state::bigint, count(*) FROM training_job WHERE state IN (1, 2) GROUP BY state",
                logger: logger
            ).decode((Int, Int).self) {
                if state == 1 { queued = count } else { running = count }
            }
            return (queued, running)
        }
    }
}
