public import LoupeProto

/// The wire protocol's envelope, re-exported under its protocol name.
public typealias Envelope = Loupe_V1_Envelope

/// Why a connection or a request failed. Each case names its cause and the
/// numbers involved so an operator can act on the message alone.
public enum WireError: Error, CustomStringConvertible, Equatable {
    /// A length prefix exceeded the receiver's limit; nothing was buffered.
    case frameTooLarge(length: Int, limit: Int)
    /// A frame's length prefix was zero.
    case emptyFrame
    /// The frame's bytes are not a valid Envelope.
    case malformedEnvelope(frameLength: Int, reason: String)
    /// A frame header announced `expected` bytes but only `received` arrived
    /// before the stream stalled or ended.
    case truncatedFrame(expected: Int, received: Int)
    /// Nothing arrived from the peer for this long.
    case idleTimeout(seconds: Double)
    /// TLS completed without the ALPN protocol "loupe/1".
    case alpnMismatch(negotiated: String?)
    /// The peer answered or closed with an Error message.
    case remote(code: Loupe_V1_Error.Code, message: String)
    /// This side refuses a request; the peer gets an Error with this code.
    case refused(code: Loupe_V1_Error.Code, message: String)
    /// The connection closed before the reply arrived.
    case connectionClosed
    /// No reply within the request's time limit.
    case requestTimedOut(seconds: Double)
    /// The reply was of a different kind than the request calls for.
    case unexpectedReply(expected: String, received: String)
    /// The TLS handshake or the peer's certificate was refused.
    case tlsFailure(String)
    /// The peer's certificate does not carry the role this side requires.
    case wrongPeerRole(expected: String, actual: String)
    /// An address given as HOST:PORT could not be parsed.
    case invalidAddress(String)
    /// The TCP connection could not be made.
    case unreachable(address: String, reason: String)
    /// The peer sent a reply whose reply_to names no request this side ever sent: a protocol violation.
    case unknownRequest(replyTo: UInt64)

    public var description: String {
        switch self {
        case .frameTooLarge(let length, let limit):
            return "frame of \(length) bytes exceeds the limit of \(limit) bytes"
        case .emptyFrame:
            return "frame with length 0; every frame must hold an Envelope"
        case .malformedEnvelope(let length, let reason):
            return "frame of \(length) bytes is not a valid Envelope: \(reason)"
        case .truncatedFrame(let expected, let received):
            return "truncated frame: header announced \(expected) bytes, only \(received) arrived"
        case .idleTimeout(let seconds):
            return "nothing received from the peer for \(seconds) s"
        case .alpnMismatch(let negotiated):
            return "peer did not negotiate ALPN \"\(WireProtocol.alpn)\" (got \(negotiated.map { "\"\($0)\"" } ?? "none"))"
        case .remote(let code, let message):
            return "peer refused: \(code) — \(message)"
        case .refused(let code, let message):
            return "refused: \(code) — \(message)"
        case .connectionClosed:
            return "connection closed before a reply arrived"
        case .requestTimedOut(let seconds):
            return "no reply within \(seconds) s"
        case .unexpectedReply(let expected, let received):
            return "expected \(expected) in reply, got \(received)"
        case .tlsFailure(let reason):
            return "TLS failed: \(reason)"
        case .wrongPeerRole(let expected, let actual):
            return "peer certificate has role \(actual), expected \(expected)"
        case .invalidAddress(let text):
            return "invalid address \"\(text)\": expected HOST:PORT"
        case .unreachable(let address, let reason):
            return "cannot connect to \(address): \(reason)"
        case .unknownRequest(let replyTo):
            return "reply_to \(replyTo) names no request sent on this connection"
        }
    }

    /// True for the failures found while encoding, before a byte reached the wire (the connection is still good).
    public var refusedBeforeSending: Bool {
        switch self {
        case .frameTooLarge, .emptyFrame: true
        default: false
        }
    }

    /// The protocol error code sent to the peer for this failure.
    public var code: Loupe_V1_Error.Code {
        switch self {
        case .frameTooLarge: return .frameTooLarge
        case .emptyFrame, .malformedEnvelope: return .malformedEnvelope
        case .truncatedFrame: return .truncatedFrame
        case .idleTimeout: return .idleTimeout
        case .alpnMismatch: return .protocolVersionMismatch
        case .remote(let code, _), .refused(let code, _): return code
        case .wrongPeerRole: return .permissionDenied
        case .unknownRequest: return .unknownRequest
        case .connectionClosed, .requestTimedOut, .unexpectedReply, .tlsFailure, .invalidAddress, .unreachable: return .internal
        }
    }
}

/// Constants of protocol version 1.
public enum WireProtocol {
    /// The version this build speaks.
    public static let version: UInt32 = 1
    /// The TLS ALPN protocol id.
    public static let alpn = "loupe/1"
    /// Default largest frame, 16 MiB.
    public static let defaultMaxFrameBytes = 16 << 20
    /// The smallest frame limit a peer may announce: room for a Welcome, an Error and every small request.
    public static let minimumMaxFrameBytes: UInt32 = 1024
    /// Software version reported in Hello and Welcome.
    public static let softwareVersion = "loupe 0.1.0"
}

extension Envelope {
    /// Name of the body's message type, for logs and errors.
    public var bodyName: String {
        guard let body else { return "empty envelope" }
        return body.name
    }

    /// A reply envelope to this request carrying `body`.
    public func reply(_ body: Envelope.OneOf_Body) -> Envelope {
        var envelope = Envelope()
        envelope.replyTo = requestID
        envelope.body = body
        return envelope
    }

    /// An Error body with a code and a message.
    public static func error(_ code: Loupe_V1_Error.Code, _ message: String) -> Envelope.OneOf_Body {
        var error = Loupe_V1_Error()
        error.code = code
        error.message = message
        return .error(error)
    }
}

extension Envelope.OneOf_Body {
    /// True for the messages that travel as events (request id 0, no reply): heartbeats, goodbye, an
    /// unsolicited Error, camera status and install reports, model offers and training progress. Every
    /// other message is a request or a reply.
    public var isEvent: Bool {
        switch self {
        case .heartbeat, .goodbye, .error, .agentStatus, .modelInstalled, .modelOffer, .trainingProgress: true
        default: false
        }
    }

    /// The protobuf field name of the message, e.g. "roi_upload".
    public var name: String {
        let caseName = String(describing: self).prefix { $0 != "(" }
        var snake = ""
        for character in caseName {
            if character.isUppercase {
                snake += "_" + character.lowercased()
            } else {
                snake.append(character)
            }
        }
        return snake
    }
}
