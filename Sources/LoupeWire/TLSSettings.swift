import LoupePKI
import NIOCore
public import NIOSSL
import NIOTLS

/// The certificate files of one fleet member: the fleet CA, its own
/// certificate and its private key.
public struct TLSFiles: Sendable, Codable, Equatable {
    /// PEM file of the fleet CA that signs every member's certificate.
    public var ca: String
    /// PEM file of this member's certificate.
    public var cert: String
    /// PEM file of this member's private key (mode 0600).
    public var key: String

    public init(ca: String, cert: String, key: String) {
        self.ca = ca
        self.cert = cert
        self.key = key
    }

    /// The same files with relative paths taken from a config file's folder.
    public func resolved(relativeTo configPath: String) -> TLSFiles {
        TLSFiles(
            ca: ConfigFile.resolve(ca, relativeTo: configPath),
            cert: ConfigFile.resolve(cert, relativeTo: configPath),
            key: ConfigFile.resolve(key, relativeTo: configPath)
        )
    }
}

/// Builds the TLS contexts Loupe uses: TLS 1.3 only, ALPN "loupe/1", and a
/// certificate on both sides, each chained to the fleet CA.
public enum TLSSettings {
    /// Server side: clients must present a certificate signed by the fleet CA.
    /// Host names are not checked on client certificates; their identity is
    /// read from the subject afterwards.
    public static func serverContext(_ files: TLSFiles) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try loadChain(files.cert).map { .certificate($0) },
            privateKey: .privateKey(try loadKey(files.key))
        )
        configuration.trustRoots = .certificates(try loadChain(files.ca, what: "CA certificate"))
        configuration.certificateVerification = .noHostnameVerification
        return try finish(&configuration)
    }

    /// Client side: verifies the server's certificate against the fleet CA
    /// and the host name (or IP address) it was dialled by.
    public static func clientContext(_ files: TLSFiles) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateChain = try loadChain(files.cert).map { .certificate($0) }
        configuration.privateKey = .privateKey(try loadKey(files.key))
        configuration.trustRoots = .certificates(try loadChain(files.ca, what: "CA certificate"))
        configuration.certificateVerification = .fullVerification
        return try finish(&configuration)
    }

    private static func finish(_ configuration: inout TLSConfiguration) throws -> NIOSSLContext {
        configuration.minimumTLSVersion = .tlsv13
        configuration.maximumTLSVersion = .tlsv13
        configuration.applicationProtocols = [WireProtocol.alpn]
        return try NIOSSLContext(configuration: configuration)
    }

    private static func loadChain(_ path: String, what: String = "certificate") throws -> [NIOSSLCertificate] {
        do {
            let chain = try NIOSSLCertificate.fromPEMFile(path)
            guard !chain.isEmpty else { throw PKIError.notPEM(path: path, expected: what) }
            return chain
        } catch let error as PKIError {
            throw error
        } catch {
            _ = try PEMFiles.read(path)  // names a missing file precisely
            throw PKIError.notPEM(path: path, expected: what)
        }
    }

    private static func loadKey(_ path: String) throws -> NIOSSLPrivateKey {
        do {
            return try NIOSSLPrivateKey(file: path, format: .pem)
        } catch {
            _ = try PEMFiles.read(path)
            throw PKIError.notPEM(path: path, expected: "private key")
        }
    }
}

/// Watches the TLS handshake complete: keeps the peer's certificate in the
/// connection's ledger (so who the peer is stays known even if the channel
/// closes at once), and fails the channel with `WireError.alpnMismatch`
/// unless ALPN settled on "loupe/1".
final class HandshakeObserver: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let ledger: ConnectionLedger

    init(ledger: ConnectionLedger) {
        self.ledger = ledger
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSUserEvent, case .handshakeCompleted(let negotiated) = event {
            if let certificate = try? context.pipeline.syncOperations.nioSSL_peerCertificate() {
                ledger.recordPeerCertificate(try? certificate.toDERBytes())
            }
            if negotiated != WireProtocol.alpn {
                // The connection layer answers with an Error frame and closes.
                context.fireErrorCaught(WireError.alpnMismatch(negotiated: negotiated))
                return
            }
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }
}
