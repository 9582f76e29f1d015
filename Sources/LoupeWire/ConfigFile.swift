import Foundation

/// Why a configuration file could not be used, naming the file and the key.
public enum ConfigError: Error, CustomStringConvertible, Equatable {
    case unreadable(path: String)
    case invalid(path: String, key: String, reason: String)

    public var description: String {
        switch self {
        case .unreadable(let path):
            return "cannot read config file \(path): missing or unreadable"
        case .invalid(let path, let key, let reason):
            return "config file \(path): \(key.isEmpty ? "" : "key \"\(key)\": ")\(reason)"
        }
    }
}

/// Loads JSON configuration files. Relative paths inside a file are resolved
/// against the file's own folder, so a config folder can be moved as a whole.
public enum ConfigFile {
    public static func load<Config: Decodable>(_ type: Config.Type, path: String) throws -> Config {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError.unreadable(path: path)
        }
        do {
            return try JSONDecoder().decode(Config.self, from: data)
        } catch let error as DecodingError {
            throw describe(error, path: path)
        } catch {
            throw ConfigError.invalid(path: path, key: "", reason: "\(error)")
        }
    }

    /// `path` made absolute relative to the config file's folder.
    public static func resolve(_ path: String, relativeTo configPath: String) -> String {
        if path.hasPrefix("/") { return path }
        let folder = (configPath as NSString).deletingLastPathComponent
        return ((folder.isEmpty ? "." : folder) as NSString).appendingPathComponent(path)
    }

    private static func describe(_ error: DecodingError, path: String) -> ConfigError {
        func key(_ codingPath: [any CodingKey]) -> String {
            codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let missing, let context):
            return .invalid(path: path, key: key(context.codingPath + [missing]), reason: "is required but missing")
        case .typeMismatch(let type, let context):
            return .invalid(path: path, key: key(context.codingPath), reason: "expected \(type)")
        case .valueNotFound(let type, let context):
            return .invalid(path: path, key: key(context.codingPath), reason: "expected \(type), found null")
        case .dataCorrupted(let context):
            return .invalid(path: path, key: key(context.codingPath), reason: "not valid JSON (\(context.debugDescription))")
        @unknown default:
            return .invalid(path: path, key: "", reason: "\(error)")
        }
    }
}

/// Reads a whole-second duration, allowing fractions ("0.5").
extension Duration {
    public static func seconds(fraction value: Double) -> Duration {
        .nanoseconds(Int64(value * 1e9))
    }
}
