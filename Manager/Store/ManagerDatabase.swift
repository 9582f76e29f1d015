import GRDB

/// How the manager opens each of its SQLite files: WAL (a DatabasePool),
/// a busy timeout, the given synchronous level, migrated to the latest schema.
enum ManagerDatabase {
    enum Durability: String {
        /// Every commit is on disk before it returns: acknowledgements depend on it.
        case full = "FULL"
        /// Safe against a process crash; the last commits may be lost on power loss.
        case normal = "NORMAL"
    }

    static func open(_ path: String, durability: Durability, migrator: DatabaseMigrator) throws -> DatabasePool {
        var configuration = Configuration()
        configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = \(durability.rawValue)") }
        configuration.busyMode = .timeout(10)
        let pool = try DatabasePool(path: path, configuration: configuration)
        try migrator.migrate(pool)
        return pool
    }
}
