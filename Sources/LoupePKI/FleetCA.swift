import Crypto
public import Foundation
import SwiftASN1
public import X509
import LoupeStorage

/// A certificate and its private key, as PEM text.
public struct IssuedCertificate: Sendable {
    public var certificatePEM: String
    public var privateKeyPEM: String
    public var certificate: Certificate
}

/// What to put into a leaf certificate.
public struct LeafRequest: Sendable {
    public var role: FleetRole
    /// Camera id, operator name, or manager name.
    public var name: String
    /// DNS names and IP addresses the manager is reached by (manager role only).
    public var hosts: [String]
    public var notValidBefore: Date
    public var notValidAfter: Date

    /// A request valid from a minute ago (for clock skew) for `days` days.
    public init(role: FleetRole, name: String, hosts: [String] = [], validForDays days: Int = 825, now: Date = Date()) {
        self.role = role
        self.name = name
        self.hosts = hosts
        self.notValidBefore = now.addingTimeInterval(-60)
        self.notValidAfter = now.addingTimeInterval(TimeInterval(days) * 86_400)
    }
}

/// The fleet's certificate authority: an ECDSA P-256 key and a self-signed
/// certificate. It issues certificates to the manager, the agents and
/// operators, with the holder's role in the subject's OU.
public struct FleetCA: Sendable {
    public let certificate: Certificate
    private let privateKey: P256.Signing.PrivateKey

    /// Creates a new CA named after the plant or organisation.
    public static func create(organization: String, validForDays days: Int = 3650, now: Date = Date()) throws -> FleetCA {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName {
            OrganizationName(organization)
            CommonName("Loupe Fleet CA")
        }
        let publicKey = Certificate.PublicKey(key.publicKey)
        let certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: publicKey,
            notValidBefore: now.addingTimeInterval(-60),
            notValidAfter: now.addingTimeInterval(TimeInterval(days) * 86_400),
            issuer: name,
            subject: name,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: publicKey)
            },
            issuerPrivateKey: Certificate.PrivateKey(key)
        )
        return FleetCA(certificate: certificate, privateKey: key)
    }

    /// Loads a CA from its certificate and key PEM files.
    public static func load(certificatePath: String, keyPath: String) throws -> FleetCA {
        let certificateText = try PEMFiles.read(certificatePath)
        let keyText = try PEMFiles.read(keyPath)
        let certificate: Certificate
        do { certificate = try Certificate(pemEncoded: certificateText) } catch {
            throw PKIError.notPEM(path: certificatePath, expected: "certificate")
        }
        let key: P256.Signing.PrivateKey
        do { key = try P256.Signing.PrivateKey(pemRepresentation: keyText) } catch {
            throw PKIError.notPEM(path: keyPath, expected: "ECDSA P-256 private key")
        }
        return FleetCA(certificate: certificate, privateKey: key)
    }

    public var certificatePEM: String {
        get throws { try certificate.serializeAsPEM().pemString + "\n" }
    }

    public var privateKeyPEM: String { privateKey.pemRepresentation + "\n" }

    /// Issues a leaf certificate with a fresh P-256 key.
    public func issue(_ request: LeafRequest) throws -> IssuedCertificate {
        try FleetName.validate(request.name)
        if request.role == .manager && request.hosts.isEmpty {
            throw PKIError.invalidName(request.name, reason: "a manager certificate needs at least one --host")
        }
        let key = P256.Signing.PrivateKey()
        let publicKey = Certificate.PublicKey(key.publicKey)
        let subject = try DistinguishedName {
            OrganizationName(organizationName)
            OrganizationalUnitName(request.role.rawValue)
            CommonName(request.name)
        }
        // Servers (the manager, and agents that serve their page over HTTPS) also authenticate as servers.
        let usages: [ExtendedKeyUsage.Usage] =
            request.role == .manager || (request.role == .agent && !request.hosts.isEmpty) ? [.serverAuth, .clientAuth] : [.clientAuth]
        let alternativeNames = try request.hosts.map(Self.generalName(forHost:))
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true))
            try ExtendedKeyUsage(usages)
            SubjectKeyIdentifier(hash: publicKey)
            AuthorityKeyIdentifier(keyIdentifier: SubjectKeyIdentifier(hash: certificate.publicKey).keyIdentifier)
            if !alternativeNames.isEmpty {
                SubjectAlternativeNames(alternativeNames)
            }
        }
        let leaf = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: publicKey,
            notValidBefore: request.notValidBefore,
            notValidAfter: request.notValidAfter,
            issuer: certificate.subject,
            subject: subject,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: extensions,
            issuerPrivateKey: Certificate.PrivateKey(privateKey)
        )
        return IssuedCertificate(
            certificatePEM: try leaf.serializeAsPEM().pemString + "\n",
            privateKeyPEM: key.pemRepresentation + "\n",
            certificate: leaf
        )
    }

    private var organizationName: String {
        for rdn in certificate.subject {
            for attribute in rdn where attribute.type == .RDNAttributeType.organizationName {
                return attribute.value.description
            }
        }
        return "Loupe"
    }

    private static func generalName(forHost host: String) throws -> GeneralName {
        if let v4 = IPv4Bytes(host) {
            return .ipAddress(ASN1OctetString(contentBytes: ArraySlice(v4)))
        }
        if host.contains(":") {
            var address = in6_addr()
            guard inet_pton(AF_INET6, host, &address) == 1 else {
                throw PKIError.invalidName(host, reason: "not a valid IPv6 address")
            }
            let bytes = withUnsafeBytes(of: &address) { Array($0) }
            return .ipAddress(ASN1OctetString(contentBytes: ArraySlice(bytes)))
        }
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-*")
        guard !host.isEmpty, host.count <= 253, host.allSatisfy(allowed.contains) else {
            throw PKIError.invalidName(host, reason: "not a valid DNS name or IP address")
        }
        return .dnsName(host)
    }

    private static func IPv4Bytes(_ host: String) -> [UInt8]? {
        var address = in_addr()
        guard inet_pton(AF_INET, host, &address) == 1 else { return nil }
        return withUnsafeBytes(of: &address) { Array($0) }
    }
}

extension PeerIdentity {
    /// Reads the role (subject OU) and name (subject CN) from a certificate.
    public init(certificate: Certificate) throws {
        var roleText: String?
        var name: String?
        for rdn in certificate.subject {
            for attribute in rdn {
                if attribute.type == .RDNAttributeType.organizationalUnitName { roleText = attribute.value.description }
                if attribute.type == .RDNAttributeType.commonName { name = attribute.value.description }
            }
        }
        let subject = certificate.subject.description
        guard let roleText else { throw PKIError.missingRole(subject: subject) }
        guard let role = FleetRole(rawValue: roleText) else { throw PKIError.unknownRole(roleText) }
        guard let name, !name.isEmpty else { throw PKIError.missingIdentity(subject: subject) }
        self.init(name: name, role: role, serial: certificate.serialNumber.hexString)
    }

    /// Reads the identity from a DER-encoded certificate.
    public init(derEncoded bytes: [UInt8]) throws {
        try self.init(certificate: Certificate(derEncoded: bytes))
    }
}

extension Certificate.SerialNumber {
    /// Lowercase hex without separators or leading zeros.
    public var hexString: String {
        let hex = bytes.hexString
        let trimmed = hex.drop(while: { $0 == "0" })
        return trimmed.isEmpty ? "0" : String(trimmed)
    }
}
