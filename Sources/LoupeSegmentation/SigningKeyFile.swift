public import Crypto
public import Foundation
import LoupeStorage

/// Ed25519 keys on disk: 64 hex digits (with or without a newline), or the raw 32 bytes.
public enum SigningKeyFile {
    public static func load(_ path: String) throws -> Curve25519.Signing.PrivateKey {
        try Curve25519.Signing.PrivateKey(rawRepresentation: raw(path))
    }

    public static func loadPublic(_ path: String) throws -> Curve25519.Signing.PublicKey {
        try Curve25519.Signing.PublicKey(rawRepresentation: raw(path))
    }

    /// Writes a key as 64 hex digits and a newline, durably; a private key
    /// is mode 0600 from its first byte.
    public static func write(_ raw: Data, to path: String, secret: Bool) throws {
        try BlobStore.replaceDurably(path, with: Data((raw.hexString + "\n").utf8), mode: secret ? 0o600 : 0o644)
    }

    private static func raw(_ path: String) throws -> Data {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        if let text = String(data: data, encoding: .utf8)?.trimmingCharacters(in: .whitespacesAndNewlines), text.count == 64,
            let decoded = Data(hexString: text)
        {
            return decoded
        }
        return data
    }
}
