import Foundation
import LoupeStorage
import NIOCore
public import NIOPosix
public import ServiceLifecycle
import Synchronization

/// The page yields to live inspection. Everything the Label & Train page's
/// HTTP server does (its event loops, its route handlers, password hashing)
/// runs on threads at nice `PagePriority.nice`, while the live pipeline's
/// threads stay at the process's own priority. On a busy camera a flood of
/// requests (sign-in guesses from a botnet, a script gone wrong) then slows
/// the page, not inspection: under Linux's scheduler a nice-10 thread weighs
/// about a tenth of a nice-0 one (`loupe bench login-flood`,
/// docs/security.md). With an idle core the page runs at full speed.
public enum PagePriority {
    public static let defaultNice: Int32 = 10
    /// Local training on the camera runs below the page: inspection, then the page, then training.
    public static let trainingNice: Int32 = 15
    private static let configured = Mutex(defaultNice)

    /// The nice value of the page's threads (0 to 19; 0 puts them level with inspection).
    public static var nice: Int32 { configured.withLock { $0 } }

    /// Sets `nice` (the agent config's `http.pageNice`); before the page's server first starts, which
    /// is when its threads take their priority.
    public static func configure(nice: Int32) { configured.withLock { $0 = max(0, min(19, nice)) } }

    /// The page server's event loops, one per core, their threads at `nice`.
    public static let eventLoops: MultiThreadedEventLoopGroup = {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        // Each loop runs this before any channel work queued after it.
        let nice = PagePriority.nice
        for loop in group.makeIterator() { loop.execute { lowerCurrentThread(to: nice) } }
        return group
    }()

    /// The executor the page's route handlers run on (task executor preference, inherited by every
    /// connection's child task): one thread per core at `nice`.
    public static let handlers = NicedTaskExecutor(threads: System.coreCount, nice: nice, name: "loupe-page")

    /// Sets the calling thread's nice value (Linux keeps one per thread: `who` 0 is the calling thread).
    public static func lowerCurrentThread(to nice: Int32) {
        guard nice > 0 else { return }
        #if os(Linux)
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, nice)
        #else
        _ = setpriority(PRIO_PROCESS, 0, nice)
        #endif
    }

    /// Runs `service` with the page's executor preferred for all its structured child tasks.
    public struct Yielding: Service {
        let service: any Service
        public init(_ service: any Service) { self.service = service }
        public func run() async throws {
            try await withTaskExecutorPreference(PagePriority.handlers) { try await service.run() }
        }
    }
}

/// A task executor over a fixed set of threads at a lowered priority. Jobs
/// run in arrival order; the threads live as long as the process (like
/// NIO's singleton group).
public final class NicedTaskExecutor: TaskExecutor, Sendable {
    private let jobs = Mutex(CircularBuffer<UnownedJob>())
    private let ready = DispatchSemaphore(value: 0)

    public init(threads: Int, nice: Int32, name: String) {
        for index in 0..<max(1, threads) {
            DedicatedThread.start("\(name)-\(index)") { [self] in
                PagePriority.lowerCurrentThread(to: nice)
                while true {
                    ready.wait()
                    guard let job = jobs.withLock({ $0.popFirst() }) else { continue }
                    job.runSynchronously(on: asUnownedTaskExecutor())
                }
            }
        }
    }

    public func enqueue(_ job: UnownedJob) {
        jobs.withLock { $0.append(job) }
        ready.signal()
    }
}
