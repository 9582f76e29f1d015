import Foundation
import LoupePKI
import LoupeWire

/// A fleet PKI made fresh for one test in a temporary folder: a CA, a
/// manager certificate for localhost/127.0.0.1, and whatever members the
/// test asks for, plus certificates from a second, unrelated CA.
final class TestPKI: @unchecked Sendable {
    let dir: String
    let ca: FleetCA
    let caPath: String

    init() throws {
        dir = try TemporaryDirectory.make(prefix: "loupe-pki")
        ca = try FleetCA.create(organization: "Test Plant")
        caPath = dir + "/ca.pem"
        try PEMFiles.write(try ca.certificatePEM, to: caPath, mode: 0o644, overwrite: false)
        try PEMFiles.write(ca.privateKeyPEM, to: dir + "/ca-key.pem", mode: 0o600, overwrite: false)
    }

    /// Issues a member certificate and returns the files for it, trusting this CA.
    func member(_ role: FleetRole, _ name: String, hosts: [String] = [], notBefore: Date? = nil, notAfter: Date? = nil, signer: FleetCA? = nil) throws -> TLSFiles {
        var request = LeafRequest(role: role, name: name, hosts: hosts)
        if let notBefore { request.notValidBefore = notBefore }
        if let notAfter { request.notValidAfter = notAfter }
        let issued = try (signer ?? ca).issue(request)
        let stem = "\(dir)/\(role.rawValue)-\(name)-\(UUID().uuidString.prefix(8))"
        try PEMFiles.write(issued.certificatePEM, to: stem + ".pem", mode: 0o644, overwrite: false)
        try PEMFiles.write(issued.privateKeyPEM, to: stem + "-key.pem", mode: 0o600, overwrite: false)
        return TLSFiles(ca: caPath, cert: stem + ".pem", key: stem + "-key.pem")
    }

    func manager(hosts: [String] = ["localhost", "127.0.0.1"]) throws -> TLSFiles {
        try member(.manager, "manager", hosts: hosts)
    }

    func serial(of files: TLSFiles) throws -> String {
        try PeerIdentity(certificate: .load(path: files.cert)).serial
    }
}

enum TemporaryDirectory {
    static func make(prefix: String) throws -> String {
        let path = NSTemporaryDirectory() + "\(prefix)-\(UUID().uuidString.prefix(12))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}

import Synchronization

/// A thread-safe counter tests share with server handlers.
final class Counter: Sendable {
    private let value = Mutex(0)
    func increment() { value.withLock { $0 += 1 } }
    var current: Int { value.withLock { $0 } }
}
