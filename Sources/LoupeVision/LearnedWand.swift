import Foundation
public import LoupeImaging

/// The AI wand that learns from the operator's clicks (the method of
/// ilastik's pixel classification, with one click instead of strokes):
///
/// 1. Each image's `WandFeatures`, once.
/// 2. Per click, a classifier (logistic regression on the standardised
///    features) trained from: positives in a disc around every "label"
///    click, negatives in a disc around every "unlabel" click, pixels drawn
///    at random from the rest of the image (a defect is a small part of it),
///    pixels the mask already gives another class, and the examples this
///    inspection type's earlier labels left in `WandMemory`.
/// 3. Self-training: the interior of the region the classifier grows from
///    the clicks becomes the next round's positives, and it and the regions
///    elsewhere that look like it stay out of the negatives, so one click
///    reaches the whole of a defect, not just its disc.
/// 4. The selection: the predicted regions holding a "label" click and every
///    predicted region elsewhere of at least `minimumRegion` pixels (the
///    areas that look like it), never a pixel of an "unlabel" disc nor a
///    region an "unlabel" click fell on (unless a "label" click holds it).
///
/// Tolerance is the operator's one knob: the probability a pixel needs is
/// 1 − tolerance.
public struct LearnedWand: Sendable {
    public struct Click: Sendable, Equatable, Codable {
        public var x: Int
        public var y: Int
        /// A "label" click (true) or an "unlabel" click (false).
        public var positive: Bool

        public init(x: Int, y: Int, positive: Bool) {
            self.x = x
            self.y = y
            self.positive = positive
        }
    }

    /// Radius of a click's disc, pixels.
    public var clickRadius = 5
    /// Rounds after the first fit (2: `loupe bench wand` measured 3 no
    /// better on NEU-Seg and a third slower).
    public var selfTrainingRounds = 2
    public var randomNegatives = 2000
    public var regionPositives = 1000
    /// Predicted regions elsewhere smaller than this are noise.
    public var minimumRegion = 20
    /// The margin kept between the grown region and the random negatives, and
    /// trimmed off it for the positives.
    public var margin = 3

    public init() {}

