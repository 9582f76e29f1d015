/// Why a benchmark could not measure what it set out to (a process that did not start, an agent that could not
/// connect), in words.
public struct BenchmarkError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
