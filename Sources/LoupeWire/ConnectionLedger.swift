import LoupeProto
import NIOCore
import Synchronization

/// What both a connection's event loop and its tasks need to know: the
/// requests waiting for replies, when the peer was last heard from, and why
/// the connection failed. Shared by `WireConnection` and `ReplyRouter`.
final class ConnectionLedger: Sendable {
    /// When a request gives up, and after how long (for the error message).
    struct Deadline {
        var at: ContinuousClock.Instant
        var limit: Duration
    }

    private enum Slot {
        case registered(Deadline)
        case waiting(CheckedContinuation<Envelope, any Error>, Deadline)
        case answered(Result<Envelope, any Error>)
    }

    private struct State {
        var nextRequestID: UInt64 = 1
        var slots: [UInt64: Slot] = [:]
        var lastReceived = ContinuousClock.now
        var failure: WireError?
        var closed = false
        var peerCertificate: [UInt8]?
    }

    private let state = Mutex(State())
    /// The largest frame the peer accepts, which `EnvelopeFramer` holds every outbound frame to.
    let peerFrameLimit = PeerFrameLimit()

    /// Why the connection failed, if it has.
    var failure: WireError? { state.withLock { $0.failure } }

    /// A failure recorded (a frame error, a TLS alert) that nobody has acted on yet.
    var unhandledFailure: WireError? { state.withLock { $0.closed ? nil : $0.failure } }

    var lastReceived: ContinuousClock.Instant { state.withLock { $0.lastReceived } }

    /// The peer's certificate (DER), once the TLS handshake has completed.
    var peerCertificate: [UInt8]? { state.withLock { $0.peerCertificate } }

    func recordPeerCertificate(_ der: [UInt8]?) {
        state.withLock { $0.peerCertificate = der }
    }

    /// Keeps the first cause of failure.
    func record(_ error: WireError) {
        state.withLock { if $0.failure == nil { $0.failure = error } }
    }

    func touch() {
        state.withLock { $0.lastReceived = ContinuousClock.now }
    }

    /// Reserves an id for a request about to be sent, which waits at most `timeout`.
    func register(timeout: Duration) throws -> UInt64 {
        let deadline = Deadline(at: .now + timeout, limit: timeout)
        return try state.withLock { state in
            guard !state.closed else { throw state.failure ?? WireError.connectionClosed }
            let id = state.nextRequestID
            state.nextRequestID += 1
            state.slots[id] = .registered(deadline)
            return id
        }
    }

    func forget(_ id: UInt64) {
        _ = state.withLock { $0.slots.removeValue(forKey: id) }
    }

    /// Waits for the reply to a registered request (it may already be here).
    func reply(to id: UInt64) async throws -> Envelope {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Envelope, any Error>) in
            let early: Result<Envelope, any Error>? = state.withLock { state in
                switch state.slots[id] {
                case .registered(let deadline):
                    state.slots[id] = .waiting(continuation, deadline)
                    return nil
                case .answered(let result):
                    state.slots[id] = nil
                    return result
                case .waiting, .none:
                    return .failure(state.failure ?? WireError.connectionClosed)
                }
            }
            if let early { continuation.resume(with: early) }
        }
    }

    /// What became of a reply.
    enum Settlement: Equatable {
        /// It answered a request that was waiting.
        case settled
        /// Its request was sent but has already ended (timed out, cancelled, answered): dropped.
        case late
        /// No request with that id was ever sent on this connection.
        case neverRequested
    }

    /// Settles a request.
    @discardableResult
    func complete(_ id: UInt64, with result: Result<Envelope, any Error>) -> Settlement {
        let (continuation, settlement): (CheckedContinuation<Envelope, any Error>?, Settlement) = state.withLock { state in
            switch state.slots[id] {
            case .registered:
                state.slots[id] = .answered(result)
                return (nil, .settled)
            case .waiting(let continuation, _):
                state.slots[id] = nil
                return (continuation, .settled)
            case .answered, .none:
                return (nil, id < state.nextRequestID ? .late : .neverRequested)
            }
        }
        continuation?.resume(with: result)
        return settlement
    }

    /// Requests whose deadline has passed, with the time they were given.
    func expired(at now: ContinuousClock.Instant) -> [(id: UInt64, limit: Duration)] {
        state.withLock { state in
            state.slots.compactMap { id, slot in
                switch slot {
                case .registered(let deadline), .waiting(_, let deadline):
                    return deadline.at <= now ? (id, deadline.limit) : nil
                case .answered:
                    return nil
                }
            }
        }
    }

    /// Fails every outstanding request and refuses new ones.
    func close(failing error: WireError) {
        let slots = state.withLock { state -> [UInt64: Slot] in
            state.closed = true
            if state.failure == nil, error != .connectionClosed { state.failure = error }
            let slots = state.slots
            state.slots.removeAll()
            return slots
        }
        for case .waiting(let continuation, _) in slots.values {
            continuation.resume(throwing: error)
        }
    }
}

/// Sits at the end of the pipeline and settles outstanding requests on the
/// event loop: a reply completes its request directly, without a hop through
/// the connection's read loop, and the first error that reaches here (a TLS
/// alert, a frame error) is kept as the cause of failure. Requests and events
/// from the peer pass on to the read loop.
final class ReplyRouter: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = Envelope
    typealias InboundOut = Envelope

    let ledger: ConnectionLedger

    init(ledger: ConnectionLedger) {
        self.ledger = ledger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        ledger.touch()
        if envelope.replyTo != 0 {
            // A reply to a request never sent means the peer has lost track of the conversation: a protocol
            // violation, which closes the connection. A late reply (its request timed out) is dropped.
            if ledger.complete(envelope.replyTo, with: .success(envelope)) == .neverRequested {
                let violation = WireError.unknownRequest(replyTo: envelope.replyTo)
                ledger.record(violation)
                context.fireErrorCaught(violation)
            }
        } else {
            context.fireChannelRead(data)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        ledger.record(WireConnection.connectionFailure(error))
        context.fireErrorCaught(error)
    }
}
