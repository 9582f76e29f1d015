/// The value at quantile `q` (0…1) of the values, nearest rank; 0 for none.
public func percentile(_ values: [Double], _ q: Double) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return 0 }
    return sorted[min(sorted.count - 1, Int((q * Double(sorted.count - 1)).rounded()))]
}

/// The middle value (the mean of the two middle ones for an even count); 0 for none.
/// Benchmarks on these shared machines quote medians, not means.
public func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return 0 }
    let middle = sorted.count / 2
    return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}
