import Crypto
import CryptoExtras
public import Foundation
public import GRDB
public import LoupeStorage
import Synchronization

/// What a signed-in user may do on the agent's page.
public enum AccessRole: String, Codable, Sendable, CaseIterable, Comparable {
    /// Sees captures, labels, live results and training progress; changes nothing.
    case viewer
    /// Also labels, ticks ROIs, edits the recipe and classes, captures, trains, installs and rolls back models.
    case `operator`
    /// Also manages users.
    case admin

    var rank: Int { Self.allCases.firstIndex(of: self)! }
    public static func < (a: Self, b: Self) -> Bool { a.rank < b.rank }
}

public struct UserRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "user"
    public var name: String
    public var role: AccessRole
    public var salt: Data
    public var hash: Data
    /// scrypt N = 2^costLog2 (r = 8, p = 1).
    public var costLog2: Int
    public var createdAt: Date
    public var passwordChangedAt: Date
}

struct SessionRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "session"
    var tokenHash: String
    var user: String
    var createdAt: Date
    var expiresAt: Date
}

/// A signed-in session.
public struct Session: Codable, Sendable, Equatable {
    public var user: String
    public var role: AccessRole
    public var expiresAt: Date
}

/// Users and sessions in the label store. Passwords are kept only as a
/// salted scrypt hash (N = 2^15, r = 8, p = 1: about 32 MiB and a tenth of a
/// second per check); session tokens only as their SHA-256, so neither a
/// copy of the database nor its backups let anyone sign in.
extension LabelStore {
    public static let passwordCostLog2 = 15
    public static let minimumPasswordLength = 10

    static func passwordHash(_ password: String, salt: Data, costLog2: Int) throws -> Data {
        let key = try KDF.Scrypt.deriveKey(
            from: Data(password.utf8), salt: salt, outputByteCount: 32, rounds: 1 << costLog2,
            blockSize: 8, parallelism: 1, maxMemory: 64 << 20)
        return key.withUnsafeBytes { Data($0) }
    }

    /// Runs a password hash somewhere that may block for its ~100 ms (scrypt): the page's sign-in guard passes its
    /// hashing threads (bounded, niced, 503 when full); others take `BlockingIO`.
    public typealias PasswordHashing = @Sendable (_ work: @escaping @Sendable () throws -> Data) async throws -> Data

    public static let hashOffPool: PasswordHashing = { work in try await BlockingIO.run(work) }

    static func checkPassword(_ password: String) throws(StoreError) {
        guard password.count >= minimumPasswordLength else {
            throw .invalid("a password needs at least \(minimumPasswordLength) characters")
        }
        guard password.utf8.count <= 1024 else { throw .invalid("a password may have at most 1024 bytes") }
    }

    /// Adds a user (or replaces their password and role). Throws the store's errors and whatever `hashing` throws
    /// (the sign-in guard's 503 when its queue is full).
    public func setUser(_ name: String, password: String, role: AccessRole, hashing: PasswordHashing = hashOffPool) async throws {
        guard FleetName.isValid(name) else { throw StoreError.invalid(FleetName.refusal("user name", name)) }
        try Self.checkPassword(password)
        let salt = Data((0..<16).map { _ in UInt8.random(in: 0...255) })
        let hash = try await hashing { try Self.passwordHash(password, salt: salt, costLog2: Self.passwordCostLog2) }
        try await write { db in
            let existing = try UserRecord.fetchOne(db, key: name)
            try UserRecord(
                name: name, role: role, salt: salt, hash: hash, costLog2: Self.passwordCostLog2,
                createdAt: existing?.createdAt ?? Date(), passwordChangedAt: Date()
            ).save(db)
            // A new password ends the user's other sessions.
            try db.execute(sql: "DELETE FROM session WHERE user = ?", arguments: [name])
        }
        sessionEvents.ended(user: name)
    }

    public func users() async throws(StoreError) -> [UserRecord] {
        try await read { db in try UserRecord.order(Column("name")).fetchAll(db) }
    }