    /// The selection (255 where selected) for the clicks so far of one class
    /// on one image. `mask` is the image's label mask (pixels of other
    /// classes are negatives); `memory` the inspection type's examples.
    public func select(
        _ features: WandFeatures, clicks: [Click], classIndex: UInt8, mask: Image8? = nil,
        memory: WandMemory? = nil, tolerance: Double = 0.5
    ) throws(WandError) -> Image8 {
        let width = features.width, height = features.height, n = features.pixelCount
        guard !clicks.isEmpty else { throw .noClicks }
        for click in clicks where !(0..<width).contains(click.x) || !(0..<height).contains(click.y) {
            throw .outside(x: click.x, y: click.y, width: width, height: height)
        }
        guard (0...1).contains(tolerance) else { throw .tolerance(tolerance) }
        if let mask, mask.width != width || mask.height != height {
            throw .maskSize(width: mask.width, height: mask.height, expected: (width, height))
        }
        guard features.deviations.contains(where: { $0 > 1e-3 }) else { throw .flat }
        let positives = clicks.filter(\.positive)
        guard !positives.isEmpty else { throw .noClicks }
        var random = SeededGenerator(
            seed: clicks.reduce(UInt64(0x5EED)) { $0 &* 31 &+ UInt64($1.y * width + $1.x) &+ ($1.positive ? 1 : 0) })

        let positiveDiscs = likeTheClick(positives, features)
        let negativeClicks = clicks.filter { !$0.positive }
        let negativeDiscs = disc(around: negativeClicks, width: width, height: height)
        var otherClasses: [Int] = []
        if let mask {
            for (index, label) in mask.samples.enumerated() where label != 0 && label != classIndex { otherClasses.append(index) }
        }
        let remembered = memory?.examples(for: classIndex)
        let threshold = Float(max(0.02, min(0.98, 1 - tolerance)))
        let cut = log(threshold / (1 - threshold))

        var grown = [Bool](repeating: false, count: n)
        for index in positiveDiscs { grown[index] = true }
        var selected = [Bool](repeating: false, count: n)
        var regions = Regions(count: 0, labels: [], areas: [])
        var previous: LogisticRegression?
        for _ in 0...selfTrainingRounds {
            var training = TrainingSet(dimension: WandFeatures.count)
            // Positives from the grown region's interior only: its border is
            // left to the classifier, or each round would claim one more ring
            // of the blur around a sharp defect's edge.
            let inner = Self.erode(grown, width: width, height: height, radius: margin)
            var grownIndices = inner.indices.filter { inner[$0] }
            if grownIndices.isEmpty { grownIndices = positiveDiscs }
            training.add(features, sample(grownIndices, count: regionPositives, using: &random), positive: true)
            training.add(features, positiveDiscs, positive: true)
            // Negatives stay clear of the grown region and (from the second
            // round) of the regions elsewhere that look like it.
            var claimed = grown
            if !regions.labels.isEmpty {
                let large = regions.areas.enumerated().map { $0.offset != 0 && $0.element >= minimumRegion }
                for index in 0..<n where large[Int(regions.labels[index])] { claimed[index] = true }
            }
            let kept = Self.dilate(claimed, width: width, height: height, radius: margin)
            var far: [Int] = []
            far.reserveCapacity(randomNegatives)
            var attempts = 0
            while far.count < randomNegatives && attempts < randomNegatives * 20 {
                attempts += 1
                let index = Int(random.next() % UInt64(n))
                if !kept[index] { far.append(index) }
            }
            training.add(features, far, positive: false)
            training.add(features, negativeDiscs, positive: false)
            training.add(features, sample(otherClasses, count: 500, using: &random), positive: false)
            if let remembered {
                training.add(vectors: remembered.positives, positive: true, atMost: regionPositives, using: &random)
                training.add(vectors: remembered.negatives, positive: false, atMost: randomNegatives, using: &random)
            }
            let model = training.fit(from: previous)
            previous = model
            let scores = Self.scores(features, model)
            for index in 0..<n { selected[index] = scores[index] >= cut }
            for index in negativeDiscs { selected[index] = false }
            // An unlabel click takes out the whole region under it (unless a label click holds it too).
            regions = Regions(selected, width: width, height: height)
            regions.reject(holding: negativeClicks, sparing: positives, width: width)
            var clicked = [Bool](repeating: false, count: regions.count + 1)
            for click in positives { clicked[Int(regions.labels[click.y * width + click.x])] = true }
            clicked[0] = false
            for index in 0..<n { grown[index] = clicked[Int(regions.labels[index])] }
            for index in positiveDiscs { grown[index] = true }
        }
        var out = features.blank
        var kept = regions.areas.map { $0 >= minimumRegion }
        for click in positives { kept[Int(regions.labels[click.y * width + click.x])] = true }
        kept[0] = false
        for index in 0..<n where kept[Int(regions.labels[index])] { out.samples[index] = 255 }
        return out
    }

    /// The inspection type's proposal for an image nobody has clicked on yet:
    /// each remembered class against the rest, the likeliest class where it
    /// clears 1 − tolerance (0 elsewhere). Nil when the memory holds no class.
    public func propose(_ features: WandFeatures, memory: WandMemory, tolerance: Double = 0.5) -> Image8? {
        let classes = memory.classes
        guard !classes.isEmpty else { return nil }
        let n = features.pixelCount
        var best = [Float](repeating: -.infinity, count: n), label = [UInt8](repeating: 0, count: n)
        for classIndex in classes {
            guard let examples = memory.examples(for: classIndex), !examples.positives.isEmpty, !examples.negatives.isEmpty else {
                continue
            }
            var training = TrainingSet(dimension: WandFeatures.count)
            training.add(vectors: examples.positives, positive: true)
            training.add(vectors: examples.negatives, positive: false)
            let scores = Self.scores(features, training.fit())
            for index in 0..<n where scores[index] > best[index] {
                best[index] = scores[index]
                label[index] = classIndex
            }
        }
        let threshold = Float(max(0.02, min(0.98, 1 - tolerance)))
        let cut = log(threshold / (1 - threshold))
        for index in 0..<n where best[index] < cut { label[index] = 0 }
        return try? Image8(width: features.width, height: features.height, samples: label)
    }

    /// The pixels of each "label" click's disc that look like the click
    /// rather than like the disc's surroundings (its smoothed level nearer the
    /// clicked pixel's than the median of a ring just outside): on a thin
    /// scratch, the scratch and not the surface beside it.
    private func likeTheClick(_ clicks: [Click], _ features: WandFeatures) -> [Int] {
        let width = features.width, height = features.height
        let level = features.planes  // plane 0: the finest smoothing
        var chosen = Set<Int>()
        for click in clicks {
            let centre = level[click.y * width + click.x]
            var ring: [Float] = []
            for dy in -(clickRadius + 2)...(clickRadius + 2) {
                for dx in -(clickRadius + 2)...(clickRadius + 2) {
                    let d2 = dx * dx + dy * dy, x = click.x + dx, y = click.y + dy
                    guard d2 > clickRadius * clickRadius, d2 <= (clickRadius + 2) * (clickRadius + 2),
                        x >= 0, y >= 0, x < width, y < height
                    else { continue }
                    ring.append(level[y * width + x])
                }
            }
            let surround = ring.isEmpty ? centre : ring.sorted()[ring.count / 2]
            for index in disc(around: [click], width: width, height: height) {
                let value = level[index]
                if abs(value - centre) <= abs(value - surround) { chosen.insert(index) }
            }
            chosen.insert(click.y * width + click.x)
        }
        return chosen.sorted()
    }

