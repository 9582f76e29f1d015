import ArgumentParser
import Foundation
import LoupePKI
import X509

/// `loupe tls …`: the fleet's certificate authority, without openssl.
struct TLSCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tls",
        abstract: "Create the fleet CA, issue certificates, revoke them.",
        subcommands: [CA.self, Cert.self, Revoke.self, Show.self]
    )

    struct CA: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Manage the fleet CA.", subcommands: [Create.self])

        struct Create: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Create the fleet CA (ECDSA P-256): DIR/ca.pem and DIR/ca-key.pem (mode 0600)."
            )
            @OptionGroup var pki: PKIDirectory
            @Option(help: "Organisation written into every certificate.") var org = "Loupe"
            @Option(help: "Validity in days.") var days = 3650
            @Flag(help: "Replace an existing CA. Every certificate it issued stops working.") var force = false

            func run() throws {
                let ca = try FleetCA.create(organization: org, validForDays: days)
                try PEMFiles.write(try ca.certificatePEM, to: pki.caCertificatePath, mode: 0o644, overwrite: force)
                try PEMFiles.write(ca.privateKeyPEM, to: pki.caKeyPath, mode: 0o600, overwrite: force)
                // The manager refuses to run on a missing list: start with an empty one.
                if !FileManager.default.fileExists(atPath: pki.revocationListPath) {
                    try RevocationList().save(path: pki.revocationListPath)
                }
                print("created fleet CA \(pki.caCertificatePath) (key \(pki.caKeyPath), mode 0600), valid \(days) days")
            }
        }
    }

    struct Cert: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Issue certificates.", subcommands: [Create.self])

        struct Create: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Issue a manager, agent, operator or training-worker certificate signed by the fleet CA.",
                discussion: """
                    Exactly one of --manager, --agent CAMERA_ID, --operator NAME or --worker NAME.
                    Writes OUT/NAME.pem and OUT/NAME-key.pem (mode 0600), where NAME is
                    manager, agent-CAMERA_ID, operator-NAME or worker-NAME.
                    """
            )
            @OptionGroup var pki: PKIDirectory
            @Flag(help: "A manager certificate; give every name and address it is reached by with --host.") var manager = false
            @Option(help: "A camera agent certificate for this camera id.") var agent: String?
            @Option(name: .customLong("operator"), help: "An operator certificate for this user name.") var operatorName: String?
            @Option(help: "A training worker certificate (loupe worker) for this machine name.") var worker: String?
            @Option(help: "Host name or IP address the manager, or an agent's HTTPS page, is reached by (repeatable).") var host: [String] =
                []
            @Option(help: "Manager name written into its certificate.") var name = "manager"
            @Option(help: "Folder for the new files (default: the PKI folder).") var out: String?
            @Option(help: "Validity in days.") var days = 825
            @Flag(help: "Replace existing files.") var force = false

            func validate() throws {
                let chosen = [manager, agent != nil, operatorName != nil, worker != nil].filter { $0 }.count
                guard chosen == 1 else {
                    throw ValidationError("give exactly one of --manager, --agent CAMERA_ID, --operator NAME, --worker NAME")
                }
                if manager && host.isEmpty { throw ValidationError("--manager needs at least one --host NAME") }
                if (operatorName != nil || worker != nil) && !host.isEmpty {
                    throw ValidationError("--host applies to --manager and --agent certificates only")
                }
            }

            func run() throws {
                let ca = try pki.loadCA()
                let request: LeafRequest
                let fileName: String
                if let agent {
                    request = LeafRequest(role: .agent, name: agent, hosts: host, validForDays: days)
                    fileName = "agent-\(agent)"
                } else if let operatorName {
                    request = LeafRequest(role: .operator, name: operatorName, validForDays: days)
                    fileName = "operator-\(operatorName)"
                } else if let worker {
                    request = LeafRequest(role: .worker, name: worker, validForDays: days)
                    fileName = "worker-\(worker)"
                } else {
                    request = LeafRequest(role: .manager, name: name, hosts: host, validForDays: days)
                    fileName = "manager"
                }
                let issued = try ca.issue(request)
                let folder = out ?? pki.dir
                let certificatePath = (folder as NSString).appendingPathComponent("\(fileName).pem")
                let keyPath = (folder as NSString).appendingPathComponent("\(fileName)-key.pem")
                try PEMFiles.write(issued.certificatePEM, to: certificatePath, mode: 0o644, overwrite: force)
                try PEMFiles.write(issued.privateKeyPEM, to: keyPath, mode: 0o600, overwrite: force)
                print(
                    "issued \(request.role.rawValue) certificate for \(request.name): \(certificatePath) (key \(keyPath), mode 0600), "
                        + "serial \(issued.certificate.serialNumber.hexString)"
                )
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a certificate to the fleet revocation list (DIR/revoked.json).",
            discussion:
                "The manager applies it to new connections after it reloads the list: on SIGHUP, or by itself within a second of the file "
                + "changing."
        )
        @OptionGroup var pki: PKIDirectory
        @Option(help: "The certificate file to revoke.") var cert: String?
        @Option(help: "Serial number (hex) to revoke, when the file is gone.") var serial: String?
        @Option(help: "Why, for the record.") var reason = "unspecified"
        @Option(help: "Revocation list path (default: DIR/revoked.json).") var list: String?

        func validate() throws {
            guard (cert == nil) != (serial == nil) else { throw ValidationError("give exactly one of --cert FILE or --serial HEX") }
        }

        func run() throws {
            let path = list ?? pki.revocationListPath
            var revocations = try RevocationList.load(path: path, missingIsEmpty: true)
            var entry = RevocationList.Entry(serial: serial ?? "", name: "", role: nil, revokedAt: Date(), reason: reason)
            if let cert {
                let certificate = try Certificate.load(path: cert)
                entry.serial = certificate.serialNumber.hexString
                if let identity = try? PeerIdentity(certificate: certificate) {
                    entry.name = identity.name
                    entry.role = identity.role
                }
            }
            if revocations.isRevoked(serial: entry.serial) {
                print("serial \(entry.serial) is already revoked in \(path)")
                return
            }
            revocations.entries.append(entry)
            try revocations.save(path: path)
            let who = entry.name.isEmpty ? "" : " (\(entry.role?.rawValue ?? "") \(entry.name))"
            print("revoked serial \(entry.serial)\(who) in \(path); the manager applies it within a second, or at once on SIGHUP")
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a certificate's role, name, serial and validity.")
        @Argument(help: "Certificate file (PEM).") var file: String

        func run() throws {
            let certificate = try Certificate.load(path: file)
            let identity = try? PeerIdentity(certificate: certificate)
            print("subject:   \(certificate.subject)")
            print("issuer:    \(certificate.issuer)")
            print("role:      \(identity?.role.rawValue ?? "none (not a Loupe member certificate)")")
            print("name:      \(identity?.name ?? "-")")
            print("serial:    \(certificate.serialNumber.hexString)")
            print("valid:     \(certificate.notValidBefore) to \(certificate.notValidAfter)")
            if let names = try? certificate.extensions.subjectAlternativeNames {
                print("hosts:     \(names.map { "\($0)" }.joined(separator: ", "))")
            }
        }
    }
}

/// Where the fleet CA lives: --dir or LOUPE_PKI_DIR, default ./loupe-pki.
struct PKIDirectory: ParsableArguments {
    @Option(help: "PKI folder holding ca.pem, ca-key.pem and revoked.json. Env: LOUPE_PKI_DIR.")
    var dir: String = ProcessEnvironment.value("LOUPE_PKI_DIR") ?? "loupe-pki"

    var caCertificatePath: String { (dir as NSString).appendingPathComponent("ca.pem") }
    var caKeyPath: String { (dir as NSString).appendingPathComponent("ca-key.pem") }
    var revocationListPath: String { (dir as NSString).appendingPathComponent("revoked.json") }

    func loadCA() throws -> FleetCA {
        try FleetCA.load(certificatePath: caCertificatePath, keyPath: caKeyPath)
    }
}
