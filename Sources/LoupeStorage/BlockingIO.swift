import Dispatch

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
