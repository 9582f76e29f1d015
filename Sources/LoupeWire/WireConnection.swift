public import Foundation
import Logging
public import LoupePKI
public import LoupeProto
import NIOCore
import NIOSSL
import Synchronization

/// Timers and limits of one connection.
public struct ConnectionSettings: Sendable, Equatable {
    /// Largest frame accepted from the peer, in bytes.
    public var maxFrameBytes: Int
    /// Send a heartbeat after this long without sending anything.
    public var heartbeatInterval: Duration
    /// Close the connection after this long without receiving anything.
    public var idleTimeout: Duration
    /// A frame whose body stops arriving for this long is truncated.
    public var frameStallTimeout: Duration
    /// Default time a request waits for its reply.
    public var requestTimeout: Duration
    /// Requests from the peer handled at once; past this the connection stops
    /// reading until one finishes, so a peer cannot pile up work without bound.
    public var maxConcurrentRequests: Int

    public init(
        maxFrameBytes: Int = WireProtocol.defaultMaxFrameBytes,
        heartbeatInterval: Duration = .seconds(5),
        idleTimeout: Duration = .seconds(15),
        frameStallTimeout: Duration = .seconds(15),
        requestTimeout: Duration = .seconds(60),
        maxConcurrentRequests: Int = 1024
    ) {
        self.maxConcurrentRequests = maxConcurrentRequests
        self.maxFrameBytes = maxFrameBytes
        self.heartbeatInterval = heartbeatInterval
        self.idleTimeout = idleTimeout
        self.frameStallTimeout = frameStallTimeout
        self.requestTimeout = requestTimeout
    }

    /// The settings a config file's `heartbeatSeconds` and `idleTimeoutSeconds` (nil: 5 s and 15 s) give,
    /// for the agent and the manager alike. A started frame must keep flowing: it is reported truncated
    /// at three quarters of the idle timeout, before the idle timeout would close the connection for
    /// silence.
    public init(heartbeatSeconds: Double?, idleTimeoutSeconds: Double?, maxFrameBytes: Int? = nil) {
        let idle = Duration.seconds(fraction: idleTimeoutSeconds ?? 15)
        self.init(
            maxFrameBytes: maxFrameBytes ?? WireProtocol.defaultMaxFrameBytes, heartbeatInterval: .seconds(fraction: heartbeatSeconds ?? 5),
            idleTimeout: idle, frameStallTimeout: idle * 0.75)
    }
}

/// Model downloads move in chunks (`ModelChunkRequest`): the one place their sizes are set.
public enum ModelChunks {
    /// What the manager suggests in each offer, and what an agent asks for when an offer suggests nothing.
    public static let suggestedBytes: UInt32 = 256 << 10
    /// The largest chunk an agent asks for and the manager serves.
    public static let maximumBytes: UInt32 = 4 << 20
    /// The largest model file that travels at all: what an agent installs, and what a worker may send back.
    public static let maximumFileBytes: UInt64 = 256 << 20
}

/// Answers the requests and events a peer sends. Return a body to reply to a
/// request; throw `WireError.refused` to reply with an Error. For events
/// (request id 0) the return value is ignored.
public typealias RequestHandler = @Sendable (WireConnection, Envelope) async throws -> Envelope.OneOf_Body?

/// Checks a client's Hello on the server side and returns the Welcome, or
/// throws `WireError.refused` to answer with an Error and close.
public typealias HandshakeHandler = @Sendable (WireConnection, Loupe_V1_Hello) async throws -> Loupe_V1_Welcome

/// One live connection to a peer: many requests in flight matched to replies
/// by id, heartbeats, an idle timeout, and a graceful close.
///
/// Backpressure: each write returns only once the kernel has taken its
/// bytes, so a slow reader makes writers wait instead of memory growing
/// without bound; and at most `maxConcurrentRequests` of the peer's requests
/// are handled at once.
public final class WireConnection: Sendable {
    private struct State {
        var lastSent = ContinuousClock.now
        var heartbeatSequence: UInt64 = 0
        var heartbeatInFlight = false
        /// When the upkeep last ran, to tell a stalled process from an idle peer.
        var lastTick = ContinuousClock.now
        /// The heartbeat interval in force: the settings', or shorter when the peer's idle timeout asks for it.
        var heartbeatInterval: Duration?
        var closed = false
        var welcomed = false
        var peer: PeerIdentity?
        var activeHandlers = 0
        var handlerSlotWaiter: CheckedContinuation<Void, Never>?
    }

