import Foundation
import Logging
import LoupePKI
import Synchronization
import UnixSignals

/// Holds the manager's current revocation list and reloads it on SIGHUP and
/// whenever the file's modification time or size changes. A file that fails
/// to parse leaves the previous list in force and is logged.
public final class RevocationWatcher: Sendable {
    public let path: String?
    private let current: Mutex<(list: RevocationList, stamp: String)>
    private let logger: Logger
    private let onReload: @Sendable (RevocationList) -> Void

    /// Loads the list once; a malformed file at start-up is an error.
    public init(path: String?, logger: Logger, onReload: @escaping @Sendable (RevocationList) -> Void = { _ in }) throws {
        self.path = path
        self.logger = logger
        self.onReload = onReload
        let list = try path.map(RevocationList.load(path:)) ?? RevocationList()
        self.current = Mutex((list, path.map(Self.stamp(of:)) ?? ""))
    }

    public var list: RevocationList { current.withLock { $0.list } }

    public func isRevoked(serial: String) -> Bool { list.isRevoked(serial: serial) }

    /// Reloads now. Returns false (keeping the old list) when the file is malformed.
    @discardableResult
    public func reload(reason: String) -> Bool {
        guard let path else { return true }
        let stamp = Self.stamp(of: path)
        do {
            let list = try RevocationList.load(path: path)
            current.withLock { $0 = (list, stamp) }
            logger.info("revocation list reloaded", metadata: ["path": "\(path)", "entries": "\(list.entries.count)", "trigger": "\(reason)"])
            onReload(list)
            return true
        } catch {
            current.withLock { $0.stamp = stamp }
            logger.error("revocation list not reloaded; the previous one stays in force", metadata: ["error": "\(error)"])
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
