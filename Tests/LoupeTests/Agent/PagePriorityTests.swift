import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import LoupeAgent
import NIOCore
import NIOPosix
import Testing

/// The page yields to live inspection: its event loops, its handlers' executor and its password
/// hashing run at the page's nice value, read back from the kernel on the thread that did the work.
@Suite struct PagePriorityTests {
    static func currentNice() -> Int32 {
        #if os(Linux)
        errno = 0
        return getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
        #else
        return getpriority(PRIO_PROCESS, 0)
        #endif
    }

    @Test func thePagesThreadsRunBelowInspection() async throws {
        let base = Self.currentNice()
        try #require(base < PagePriority.nice, "this test process already runs at nice \(base)")
        // Every event loop of the page's group.
        for loop in PagePriority.eventLoops.makeIterator() {
            #expect(try await loop.submit { Self.currentNice() }.get() == PagePriority.nice)
        }
        // Route handlers: a task preferring the page's executor, and its child tasks.
        let (own, children) = await withTaskExecutorPreference(PagePriority.handlers) {
            let own = Self.currentNice()
            let children = await withTaskGroup(of: Int32.self) { group in
                for _ in 0..<8 { group.addTask { Self.currentNice() } }
                return await group.reduce(into: [Int32]()) { $0.append($1) }
            }
            return (own, children)
        }
        #expect(own == PagePriority.nice && children.allSatisfy { $0 == PagePriority.nice }, "\(own) \(children)")
        // Password hashing, on the guard's own threads.
        #expect(try await SignInGuard().hashing { Self.currentNice() } == PagePriority.nice)
        // …while the caller's thread is where it was.
        #expect(Self.currentNice() == base)
    }

    /// A real server run the way the agent runs its page (`PagePriority.Yielding`, the page's event
    /// loops): a request's handler runs at the page's nice value.
    @Test func aRequestsHandlerRunsAtThePagesPriority() async throws {
        let router = Router()
        router.get("nice") { _, _ in "\(Self.currentNice())" }
        let (ports, found) = AsyncStream<Int>.makeStream()
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { found.yield($0.localAddress?.port ?? 0) },
            eventLoopGroupProvider: .shared(PagePriority.eventLoops))
        let group = ServiceGroup(services: [PagePriority.Yielding(app)], logger: Logger(label: "test"))
        let serving = Task { try await group.run() }
        var iterator = ports.makeAsyncIterator()
        let port = try #require(await iterator.next())
        for _ in 0..<4 {
            let response = try await PlainHTTP.send(port: port, method: "GET", target: "/nice")
            #expect(response.status == 200 && response.text == "\(PagePriority.nice)", "\(response)")
        }
        await group.triggerGracefulShutdown()
        _ = await serving.result
    }
}