    public let settings: ConnectionSettings
    /// The peer's address as "host:port".
    public let remoteAddress: String
    private let channel: any Channel
    private let ledger: ConnectionLedger
    private let state = Mutex(State())
    private let clock = ContinuousClock()
    /// Where a server's connection says what it refused and why it closed (nil: a client's, which says it by throwing).
    private let logger: Logger?

    /// Wraps a channel built by `WireChannel.finish`.
    static func make(
        channel: any Channel, settings: ConnectionSettings, ledger known: ConnectionLedger? = nil, logger: Logger? = nil
    ) async -> WireConnection {
        var ledger = known
        if ledger == nil {
            ledger = try? await channel.pipeline.handler(type: ReplyRouter.self).get().ledger
        }
        return WireConnection(channel: channel, settings: settings, ledger: ledger ?? ConnectionLedger(), logger: logger)
    }

    private init(channel: any Channel, settings: ConnectionSettings, ledger: ConnectionLedger, logger: Logger?) {
        self.channel = channel
        self.ledger = ledger
        self.settings = settings
        self.logger = logger
        self.remoteAddress = channel.remoteAddress.map(Self.format) ?? "unknown"
    }

    /// Who the peer is, from its certificate; known once the TLS handshake is done.
    public var peer: PeerIdentity? {
        state.withLock { $0.peer }
    }

    func setPeer(_ identity: PeerIdentity) {
        state.withLock { $0.peer = identity }
    }

    /// Who the peer's certificate says it is, read when TLS completed.
    func certifiedPeer() throws -> PeerIdentity {
        guard let der = ledger.peerCertificate else {
            throw WireError.tlsFailure("peer presented no certificate")
        }
        return try PeerIdentity(derEncoded: der)
    }

    /// When the last frame (of any kind, heartbeats too) came from the peer.
    public var lastHeard: ContinuousClock.Instant {
        ledger.lastReceived
    }

    /// The largest frame the peer said it accepts; nothing larger is sent to it.
    public var peerMaxFrameBytes: Int { ledger.peerFrameLimit.bytes }

    /// Holds every frame sent from now on to the limit the peer announced (0: the protocol's default).
    func adoptPeerFrameLimit(_ announced: UInt32, field: String) throws(WireError) {
        try ledger.peerFrameLimit.adopt(announced: announced, field: field)
    }

    /// True once the server side has answered the Hello with a Welcome.
    public var wasWelcomed: Bool {
        state.withLock { $0.welcomed }
    }

    /// Returns once the underlying channel has closed.
    public func waitUntilClosed() async {
        try? await channel.closeFuture.get()
    }

    /// True once the connection has closed or started closing.
    public var isClosed: Bool {
        state.withLock { $0.closed }
    }

    /// Why the connection went down, as far as is known.
    public var closeCause: WireError {
        ledger.failure ?? .connectionClosed
    }

    // MARK: Sending

    /// Sends a request and waits for its reply. An Error reply throws
    /// `WireError.remote`.
    public func request(_ body: Envelope.OneOf_Body, timeout: Duration? = nil) async throws -> Envelope {
        let id = try ledger.register(timeout: timeout ?? settings.requestTimeout)
        var envelope = Envelope()
        envelope.requestID = id
        envelope.body = body
        do {
            try await write(envelope)
        } catch let error as WireError where error.refusedBeforeSending {
            // Never on the wire (over the peer's frame limit, say): the connection is fine.
            ledger.forget(id)
            throw error
        } catch {
            ledger.forget(id)
            // The cause (a TLS alert, say) is known once the channel has closed.
            await waitUntilClosed()
            throw closeCause
        }
        let reply = try await withTaskCancellationHandler {
            try await ledger.reply(to: id)
        } onCancel: {
            ledger.complete(id, with: .failure(CancellationError()))
        }
        if case .error(let error) = reply.body {
            throw WireError.remote(code: error.code, message: error.message)
        }
        return reply
    }

    /// Sends an envelope that expects no reply (an event, or a reply made by hand).
    public func send(_ envelope: Envelope) async throws {
        try await write(envelope)
    }

    /// Sends an event: a body with request id 0.
    public func send(event body: Envelope.OneOf_Body) async throws {
        var envelope = Envelope()
        envelope.body = body
        try await write(envelope)
    }

    /// Waits until the kernel has taken the frame (`EnvelopeFramer` encodes it
    /// on the event loop), which bounds what one writer can queue to one message.
    private func write(_ envelope: Envelope) async throws {
        guard !isClosed else { throw closeCause }
        do {
            try await channel.writeAndFlush(envelope)
        } catch let error as WireError {
            throw error
        } catch {
            throw closeCause
        }
        state.withLock { $0.lastSent = clock.now }
    }

