import Dispatch
public import Foundation

/// Blocking work (SQLite commits with `synchronous=FULL`, fsyncs, blob
/// reads, PNG and model coding) run off the Swift task pool. The pool has a
/// thread per core (two on a camera); a task that blocks one of them stalls
/// every other task, heartbeats included. `run` hands the work to a
/// dispatch queue of its own and suspends the calling task until it is done.
public enum BlockingIO {
    private static let queue = DispatchQueue(label: "loupe.blocking-io", qos: .utility, attributes: .concurrent)

    public static func run<T: Sendable, E: Error>(_ work: @escaping @Sendable () throws(E) -> T) async throws(E) -> T {
        let result: Result<T, E> = await withCheckedContinuation { continuation in
            queue.async {
                do throws(E) {
                    continuation.resume(returning: .success(try work()))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }
}

/// A thread of the process's own, for work that holds its thread for long (the live pipeline's stages, training,
/// the line's servers, password hashing), named so that `top -H`, gdb and `/proc` say what it is. On Linux a
/// Foundation thread's `name` does not reach the kernel (the thread shows its creator's name), so the name is
/// written to `/proc/thread-self/comm` from inside, cut to the kernel's 15 bytes.
public enum DedicatedThread {
    @discardableResult
    public static func start(_ name: String, _ body: @escaping @Sendable () -> Void) -> Thread {
        let thread = Thread {
            nameCurrentThread(name)
            body()
        }
        thread.name = name
        thread.start()
        return thread
    }

    /// Names the calling thread; a kernel without `/proc` keeps the old name.
    public static func nameCurrentThread(_ name: String) {
        let descriptor = open("/proc/thread-self/comm", O_WRONLY)
        guard descriptor >= 0 else { return }
        defer { close(descriptor) }
        let bytes = Array(name.utf8.prefix(15))
        _ = FileWrite.all(descriptor, bytes)
    }
}
