import Crypto
import CryptoExtras
import Foundation
import GRDB
import LoupeStorage

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
        let key = try KDF.Scrypt.deriveKey(from: Data(password.utf8), salt: salt, outputByteCount: 32, rounds: 1 << costLog2,
                                           blockSize: 8, parallelism: 1, maxMemory: 64 << 20)
        return key.withUnsafeBytes { Data($0) }
    }

    static func checkPassword(_ password: String) throws(StoreError) {
        guard password.count >= minimumPasswordLength else { throw .invalid("a password needs at least \(minimumPasswordLength) characters") }
        guard password.utf8.count <= 1024 else { throw .invalid("a password may have at most 1024 bytes") }
    }

    /// Adds a user (or replaces their password and role).
    public func setUser(_ name: String, password: String, role: AccessRole) throws(StoreError) {
        guard FleetSafeName.isValid(name) else { throw .invalid("user name \"\(name)\" must be 1–64 letters, digits, '.', '_' or '-'") }
        try Self.checkPassword(password)
        let salt = Data((0..<16).map { _ in UInt8.random(in: 0...255) })
        let hash: Data
        do { hash = try Self.passwordHash(password, salt: salt, costLog2: Self.passwordCostLog2) } catch { throw .invalid("password hashing failed: \(error)") }
        try write { db in
            let existing = try UserRecord.fetchOne(db, key: name)
            try UserRecord(name: name, role: role, salt: salt, hash: hash, costLog2: Self.passwordCostLog2,
                           createdAt: existing?.createdAt ?? Date(), passwordChangedAt: Date()).save(db)
            // A new password ends the user's other sessions.
            try db.execute(sql: "DELETE FROM session WHERE user = ?", arguments: [name])
        }
    }

    public func users() throws(StoreError) -> [UserRecord] {
        try read { db in try UserRecord.order(Column("name")).fetchAll(db) }
    }

    public func removeUser(_ name: String) throws(StoreError) {
        try write { db in
            guard try UserRecord.deleteOne(db, key: name) else { throw StoreError.notFound("user \(name)") }
            let admins = try UserRecord.filter(Column("role") == AccessRole.admin.rawValue).fetchCount(db)
            guard admins > 0 else { throw StoreError.invalid("the last admin cannot be removed") }
        }
    }

    /// Checks a password and opens a session. Unknown users cost the same time as wrong passwords.
    public func signIn(user name: String, password: String, lifetime: TimeInterval) throws(StoreError) -> (token: String, session: Session)? {
        let record = try read { db in try UserRecord.fetchOne(db, key: name) }
        let salt = record?.salt ?? Data(repeating: 0, count: 16)
        let computed: Data
        do { computed = try Self.passwordHash(password, salt: salt, costLog2: record?.costLog2 ?? Self.passwordCostLog2) } catch { return nil }
        guard let record, Self.constantTimeEqual(computed, record.hash) else { return nil }
        let token = Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        let now = Date()
        let session = SessionRecord(tokenHash: BlobStore.hash(Data(token.utf8)), user: name, createdAt: now, expiresAt: now.addingTimeInterval(lifetime))
        try write { db in
            try db.execute(sql: "DELETE FROM session WHERE expiresAt < ?", arguments: [now])
            try session.insert(db)
        }
        return (token, Session(user: name, role: record.role, expiresAt: session.expiresAt))
    }

    /// The live session a token names, if any.
    public func session(token: String) throws(StoreError) -> Session? {
        guard !token.isEmpty, token.count <= 128 else { return nil }
        let hash = BlobStore.hash(Data(token.utf8))
        return try read { db -> Session? in
            guard let session = try SessionRecord.fetchOne(db, key: hash), session.expiresAt > Date(),
                  let user = try UserRecord.fetchOne(db, key: session.user) else { return nil }
            return Session(user: user.name, role: user.role, expiresAt: session.expiresAt)
        }
    }

    public func signOut(token: String) throws(StoreError) {
        let hash = BlobStore.hash(Data(token.utf8))
        try write { db in _ = try SessionRecord.deleteOne(db, key: hash) }
    }

    static func constantTimeEqual(_ a: Data, _ b: Data) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for (x, y) in zip(a, b) { difference |= x ^ y }
        return difference == 0
    }
}
