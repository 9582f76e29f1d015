import ArgumentParser
import Foundation
import LoupeAgent
import LoupeProto
import LoupeSegmentation
import LoupeWire
import SwiftProtobuf
import Synchronization
import LoupeStorage

/// A fleet command that failed, with what to do about it.
struct FleetCommandError: Error, CustomStringConvertible {
    let message: String
    let hint: String?

    var description: String { hint.map { "\(message)\n  → \($0)" } ?? message }

    /// Names the cause of a failed manager request and the usual remedy.
    static func explain(_ error: any Error, address: String) -> any Error {
        guard let wire = error as? WireError else { return error }
        switch wire {
        case .unreachable(_, let reason):
            return FleetCommandError(
                message: "cannot reach the manager at \(address): \(reason)",
                hint: "check that `loupe manager` runs there and that --addr / LOUPE_ADDR names its listen address")
        case .tlsFailure(let reason):
            return FleetCommandError(
                message: "TLS with the manager at \(address) failed: \(reason)",
                hint:
                    "use an operator certificate and key from this fleet's CA (`loupe tls cert create --operator NAME`) and the CA "
                    + "certificate as --cacert / LOUPE_CACERT"
            )
        case .wrongPeerRole(let expected, let actual):
            return FleetCommandError(
                message: "the server at \(address) presents a \(actual) certificate, not a \(expected) one",
                hint: "point --addr / LOUPE_ADDR at the manager")
        case .remote(let code, let message):
            let hint: String? =
                switch code {
                case .permissionDenied: "fleet commands need an operator certificate (`loupe tls cert create --operator NAME`)"
                case .certificateRevoked: "issue a new operator certificate"
                case .notFound: "`loupe model list`, `loupe train status` and `loupe camera list` show what exists"
                case .unavailable: "the manager is starting or short of disk; retry in a moment and check its log"
                case .unimplemented: "the manager runs an older Loupe; upgrade it"
                default: nil
                }
            return FleetCommandError(message: "the manager refused: \(message)", hint: hint)
        case .connectionClosed, .idleTimeout:
            return FleetCommandError(
                message: "the manager at \(address) closed the connection", hint: "it may be restarting; retry, and check its log")
        case .requestTimedOut(let seconds):
            return FleetCommandError(
                message: "the manager at \(address) did not answer within \(Int(seconds)) s",
                hint: "it may be overloaded; retry, and check its log")
        default:
            return error
        }
    }
}

extension ManagerConnectionOptions {
    /// Connects as an operator, runs `body`, and explains failures. With several addresses, a manager that cannot
    /// be reached is passed over for the next (before anything was sent, so nothing runs twice).
    func withManager<T: Sendable>(
        handler: @escaping RequestHandler = WireClient.refuseAll,
        _ body: @Sendable (WireConnection) async throws -> T
    ) async throws -> T {
        let clients = try clientConfigurations()
        for (index, client) in clients.enumerated() {
            do {
                return try await WireClient.withConnection(client, handler: handler) { connection, _ in try await body(connection) }
            } catch WireError.unreachable(let address, let reason) where index < clients.count - 1 {
                let next = clients[index + 1]
                FileHandle.standardError.write(
                    Data("cannot reach the manager at \(address) (\(reason)); trying \(next.host):\(next.port)\n".utf8))
            } catch {
                throw FleetCommandError.explain(error, address: "\(client.host):\(client.port)")
            }
        }
        throw ValidationError("--addr / LOUPE_ADDR names no manager")
    }

    /// One request and its reply body.
    func ask(_ body: Envelope.OneOf_Body) async throws -> Envelope.OneOf_Body? {
        try await withManager { connection in try await connection.request(body).body }
    }
}

/// A reply of an unexpected kind.
func unexpected(_ body: Envelope.OneOf_Body?, expected: String) -> any Error {
    WireError.unexpectedReply(expected: expected, received: body?.name ?? "empty envelope")
}

/// Protobuf messages as JSON for --json output (64-bit numbers as numbers).
func jsonText(_ message: some SwiftProtobuf.Message) throws -> String {
    var options = JSONEncodingOptions()
    options.alwaysPrintInt64sAsNumbers = true
    options.preserveProtoFieldNames = true
    return try message.jsonString(options: options)
}

extension UInt64 {
    /// Unix milliseconds as a local date and time.
    var unixDateText: String {
        guard self > 0 else { return "-" }
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return formatter.string(from: Date(timeIntervalSince1970: Double(self) / 1000))
    }
}

extension Data {
    var shortHex: String { prefix(8).hexString }
}

/// Follows a training job's progress events to its end with a progress bar.
final class TrainingFollower: @unchecked Sendable {
    let bar = ProgressBar()
    let began = ContinuousClock.now
    let outcome = LateBound<Loupe_V1_TrainingProgress>()
    private let watched = Mutex<String?>(nil)
    let printLines: Bool

    init(printLines: Bool = false) { self.printLines = printLines }

    func watch(_ jobId: String) {
        watched.withLock { $0 = jobId }
    }

    var handler: RequestHandler {
        { [self] _, envelope in
            guard case .trainingProgress(let update) = envelope.body else { return nil }
            let watched = self.watched.withLock { $0 }
            guard watched == nil || watched == update.jobID else { return nil }
            show(update)
            return nil
        }
    }

    func show(_ update: Loupe_V1_TrainingProgress) {
        if printLines {
            print(TrainingFollower.line(update))
        } else if update.state == .running {
            let elapsed = (ContinuousClock.now - began).seconds
            let fraction =
                update.passesTotal > 0
                ? Double(update.pass) / Double(update.passesTotal)
                : elapsed / max(1, elapsed + Double(update.etaSeconds))
            bar.update(
                fraction: min(1, fraction),
                String(
                    format: "training %@: pass %d, loss %.3f, %.0f img/s, val mIoU %.3f, ETA %@",
                    update.jobID, update.pass, update.loss, update.imagesPerSecond, update.validationMiou,
                    formatDuration(Double(update.etaSeconds))))
        }
        if [.succeeded, .failed, .cancelled].contains(update.state) { outcome.set(update) }
    }

    /// Waits for the end of the job on this connection.
    func wait(on connection: WireConnection) async throws -> Loupe_V1_TrainingProgress {
        while outcome.value == nil {
            try await Task.sleep(for: .milliseconds(200))
            if connection.isClosed, outcome.value == nil {
                throw FleetCommandError(
                    message: "the manager closed the connection during training", hint: "`loupe train status` shows whether the job went on"
                )
            }
        }
        bar.finish()
        return outcome.value!
    }

    static func line(_ p: Loupe_V1_TrainingProgress) -> String {
        var text = "\(p.jobID) \(TrainingFollower.stateName(p.state))"
        if p.state == .running || p.pass > 0 {
            text += String(
                format: " pass %d%@ loss %.4f %.1f img/s val mIoU %.3f ETA %@", p.pass, p.passesTotal > 0 ? "/\(p.passesTotal)" : "",
                p.loss, p.imagesPerSecond, p.validationMiou, formatDuration(Double(p.etaSeconds)))
        }
        if !p.modelVersion.isEmpty { text += " model \(p.modelVersion)" }
        if p.hasParts { text += "; validation parts: \(PartFigures(p.parts).summary)" }
        if !p.message.isEmpty { text += " — \(p.message)" }
        return text
    }

    static func stateName(_ state: Loupe_V1_TrainingProgress.State) -> String {
        switch state {
        case .queued: "queued"
        case .running: "running"
        case .succeeded: "succeeded"
        case .failed: "failed"
        case .cancelled: "cancelled"
        default: "unknown"
        }
    }
}
