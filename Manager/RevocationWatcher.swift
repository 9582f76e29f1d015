import Foundation
public import Logging
public import LoupePKI
import LoupeProto
public import LoupeWire
import Synchronization
import UnixSignals

/// Holds the manager's current revocation list and reloads it on SIGHUP and
/// whenever the file's modification time or size changes. It fails closed:
/// a list that is missing, unreadable or malformed at start stops the
/// manager, and later refuses every new connection by name (live ones keep
/// the last list) until a good list is back.
public final class RevocationWatcher: Sendable {
    public let path: String?
    private let current: Mutex<(list: RevocationList, stamp: String, failure: String?)>
    private let logger: Logger
    private let onReload: @Sendable (RevocationList) -> Void

    /// Loads the list once; a malformed file at start-up is an error.
    public init(path: String?, logger: Logger, onReload: @escaping @Sendable (RevocationList) -> Void = { _ in }) throws {
        self.path = path
        self.logger = logger
        self.onReload = onReload
        let list = try path.map { try RevocationList.load(path: $0) } ?? RevocationList()
        self.current = Mutex((list, path.map(Self.stamp(of:)) ?? "", nil))
    }

    public var list: RevocationList { current.withLock { $0.list } }

    /// Why the list cannot be trusted now, if it cannot.
    public var failure: String? { current.withLock { $0.failure } }

    /// Admits a new connection's certificate, or refuses it: revoked, or the list cannot be read.
    public func admit(serial: String, name: String, role: String) throws(WireError) {
        let (list, failure) = current.withLock { ($0.list, $0.failure) }
        if let failure {
            throw .refused(
                code: .unavailable,
                message: "the manager's revocation list cannot be read (\(failure)); new connections are refused until it is fixed")
        }
        if list.isRevoked(serial: serial) {
            throw .refused(code: .certificateRevoked, message: "certificate serial \(serial) of \(role) \(name) has been revoked")
        }
    }

    /// Reloads now. Returns false when the file is missing, unreadable or
    /// malformed: then new connections are refused until a reload succeeds.
    @discardableResult
    public func reload(reason: String) -> Bool {
        guard let path else { return true }
        let stamp = Self.stamp(of: path)
        do {
            let list = try RevocationList.load(path: path)
            current.withLock { $0 = (list, stamp, nil) }
            logger.info(
                "revocation list reloaded", metadata: ["path": "\(path)", "entries": "\(list.entries.count)", "trigger": "\(reason)"])
            onReload(list)
            return true
        } catch {
            current.withLock {
                $0.stamp = stamp
                $0.failure = "\(error)"
            }
            logger.error("revocation list unreadable: new connections are refused until it is fixed", metadata: ["error": "\(error)"])
            return false
        }
    }

    /// Watches for SIGHUP, and for file changes every `pollInterval` (nil:
    /// SIGHUP only), until cancelled.
    public func run(pollInterval: Duration?) async {
        guard let path else { return }
        await withDiscardingTaskGroup { group in
            group.addTask {
                for await _ in await UnixSignalsSequence(trapping: .sighup) {
                    self.reload(reason: "SIGHUP")
                }
            }
            guard let pollInterval else { return }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: pollInterval)
                    let changed = self.current.withLock { $0.stamp != Self.stamp(of: path) }
                    if changed { self.reload(reason: "file changed") }
                }
            }
        }
    }

    private static func stamp(of path: String) -> String {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path) else { return "absent" }
        let modified = (attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
        let size = (attributes[.size] as? NSNumber)?.int64Value ?? -1
        let inode = (attributes[.systemFileNumber] as? NSNumber)?.int64Value ?? -1
        return "\(modified)/\(size)/\(inode)"
    }
}
