import ArgumentParser

/// `loupe bench …`: measurements that are checked as benchmarks, not tests.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Run a benchmark and print its figures.",
        subcommands: []
    )
}
