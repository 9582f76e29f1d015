import Foundation

/// Why a fleet PKI operation failed, naming the file or name involved.
public enum PKIError: Error, CustomStringConvertible, Equatable {
    case fileExists(path: String)
    case cannotWrite(path: String, errno: Int32)
    case cannotRead(path: String)
    case notPEM(path: String, expected: String)
    case invalidName(String, reason: String)
    case missingRole(subject: String)
    case unknownRole(String)
    case missingIdentity(subject: String)
    case malformedRevocationList(path: String, reason: String)
    case missingRevocationList(path: String)

    public var description: String {
        switch self {
        case .fileExists(let path):
            return "\(path) already exists; remove it or pass --force to overwrite"
        case .cannotWrite(let path, let code):
            return "cannot write \(path): \(String(cString: strerror(code)))"
        case .cannotRead(let path):
            return "cannot read \(path): missing or unreadable"
        case .notPEM(let path, let expected):
            return "\(path) is not a PEM \(expected)"
        case .invalidName(let name, let reason):
            return "invalid name \"\(name)\": \(reason)"
        case .missingRole(let subject):
            return "certificate \(subject) has no Loupe role (subject OU must be agent, operator or manager)"
        case .unknownRole(let role):
            return "unknown role \"\(role)\" (expected agent, operator or manager)"
        case .missingIdentity(let subject):
            return "certificate \(subject) has no common name to identify the peer"
        case .malformedRevocationList(let path, let reason):
            return "revocation list \(path) is malformed: \(reason)"
        case .missingRevocationList(let path):
            return
                "revocation list \(path) does not exist (`loupe tls ca create` writes an empty one; restore it, or remove revocationList "
                + "from the config)"
        }
    }
}