    // MARK: Closing

    /// Says Goodbye and closes once the goodbye is written.
    public func close(reason: String) async {
        var goodbye = Loupe_V1_Goodbye()
        goodbye.reason = reason
        var envelope = Envelope()
        envelope.body = .goodbye(goodbye)
        try? await write(envelope)
        shutDown()
    }

    /// Sends an Error naming `error` and closes the connection. Used for
    /// protocol violations, which leave the stream in an unknown state.
    public func closeWithError(_ error: any Error, replyTo requestID: UInt64 = 0) {
        let (code, message) = Self.describe(error)
        logger?.warning("closing connection", metadata: metadata(["code": "\(code)", "why": "\(message)"]))
        var envelope = Envelope()
        envelope.replyTo = requestID
        envelope.body = Envelope.error(code, message)
        let channel = self.channel
        markClosed()
        // Half-close (TLS close_notify, then FIN) and keep reading until the
        // peer closes: closing outright while the peer's heartbeats sit unread
        // would send a reset, and a reset can discard the Error frame before
        // the peer reads it.
        channel.writeAndFlush(envelope).whenComplete { _ in
            channel.close(mode: .output).whenFailure { _ in channel.close(promise: nil) }
        }
        // A peer that does not read or close must not keep the connection open.
        channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
        // Requests still waiting fail with the cause (a heartbeat timeout, a
        // protocol violation), so whoever made them can log why.
        ledger.close(failing: (error as? WireError) ?? .connectionClosed)
    }

    /// Ends the connection for `failure`: a TLS failure closes it (there is no channel left to send on), anything
    /// else is named to the peer first.
    private func end(for failure: WireError) {
        ledger.close(failing: failure)
        guard !isClosed else { return }
        if case .tlsFailure = failure { shutDown() } else { closeWithError(failure) }
    }

    private func shutDown() {
        markClosed()
        ledger.close(failing: closeCause)
        channel.close(promise: nil)
    }

    private func markClosed() {
        state.withLock { $0.closed = true }
    }

    // MARK: Running

    /// Reads from the peer until the connection ends: answers requests through `handler` concurrently, sends
    /// heartbeats and enforces the idle timeout. If `handshake` is given, the
    /// first frame must be a Hello request, answered by it; `welcomed` runs once the Welcome is sent.
    func run(
        inbound: NIOAsyncChannelInboundStream<Envelope>,
        handshake: HandshakeHandler?,
        handler: @escaping RequestHandler,
        welcomed: @escaping @Sendable (WireConnection) -> Void = { _ in }
    ) async {
        let upkeep = startUpkeep()
        defer { upkeep.cancel() }
        await withDiscardingTaskGroup { group in
            var awaitingHello = handshake != nil
            var saidGoodbye = false
            do {
                // Replies never get here: ReplyRouter settles them on the event loop.
                for try await envelope in inbound {
                    if awaitingHello, let handshake {
                        guard case .hello(let hello) = envelope.body, envelope.requestID != 0 else {
                            throw WireError.refused(
                                code: .handshakeRequired, message: "first message must be a Hello request, got \(envelope.bodyName)")
                        }
                        do {
                            try adoptPeerFrameLimit(hello.maxFrameBytes, field: "Hello.max_frame_bytes")
                            let welcome = try await handshake(self, hello)
                            try await send(envelope.reply(.welcome(welcome)))
                            state.withLock { $0.welcomed = true }
                            awaitingHello = false
                            welcomed(self)
                        } catch {
                            closeWithError(error, replyTo: envelope.requestID)
                            break
                        }
                        continue
                    }
                    switch envelope.body {
                    case .heartbeat:
                        continue
                    case .goodbye:
                        // Requests that came before it (in the same TLS record, even) are answered before the close.
                        saidGoodbye = true
                    case .error(let error):
                        // An unsolicited Error precedes the peer closing the connection.
                        ledger.close(failing: WireError.remote(code: error.code, message: error.message))
                    case .hello:
                        try await answer(
                            envelope,
                            with: .failure(
                                WireError.refused(code: .invalidArgument, message: "Hello was already exchanged on this connection")))
                        continue
                    case .none:
                        try await answer(
                            envelope,
                            with: .failure(
                                WireError.refused(code: .unknownMessage, message: "envelope has no body (or one this peer does not know)")))
                        continue
                    default:
                        if envelope.requestID == 0, let body = envelope.body, !body.isEvent {
                            // Nobody would hear its answer, so it is not acted on (a push or an upload nobody acknowledges).
                            logger?.warning("request without a request_id dropped", metadata: metadata(["message": "\(body.name)"]))
                            continue
                        }
                        await acquireHandlerSlot()
                        group.addTask {
                            defer { self.releaseHandlerSlot() }
                            do {
                                let body = try await handler(self, envelope)
                                try await self.answer(envelope, with: .success(body))
                            } catch WireError.frameTooLarge(let length, let limit) {
                                try? await self.answer(
                                    envelope,
                                    with: .failure(
                                        WireError.refused(
                                            code: .frameTooLarge,
                                            message:
                                                "the reply to \(envelope.bodyName) would be a \(length)-byte frame, over the "
                                                + "\(limit)-byte limit this peer announced (max_frame_bytes)"
                                        )))
                            } catch {
                                if envelope.requestID == 0 {
                                    self.logger?.warning(
                                        "event not taken", metadata: self.metadata(["message": "\(envelope.bodyName)", "why": "\(error)"]))
                                }
                                try? await self.answer(envelope, with: .failure(error))
                            }
                        }
                        continue
                    }
                    break
                }
            } catch {
                end(for: Self.connectionFailure(error))
            }
            if saidGoodbye { await drainHandlers(within: settings.idleTimeout) }
            shutDown()
            group.cancelAll()
        }
    }

