/// What a certificate's holder is allowed to be in the fleet.
///
/// The role is written into the certificate subject's organizational unit (OU),
/// so the manager takes it from the certificate, never from a message.
public enum FleetRole: String, Sendable, CaseIterable, Codable {
    /// A camera agent; its identity is the camera id.
    case agent
    /// A person or script running fleet commands; its identity is a user name.
    case `operator`
    /// The plant's manager; its certificate names the hosts it serves.
    case manager
}

/// Who is at the other end of a connection, as its certificate says.
public struct PeerIdentity: Sendable, Equatable, CustomStringConvertible {
    /// Camera id, operator name or manager name (the subject's common name).
    public var name: String
    public var role: FleetRole
    /// Certificate serial number, lowercase hex without separators.
    public var serial: String

    public init(name: String, role: FleetRole, serial: String) {
        self.name = name
        self.role = role
        self.serial = serial
    }

    public var description: String { "\(role.rawValue) \(name) (serial \(serial))" }
}

/// Names used for camera ids, operator names and host names in certificates.
public enum FleetName {
    /// Checks a camera id or operator name: 1-64 of `A-Z a-z 0-9 . _ -`,
    /// starting with a letter or digit. Such names are safe in file names,
    /// URLs and log lines.
    public static func validate(_ name: String) throws {
        guard !name.isEmpty, name.count <= 64 else {
            throw PKIError.invalidName(name, reason: "must be 1 to 64 characters")
        }
        let allowed = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
        guard name.allSatisfy(allowed.contains) else {
            throw PKIError.invalidName(name, reason: "only letters, digits, '.', '_' and '-' are allowed")
        }
        guard let first = name.first, first.isLetter || first.isNumber else {
            throw PKIError.invalidName(name, reason: "must start with a letter or digit")
        }
    }
}
