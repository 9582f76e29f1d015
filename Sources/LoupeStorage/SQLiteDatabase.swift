public import GRDB

/// How every SQLite file of the project (the agent's label store, the
/// manager's training data, model registry and fleet status) is opened, and
/// the one reading of its errors.
public enum SQLiteDatabase {
    public enum Durability: String, Sendable {
        /// Every commit is on disk before it returns: acknowledgements depend on it.
        case full = "FULL"
        /// Safe against a process crash; the last commits may be lost on power loss.
        case normal = "NORMAL"
    }

    /// WAL (a `DatabasePool`), a 10 s busy timeout, `durability` as `synchronous`, migrated to the latest schema.
    public static func open(_ path: String, durability: Durability, migrator: DatabaseMigrator) throws(StoreError) -> DatabasePool {
        do {
            var configuration = Configuration()
            configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = \(durability.rawValue)") }
            configuration.busyMode = .timeout(10)
            let pool = try DatabasePool(path: path, configuration: configuration)
            try migrator.migrate(pool)
            return pool
        } catch {
            throw failure(error, path: path)
        }
    }

    /// An error from a database call on `path`: a `StoreError` as thrown, a full disk as `.diskFull`
    /// naming the file, anything else as `.database`.
    public static func failure(_ error: any Error, path: String) -> StoreError {
        switch error {
        case let error as StoreError: error
        case let error as DatabaseError where error.resultCode == .SQLITE_FULL: .diskFull(path: path)
        default: .database("\(error)")
        }
    }
}