    /// Waits (a bounded time) for the peer's requests still being handled, so their replies go out before the close.
    private func drainHandlers(within limit: Duration) async {
        let deadline = clock.now + limit
        while state.withLock({ $0.activeHandlers > 0 }), clock.now < deadline {
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    /// Log metadata naming this connection's peer, plus `extra`.
    private func metadata(_ extra: Logger.Metadata) -> Logger.Metadata {
        var metadata = extra
        metadata["peer"] = "\(peer.map(String.init(describing:)) ?? "unidentified")"
        metadata["address"] = "\(remoteAddress)"
        return metadata
    }

    private func acquireHandlerSlot() async {
        let free = state.withLock { state -> Bool in
            guard state.activeHandlers < settings.maxConcurrentRequests else { return false }
            state.activeHandlers += 1
            return true
        }
        if free { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { state -> Bool in
                if state.activeHandlers < settings.maxConcurrentRequests {
                    state.activeHandlers += 1
                    return true
                }
                state.handlerSlotWaiter = continuation
                return false
            }
            if ready { continuation.resume() }
        }
    }

    private func releaseHandlerSlot() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if let waiter = state.handlerSlotWaiter {
                // Hand the slot straight to the waiting reader.
                state.handlerSlotWaiter = nil
                return waiter
            }
            state.activeHandlers -= 1
            return nil
        }
        waiter?.resume()
    }

    /// Replies to a request (nothing for events) with a body or an Error.
    private func answer(_ request: Envelope, with result: Result<Envelope.OneOf_Body?, any Error>) async throws {
        guard request.requestID != 0 else { return }
        switch result {
        case .success(let body?):
            try await send(request.reply(body))
        case .success(nil) where request.body?.isEvent == true:
            // Taken (its role may send it), but an event has no answer to give.
            try await send(
                request.reply(
                    Envelope.error(
                        .invalidArgument,
                        "\(request.bodyName) is an event: it was taken, and events get no reply; send it with request_id 0")))
        case .success(nil):
            try await send(request.reply(Envelope.error(.internal, "\(request.bodyName) produced no reply")))
        case .failure(let error):
            let (code, message) = Self.describe(error)
            logger?.warning(
                "request refused", metadata: metadata(["request": "\(request.bodyName)", "code": "\(code)", "why": "\(message)"]))
            try await send(request.reply(Envelope.error(code, message)))
        }
    }

    /// Sends heartbeats often enough for the peer: at most its own interval
    /// and a third of its idle timeout (from its Welcome), so a client with
    /// slower defaults is not closed as idle.
    public func adoptPeerTimers(heartbeatInterval: Duration, idleTimeout: Duration) {
        var interval = settings.heartbeatInterval
        if heartbeatInterval > .zero { interval = min(interval, heartbeatInterval) }
        if idleTimeout > .zero { interval = min(interval, idleTimeout / 3) }
        let chosen = max(.milliseconds(20), interval)
        state.withLock { $0.heartbeatInterval = chosen }
    }

