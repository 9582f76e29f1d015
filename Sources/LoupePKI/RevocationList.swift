public import Foundation

/// The fleet's list of revoked certificates, kept as JSON next to the CA.
///
/// `loupe tls revoke` appends to it; the manager reloads it on SIGHUP or when
/// the file changes, and refuses new connections from listed serial numbers.
/// The file is local to the manager host and protected by file permissions,
/// so it is not signed.
public struct RevocationList: Codable, Sendable, Equatable {
    /// One revoked certificate.
    public struct Entry: Codable, Sendable, Equatable {
        /// Serial number, lowercase hex without separators.
        public var serial: String
        /// The certificate's identity at revocation time, for people reading the file.
        public var name: String
        public var role: FleetRole?
        public var revokedAt: Date
        public var reason: String

        public init(serial: String, name: String, role: FleetRole?, revokedAt: Date, reason: String) {
            self.serial = serial
            self.name = name
            self.role = role
            self.revokedAt = revokedAt
            self.reason = reason
        }
    }

    public var entries: [Entry]

    public init(entries: [Entry] = []) {
        self.entries = entries
    }

    /// True when the serial number (any case, with or without ':') is revoked.
    public func isRevoked(serial: String) -> Bool {
        let wanted = Self.normalize(serial)
        return entries.contains { Self.normalize($0.serial) == wanted }
    }

    /// Loads the list; a missing file is an empty list.
    /// Reads the list. A missing file is an error unless `missingIsEmpty`
    /// (only `loupe tls revoke`, which creates the list, says so): a manager
    /// never reads a list it cannot find as "nobody is revoked".
    public static func load(path: String, missingIsEmpty: Bool = false) throws -> RevocationList {
        guard FileManager.default.fileExists(atPath: path) else {
            if missingIsEmpty { return RevocationList() }
            throw PKIError.missingRevocationList(path: path)
        }
        guard let data = FileManager.default.contents(atPath: path) else { throw PKIError.cannotRead(path: path) }
        if data.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) { return RevocationList() }
        do {
            return try decoder.decode(RevocationList.self, from: data)
        } catch {
            throw PKIError.malformedRevocationList(path: path, reason: "\(error)")
        }
    }

    /// Writes the list atomically (write to a temporary file, then rename).
    public func save(path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        let text = String(decoding: try encoder.encode(self), as: UTF8.self) + "\n"
        let temporary = path + ".tmp"
        try PEMFiles.write(text, to: temporary, mode: 0o644, overwrite: true)
        guard rename(temporary, path) == 0 else { throw PKIError.cannotWrite(path: path, errno: errno) }
    }

    static func normalize(_ serial: String) -> String {
        let hex = serial.lowercased().filter { $0 != ":" }
        let trimmed = hex.drop(while: { $0 == "0" })
        return trimmed.isEmpty ? "0" : String(trimmed)
    }

    private static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }()
}
