public import LoupeStorage

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
    /// A training worker (`loupe worker`): claims queued training jobs from a manager and trains them.
    case worker
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

extension FleetName {
    /// Checks a camera id or operator name against the fleet's one name rule (`FleetName`).
    public static func validate(_ name: String) throws {
        if let problem = problem(with: name) { throw PKIError.invalidName(name, reason: problem) }
    }
}