    /// Heartbeats, the idle timeout, and request deadlines, checked on the
    /// channel's event loop. Not on the Swift task pool: a process whose
    /// tasks are all busy (inference, training, a long synchronous step) must
    /// still send its heartbeats, or its healthy peer closes it as idle.
    private func startUpkeep() -> RepeatedTask {
        let tick = max(.milliseconds(20), min(settings.heartbeatInterval, settings.idleTimeout, .seconds(1)) / 4)
        let amount = TimeAmount(tick)
        state.withLock { $0.lastTick = clock.now }
        return channel.eventLoop.scheduleRepeatedTask(initialDelay: amount, delay: amount) { task in
            if self.isClosed {
                task.cancel()
                return
            }
            let now = self.clock.now
            // A tick that comes far too late means this process was stalled
            // (CPU starvation, a suspended VM): the peer's bytes may be
            // sitting unread, so it is not judged idle on this tick; a
            // heartbeat still goes out, and the next tick judges.
            let previous = self.state.withLock { state in
                defer { state.lastTick = now }
                return state.lastTick
            }
            // A frame error or TLS alert is answered from here too: the read loop that would
            // answer it runs on the task pool, and a busy pool must not let the idle timeout
            // (or nothing) speak first.
            if let failure = self.ledger.unhandledFailure {
                task.cancel()
                self.end(for: failure)
                return
            }
            let stalledHere = now - previous > max(tick * 4, .milliseconds(500))
            let idle = !stalledHere && now - self.ledger.lastReceived >= self.settings.idleTimeout
            for (id, limit) in self.ledger.expired(at: now) {
                self.ledger.complete(id, with: .failure(WireError.requestTimedOut(seconds: limit.seconds)))
            }
            if idle {
                task.cancel()
                self.closeWithError(WireError.idleTimeout(seconds: self.settings.idleTimeout.seconds))
                return
            }
            self.sendHeartbeatIfDue(at: now)
        }
    }

    /// Sends a heartbeat when nothing has gone out for the interval in force
    /// and the last heartbeat has left (a peer that stops reading does not
    /// get a pile of them queued).
    private func sendHeartbeatIfDue(at now: ContinuousClock.Instant) {
        let sequence: UInt64? = state.withLock { state in
            let interval = state.heartbeatInterval ?? settings.heartbeatInterval
            guard !state.heartbeatInFlight, now - state.lastSent >= interval else { return nil }
            state.heartbeatSequence += 1
            state.heartbeatInFlight = true
            return state.heartbeatSequence
        }
        guard let sequence else { return }
        var heartbeat = Loupe_V1_Heartbeat()
        heartbeat.sequence = sequence
        heartbeat.sentAtUnixMs = Date.unixMilliseconds
        var envelope = Envelope()
        envelope.body = .heartbeat(heartbeat)
        channel.writeAndFlush(envelope).whenComplete { result in
            self.state.withLock { state in
                state.heartbeatInFlight = false
                if case .success = result { state.lastSent = self.clock.now }
            }
        }
    }

    /// What an error that ended the read loop means for this connection.
    static func connectionFailure(_ error: any Error) -> WireError {
        if let error = error as? WireError { return error }
        if let error = error as? NIOSSLError { return .tlsFailure("\(error)") }
        if let error = error as? BoringSSLError { return .tlsFailure("\(error)") }
        if let error = error as? NIOSSLExtraError { return .tlsFailure("\(error)") }
        return .connectionClosed
    }

    static func describe(_ error: any Error) -> (Loupe_V1_Error.Code, String) {
        if let error = error as? WireError {
            if case .refused(let code, let message) = error { return (code, message) }
            return (error.code, error.description)
        }
        if let error = error as? NIOSSLError {
            return (.permissionDenied, "TLS: \(error)")
        }
        return (.internal, "\(error)")
    }

    private static func format(_ address: SocketAddress) -> String {
        let host = address.ipAddress ?? "?"
        let port = address.port.map(String.init) ?? "?"
        return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}

extension Duration {
    /// The duration in seconds as a Double.
    public var seconds: Double {
        let (whole, attoseconds) = components
        return Double(whole) + Double(attoseconds) / 1e18
    }

    /// The duration in milliseconds as a Double.
    public var milliseconds: Double { seconds * 1000 }
}

extension Date {
    /// Now, in milliseconds since the Unix epoch: the protocol's timestamps.
    public static var unixMilliseconds: UInt64 { UInt64(max(0, Date().timeIntervalSince1970 * 1000)) }
}
