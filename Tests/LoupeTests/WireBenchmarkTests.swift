import LoupeBench
import Testing

/// The benchmark itself must keep working; its figures are checked by
/// `loupe bench wire`, not here.
@Suite struct WireBenchmarkTests {
    @Test func theWireBenchmarkMeasuresBothSides() async throws {
        var options = WireBenchmark.Options()
        options.rounds = 1
        options.secondsPerRound = 0.2
        options.largeWindow = 2
        let rows = try await WireBenchmark(options: options) { _ in }.run()
        #expect(rows.count == 3)
        for row in rows {
            #expect(row.loupe > 0, "\(row.name): Loupe side measured nothing")
            #expect(row.ceiling > 0, "\(row.name): ceiling measured nothing")
        }
    }
}