    public func removeUser(_ name: String) async throws(StoreError) {
        try await write { db in
            guard try UserRecord.deleteOne(db, key: name) else { throw StoreError.notFound("user \(name)") }
            let admins = try UserRecord.filter(Column("role") == AccessRole.admin.rawValue).fetchCount(db)
            guard admins > 0 else { throw StoreError.invalid("the last admin cannot be removed") }
        }
        sessionEvents.ended(user: name)
    }

    /// Checks a password and opens a session. Unknown users cost the same time as wrong passwords. Throws the
    /// store's errors and whatever `hashing` throws.
    public func signIn(
        user name: String, password: String, lifetime: TimeInterval, hashing: PasswordHashing = hashOffPool
    ) async throws -> (token: String, session: Session)? {
        let record = try await read { db in try UserRecord.fetchOne(db, key: name) }
        let salt = record?.salt ?? Data(repeating: 0, count: 16)
        let cost = record?.costLog2 ?? Self.passwordCostLog2
        let computed = try await hashing { try Self.passwordHash(password, salt: salt, costLog2: cost) }
        guard let record, Self.constantTimeEqual(computed, record.hash) else { return nil }
        let token = Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        let now = Date()
        let session = SessionRecord(
            tokenHash: Self.sessionKey(token: token), user: name, createdAt: now, expiresAt: now.addingTimeInterval(lifetime))
        try await write { db in
            try db.execute(sql: "DELETE FROM session WHERE expiresAt < ?", arguments: [now])
            try session.insert(db)
        }
        return (token, Session(user: name, role: record.role, expiresAt: session.expiresAt))
    }

    /// The live session a token names, if any.
    public func session(token: String) async throws(StoreError) -> Session? {
        guard let key = Self.sessionKey(checking: token) else { return nil }
        return try await session(key: key)
    }

    /// The live session stored under `key` (`sessionKey(token:)`), if any.
    public func session(key: String) async throws(StoreError) -> Session? {
        try await read { db -> Session? in
            guard let session = try SessionRecord.fetchOne(db, key: key), session.expiresAt > Date(),
                let user = try UserRecord.fetchOne(db, key: session.user)
            else { return nil }
            return Session(user: user.name, role: user.role, expiresAt: session.expiresAt)
        }
    }

    public func signOut(token: String) async throws(StoreError) {
        let hash = Self.sessionKey(token: token)
        try await write { db in _ = try SessionRecord.deleteOne(db, key: hash) }
        sessionEvents.ended(key: hash)
    }

    /// What a session is stored and watched by: the SHA-256 of its token.
    public static func sessionKey(token: String) -> String { BlobStore.hash(Data(token.utf8)) }

    /// The key of a token a client sent, or nil when it cannot be one (empty, or over 128 characters).
    public static func sessionKey(checking token: String) -> String? {
        guard !token.isEmpty, token.count <= 128 else { return nil }
        return sessionKey(token: token)
    }

    static func constantTimeEqual(_ a: Data, _ b: Data) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for (x, y) in zip(a, b) { difference |= x ^ y }
        return difference == 0
    }
}

/// Open streams (MJPEG, events) watching their session: each ends as soon as
/// its session does, by sign-out, a password change or the user's removal.
public final class SessionEvents: Sendable {
    private struct Watcher {
        var key: String
        var user: String
        var end: @Sendable () -> Void
    }

    private let watchers = Mutex<(next: Int, all: [Int: Watcher])>((0, [:]))

    public init() {}

    /// Calls `end` once when the session `key` of `user` ends; returns the watch to remove.
    public func watch(key: String, user: String, end: @escaping @Sendable () -> Void) -> Int {
        watchers.withLock { state in
            state.next += 1
            state.all[state.next] = Watcher(key: key, user: user, end: end)
            return state.next
        }
    }

    public func unwatch(_ id: Int) {
        _ = watchers.withLock { $0.all.removeValue(forKey: id) }
    }

    /// Streams being watched now.
    public var count: Int { watchers.withLock { $0.all.count } }

    func ended(key: String) { end { $0.key == key } }
    func ended(user: String) { end { $0.user == user } }

    private func end(where matches: (Watcher) -> Bool) {
        let ended = watchers.withLock { state -> [Watcher] in
            let hit = state.all.filter { matches($0.value) }
            for id in hit.keys { state.all[id] = nil }
            return Array(hit.values)
        }
        for watcher in ended { watcher.end() }
    }
}