    private func disc(around clicks: [Click], width: Int, height: Int) -> [Int] {
        var indices = Set<Int>()
        let r = clickRadius
        for click in clicks {
            for dy in -r...r {
                for dx in -r...r where dx * dx + dy * dy <= r * r {
                    let x = click.x + dx, y = click.y + dy
                    if x >= 0, y >= 0, x < width, y < height { indices.insert(y * width + x) }
                }
            }
        }
        return indices.sorted()
    }

    private func sample(_ indices: [Int], count: Int, using random: inout SeededGenerator) -> [Int] {
        guard indices.count > count else { return indices }
        return (0..<count).map { _ in indices[Int(random.next() % UInt64(indices.count))] }
    }

    /// The classifier's log-odds at every pixel, the standardisation folded
    /// into its weights so the raw planes are read once each.
    static func scores(_ features: WandFeatures, _ model: LogisticRegression) -> [Float] {
        let n = features.pixelCount
        var weights = [Float](repeating: 0, count: WandFeatures.count)
        var bias = model.bias
        for f in 0..<WandFeatures.count {
            weights[f] = model.weights[f] / features.deviations[f]
            bias -= weights[f] * features.means[f]
        }
        var scores = [Float](repeating: bias, count: n)
        features.planes.withUnsafeBufferPointer { planes in
            scores.withUnsafeMutableBufferPointer { out in
                for f in 0..<WandFeatures.count {
                    let plane = planes.baseAddress!.advanced(by: f * n), weight = weights[f]
                    for i in 0..<n { out[i] += weight * plane[i] }
                }
            }
        }
        return scores
    }

    /// Shrinks a selection by `radius` pixels (a square): the pixels whose
    /// whole square lies inside it.
    static func erode(_ set: [Bool], width: Int, height: Int, radius: Int) -> [Bool] {
        spread(false, in: set, width: width, height: height, radius: radius)
    }

    /// Grows a selection by `radius` pixels (a square).
    static func dilate(_ set: [Bool], width: Int, height: Int, radius: Int) -> [Bool] {
        spread(true, in: set, width: width, height: height, radius: radius)
    }

    /// Every pixel within `radius` (a square) of one holding `value` takes
    /// it: separably, a pass each way along the rows, then the columns.
    private static func spread(_ value: Bool, in set: [Bool], width: Int, height: Int, radius: Int) -> [Bool] {
        var rows = set, out = set
        set.withUnsafeBufferPointer { source in
            rows.withUnsafeMutableBufferPointer { rows in
                for y in 0..<height {
                    let line = y * width
                    var last = -radius - 1
                    for x in 0..<width {
                        if source[line + x] == value { last = x }
                        if x - last <= radius { rows[line + x] = value }
                    }
                    last = width + radius + 1
                    for x in stride(from: width - 1, through: 0, by: -1) {
                        if source[line + x] == value { last = x }
                        if last - x <= radius { rows[line + x] = value }
                    }
                }
            }
        }
        rows.withUnsafeBufferPointer { rows in
            out.withUnsafeMutableBufferPointer { out in
                for i in 0..<out.count { out[i] = rows[i] }
                // Columns a row at a time (each row's distance to the nearest `value` above, then below).
                var above = [Int](repeating: -radius - 1, count: width), below = [Int](repeating: height + radius + 1, count: width)
                for y in 0..<height {
                    for x in 0..<width {
                        if rows[y * width + x] == value { above[x] = y }
                        if y - above[x] <= radius { out[y * width + x] = value }
                    }
                }
                for y in stride(from: height - 1, through: 0, by: -1) {
                    for x in 0..<width {
                        if rows[y * width + x] == value { below[x] = y }
                        if below[x] - y <= radius { out[y * width + x] = value }
                    }
                }
            }
        }
        return out
    }
}

