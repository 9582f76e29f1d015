import Foundation
public import LoupeImaging

/// What an inspection type's finished labels teach the wand: per labelled
/// image, a few hundred standardised feature vectors of each class present
/// (background included), so the next image's clicks start from what the
/// operator has already shown, and an unclicked image gets a proposal.
/// Bounded: the most recent `capacity` images, `perClass` vectors each.
public struct WandMemory: Sendable {
    public var capacity: Int
    public var perClass: Int
    /// Oldest first.
    private var entries: [(key: String, byClass: [UInt8: [Float]])] = []

    public init(capacity: Int = 20, perClass: Int = 300) {
        self.capacity = capacity
        self.perClass = perClass
    }

    public var imageCount: Int { entries.count }

    /// The defect classes any remembered image holds.
    public var classes: [UInt8] {
        Set(entries.flatMap { $0.byClass.keys }).subtracting([0]).sorted()
    }

    /// Remembers a finished mask (every pixel labelled: 0 is background), in
    /// place of what `key` (the capture and ROI) taught before.
    public mutating func record(key: String, features: WandFeatures, mask: Image8) {
        guard mask.width == features.width, mask.height == features.height else { return }
        var byLabel: [UInt8: [Int]] = [:]
        for (index, label) in mask.samples.enumerated() { byLabel[label, default: []].append(index) }
        var random = SeededGenerator(seed: key.utf8.reduce(UInt64(0xCBF2_9CE4_8422_2325)) { ($0 ^ UInt64($1)) &* 0x100_0000_01B3 })
        var byClass: [UInt8: [Float]] = [:]
        for (label, indices) in byLabel {
            let chosen =
                indices.count <= perClass ? indices : (0..<perClass).map { _ in indices[Int(random.next() % UInt64(indices.count))] }
            byClass[label] = chosen.flatMap { features.vector(at: $0) }
        }
        entries.removeAll { $0.key == key }
        entries.append((key, byClass))
        if entries.count > capacity { entries.removeFirst(entries.count - capacity) }
    }

    public mutating func forget(key: String) {
        entries.removeAll { $0.key == key }
    }

    /// Vectors of `classIndex` and of everything else, from the images that
    /// hold it; nil when none does.
    func examples(for classIndex: UInt8) -> (positives: [Float], negatives: [Float])? {
        var positives: [Float] = [], negatives: [Float] = []
        for entry in entries {
            for (label, vectors) in entry.byClass {
                if label == classIndex { positives += vectors } else { negatives += vectors }
            }
        }
        return positives.isEmpty ? nil : (positives, negatives)
    }
}
