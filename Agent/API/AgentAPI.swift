import Foundation
import HTTPTypes
public import Hummingbird
import LoupeStorage
import LoupeWire
import NIOCore
import ServiceLifecycle

/// What every group of the agent's routes shares (docs/agent-api.md): JSON
/// in and out with limits and errors that name the cause, the capture and
/// ROI a `captures/:number/rois/:roi/…` route names, event streams that end
/// with the session, and who the request is recorded as.
public enum AgentAPI {
    /// Who an action is recorded as: the user the access middleware names on the request.
    public static let signedInUser: @Sendable (Request) -> String = { $0.headers[.loupeUser] ?? "unknown" }

    /// `GET /api/v1/health`, open: the agent's HTTP side answers.
    public static func registerHealth(on routes: AgentRoutes) {
        routes.group("api/v1").get("health", .open) { _, _ in try json(["status": "ok"]) }
    }

    static let filenameHeader = HTTPField.Name("X-Loupe-Filename")!

    static var encoder: JSONEncoder { JSONEncoder.iso }

    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        let data = try encoder.encode(value)
        return Response(
            status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func bytes(_ data: Data, type: String) -> Response {
        Response(status: .ok, headers: [.contentType: type], body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func number(_ context: some RequestContext) throws -> Int {
        guard let text = context.parameters.get("number"), let number = Int(text), number > 0 else {
            throw HTTPError(
                .badRequest, message: "capture number must be a positive integer, not \"\(context.parameters.get("number") ?? "")\"")
        }
        return number
    }

    /// The capture number and ROI name of a `captures/:number/rois/:roi/…` route.
    static func target(_ context: some RequestContext) throws -> (number: Int, roi: String) {
        (try number(context), try roi(context))
    }

    static func roi(_ context: some RequestContext) throws -> String {
        let name = context.parameters.get("roi") ?? ""
        guard FleetName.isValid(name) else {
            throw HTTPError(.badRequest, message: FleetName.refusal("ROI name", name))
        }
        return name
    }

    static func body(_ request: Request, limit: Int) async throws -> Data {
        if let length = request.headers[.contentLength].flatMap(Int.init), length > limit {
            throw HTTPError(.contentTooLarge, message: "body of \(length) bytes is over the \(limit)-byte limit")
        }
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: limit)
        } catch {
            throw HTTPError(.contentTooLarge, message: "body is over the \(limit)-byte limit")
        }
        guard buffer.readableBytes > 0 else { throw HTTPError(.badRequest, message: "the request has no body") }
        return Data(buffer.readableBytesView)
    }

    static func decode<T: Decodable>(_ type: T.Type, _ request: Request, limit: Int) async throws -> T {
        let data = try await body(request, limit: limit)
        do {
            return try JSONDecoder.iso.decode(T.self, from: data)
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            throw HTTPError(
                .badRequest,
                message: "wrong type at \(context.codingPath.map(\.stringValue).joined(separator: ".")): \(context.debugDescription)")
        } catch let DecodingError.keyNotFound(key, _) {
            throw HTTPError(.badRequest, message: "missing field \"\(key.stringValue)\"")
        } catch {
            throw HTTPError(.badRequest, message: "the body is not the JSON this route takes: \(error)")
        }
    }

    /// A stream of JSON events (text/event-stream), for EventSource on the page.
    static func eventStream<Element: Encodable & Sendable>(_ events: AsyncStream<Element>, name: String) -> Response {
        Response(
            status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-store"],
            body: ResponseBody { writer in
                try await writer.write(ByteBuffer(string: ": loupe \(name) events\n\n"))
                for await event in events {
                    guard let data = try? AgentAPI.encoder.encode(event) else { continue }
                    try await writer.write(ByteBuffer(string: "event: \(name)\ndata: \(String(decoding: data, as: UTF8.self))\n\n"))
                }
                try await writer.finish(nil)
            })
    }

    /// The same values, ending when the agent shuts down (an open stream, the
    /// page's event source or the MJPEG view, must not hold up its shutdown)
    /// or when the request's session ends: signed out, its password changed,
    /// its user removed, or expired.
    static func untilEnded<Element: Sendable>(
        _ stream: AsyncStream<Element>, session context: AgentRequestContext,
        _ sessions: SessionEvents
    ) -> AsyncStream<Element> {
        let (out, continuation) = AsyncStream.makeStream(of: Element.self, bufferingPolicy: .bufferingNewest(4))
        let expiry = context.session?.expiresAt
        // Task {} inherits the request's task locals, among them the graceful-shutdown handler.
        let forward = Task {
            await cancelWhenGracefulShutdown {
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { for await value in stream { continuation.yield(value) } }
                    if let expiry {
                        group.addTask { try? await Task.sleep(for: .seconds(max(0, expiry.timeIntervalSinceNow))) }
                    }
                    await group.next()
                    group.cancelAll()
                }
            }
            continuation.finish()
        }
        let watch = context.sessionKey.map { key in sessions.watch(key: key, user: context.session?.user ?? "") { forward.cancel() } }
        continuation.onTermination = { _ in
            forward.cancel()
            if let watch { sessions.unwatch(watch) }
        }
        return out
    }
}