/// What went wrong with a click, named for the operator.
public enum WandError: Error, Equatable, CustomStringConvertible {
    case noClicks
    case outside(x: Int, y: Int, width: Int, height: Int)
    case tolerance(Double)
    case maskSize(width: Int, height: Int, expected: (Int, Int))
    /// Every pixel alike: nothing to tell a defect from.
    case flat

    public static func == (a: WandError, b: WandError) -> Bool { a.description == b.description }

    public var description: String {
        switch self {
        case .noClicks: "the wand needs a click that labels"
        case let .outside(x, y, width, height): "click (\(x), \(y)) is outside the \(width)x\(height) image"
        case let .tolerance(value): "tolerance must be 0…1, not \(value)"
        case let .maskSize(width, height, expected): "the mask is \(width)x\(height), the image \(expected.0)x\(expected.1)"
        case .flat: "the image is flat: the wand has nothing to learn from"
        }
    }
}

/// Samples for the classifier: standardised vectors, their labels and one
/// weight each, each group (added together) weighing the same in total.
struct TrainingSet {
    let dimension: Int
    var samples: [Float] = []
    var labels: [Bool] = []
    var weights: [Float] = []

    init(dimension: Int) {
        self.dimension = dimension
    }

    mutating func add(_ features: WandFeatures, _ indices: [Int], positive: Bool) {
        guard !indices.isEmpty else { return }
        for index in indices { samples += features.vector(at: index) }
        append(count: indices.count, positive: positive)
    }

    mutating func add(vectors: [Float], positive: Bool) {
        let count = vectors.count / dimension
        guard count > 0 else { return }
        samples += vectors
        append(count: count, positive: positive)
    }

    /// At most `limit` of the vectors, drawn at random.
    mutating func add(vectors: [Float], positive: Bool, atMost limit: Int, using random: inout SeededGenerator) {
        let count = vectors.count / dimension
        guard count > limit else { return add(vectors: vectors, positive: positive) }
        var chosen: [Float] = []
        chosen.reserveCapacity(limit * dimension)
        for _ in 0..<limit {
            let row = Int(random.next() % UInt64(count))
            chosen += vectors[(row * dimension)..<((row + 1) * dimension)]
        }
        add(vectors: chosen, positive: positive)
    }

    private mutating func append(count: Int, positive: Bool) {
        labels += Array(repeating: positive, count: count)
        weights += Array(repeating: 1 / Float(count), count: count)
    }

    func fit(from start: LogisticRegression? = nil) -> LogisticRegression {
        LogisticRegression(samples: samples, labels: labels, sampleWeights: weights, dimension: dimension, from: start)
    }
}

/// The 8-connected regions of a selection: a region number per pixel (0
/// outside) and each region's area.
struct Regions {
    var count: Int
    var labels: [Int32]
    var areas: [Int]

    init(count: Int, labels: [Int32], areas: [Int]) {
        self.count = count
        self.labels = labels
        self.areas = areas
    }

    /// Takes out the regions under `clicks` that hold none of `sparing`.
    mutating func reject(holding clicks: [LearnedWand.Click], sparing: [LearnedWand.Click], width: Int) {
        guard !clicks.isEmpty else { return }
        var spared = Set<Int32>()
        for click in sparing { spared.insert(labels[click.y * width + click.x]) }
        var out = [Bool](repeating: false, count: count + 1)
        for click in clicks {
            let region = labels[click.y * width + click.x]
            if region != 0 && !spared.contains(region) { out[Int(region)] = true }
        }
        guard out.contains(true) else { return }
        for index in labels.indices where out[Int(labels[index])] { labels[index] = 0 }
        for region in out.indices where out[region] { areas[region] = 0 }
    }

    init(_ set: [Bool], width: Int, height: Int) {
        var labels = [Int32](repeating: 0, count: set.count)
        var areas = [0]
        var stack: [Int] = []
        for start in set.indices where set[start] && labels[start] == 0 {
            let region = Int32(areas.count)
            var area = 0
            labels[start] = region
            stack.append(start)
            while let index = stack.popLast() {
                area += 1
                let x = index % width, y = index / width
                for dy in -1...1 {
                    let ny = y + dy
                    guard ny >= 0, ny < height else { continue }
                    for dx in -1...1 where dx != 0 || dy != 0 {
                        let nx = x + dx
                        guard nx >= 0, nx < width else { continue }
                        let neighbour = ny * width + nx
                        if set[neighbour] && labels[neighbour] == 0 {
                            labels[neighbour] = region
                            stack.append(neighbour)
                        }
                    }
                }
            }
            areas.append(area)
        }
        self.count = areas.count - 1
        self.labels = labels
        self.areas = areas
    }
}
