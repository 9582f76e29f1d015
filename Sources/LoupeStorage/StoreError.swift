import Foundation

/// Why a store (the agent's label store, content-addressed blob files) refused or failed.
public enum StoreError: Error, Equatable, CustomStringConvertible {
    case invalid(String)
    case notFound(String)
    case missingBlob(String)
    case io(path: String, reason: String)
    case diskFull(path: String)
    case database(String)

    public var description: String {
        switch self {
        case .invalid(let why): "invalid: \(why)"
        case .notFound(let what): "not found: \(what)"
        case .missingBlob(let hash): "the stored file \(hash) is missing"
        case .io(let path, let reason): "\(path): \(reason)"
        case .diskFull(let path): "disk full while writing \(path); free space and retry (nothing was changed)"
        case .database(let why): "database: \(why)"
        }
    }
}
