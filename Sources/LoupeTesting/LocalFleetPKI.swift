public import Foundation
public import LoupePKI
public import LoupeWire

/// A fleet PKI made fresh in a folder: a CA and whatever member
/// certificates are asked for, each as `ROLE-NAME.pem` and
/// `ROLE-NAME-key.pem` (a number added when that name is taken). The one
/// PKI builder of the tests, the benchmarks and `loupe demo`; the real
/// fleet's is `loupe tls` (Deploy/RUNBOOK.md).
public final class LocalFleetPKI: Sendable {
    public let dir: String
    public let ca: FleetCA
    public let caPath: String

    /// A PKI in `folder` (made if missing); nil: a new temporary folder.
    public init(folder: String? = nil, organization: String = "Local Plant") throws {
        if let folder {
            dir = folder
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        } else {
            dir = try TemporaryDirectory.make(prefix: "loupe-pki")
        }
        ca = try FleetCA.create(organization: organization)
        caPath = dir + "/ca.pem"
        try PEMFiles.write(try ca.certificatePEM, to: caPath, mode: 0o644, overwrite: true)
        try PEMFiles.write(ca.privateKeyPEM, to: dir + "/ca-key.pem", mode: 0o600, overwrite: true)
    }

    /// Issues a member certificate (by this CA, or `signer`) and returns its files, trusting this CA.
    public func member(
        _ role: FleetRole, _ name: String, hosts: [String] = [], notBefore: Date? = nil, notAfter: Date? = nil,
        signer: FleetCA? = nil
    ) throws -> TLSFiles {
        var request = LeafRequest(role: role, name: name, hosts: hosts)
        if let notBefore { request.notValidBefore = notBefore }
        if let notAfter { request.notValidAfter = notAfter }
        let issued = try (signer ?? ca).issue(request)
        var stem = "\(dir)/\(role.rawValue)-\(name)"
        var number = 1
        while FileManager.default.fileExists(atPath: stem + ".pem") {
            number += 1
            stem = "\(dir)/\(role.rawValue)-\(name)-\(number)"
        }
        try PEMFiles.write(issued.certificatePEM, to: stem + ".pem", mode: 0o644, overwrite: false)
        try PEMFiles.write(issued.privateKeyPEM, to: stem + "-key.pem", mode: 0o600, overwrite: false)
        return TLSFiles(ca: caPath, cert: stem + ".pem", key: stem + "-key.pem")
    }

    /// A manager certificate for this machine's loopback names.
    public func manager(hosts: [String] = ["localhost", "127.0.0.1"]) throws -> TLSFiles {
        try member(.manager, "manager", hosts: hosts)
    }

    public func serial(of files: TLSFiles) throws -> String {
        try PeerIdentity(certificate: .load(path: files.cert)).serial
    }
}

public enum TemporaryDirectory {
    public static func make(prefix: String) throws -> String {
        let path = NSTemporaryDirectory() + "\(prefix)-\(UUID().uuidString.prefix(12))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}
