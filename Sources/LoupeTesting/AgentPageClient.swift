public import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A call to an agent's page API that did not succeed, in the agent's words.
public struct AgentPageError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// An agent's page API as a client calls it (the demo, the stroke benchmark): sign in, then JSON or image requests
/// with the session's bearer token; an answer outside 2xx throws, naming the call and the agent's words.
public struct AgentPageClient: Sendable {
    public let base: String
    public let token: String

    public init(base: String, token: String) {
        self.base = base
        self.token = token
    }

    public static func signIn(base: String, user: String, password: String) async throws -> AgentPageClient {
        let reply = try await call(
            base: base, "POST", "/api/v1/login", token: nil,
            body: try JSONSerialization.data(withJSONObject: ["user": user, "password": password]), type: "application/json")
        guard let token = (try JSONSerialization.jsonObject(with: reply) as? [String: Any])?["token"] as? String else {
            throw AgentPageError("sign-in at \(base) gave no token")
        }
        return AgentPageClient(base: base, token: token)
    }

    @discardableResult
    public func send(_ method: String, _ path: String, json: Any) async throws -> Data {
        try await Self.call(
            base: base, method, path, token: token, body: try JSONSerialization.data(withJSONObject: json), type: "application/json")
    }

    @discardableResult
    public func send(_ method: String, _ path: String, body: Data, type: String) async throws -> Data {
        try await Self.call(base: base, method, path, token: token, body: body, type: type)
    }

    public func importImage(_ png: Data, name: String) async throws -> Int {
        let reply = try await Self.call(
            base: base, "POST", "/api/v1/captures/import", token: token, body: png, type: "image/png", filename: name)
        guard let number = (try JSONSerialization.jsonObject(with: reply) as? [String: Any])?["number"] as? Int else {
            throw AgentPageError("import of \(name) gave no capture number")
        }
        return number
    }

    public static func call(
        base: String, _ method: String, _ path: String, token: String?, body: Data?, type: String, filename: String? = nil
    ) async throws -> Data {
        var request = URLRequest(url: URL(string: base + path)!)
        request.httpMethod = method
        request.httpBody = body
        request.setValue(type, forHTTPHeaderField: "Content-Type")
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let filename { request.setValue(filename, forHTTPHeaderField: "X-Loupe-Filename") }
        let (data, response) = try await URLSession.shared.data(for: request)
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard (200..<300).contains(status) else {
            throw AgentPageError("\(method) \(path) at \(base): \(status) \(String(decoding: data, as: UTF8.self))")
        }
        return data
    }
}
