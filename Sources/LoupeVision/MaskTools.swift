import Foundation
public import LoupeImaging

/// Edits operators ask for on label masks (one class index per pixel, 0 =
/// background), and the labelling check from the seed's guidance.
public enum MaskTools {
    /// Fills background regions enclosed by labels (not connected to the
    /// image border) with the label that surrounds them most.
    public static func fillHoles(_ mask: Image8) -> Image8 {
        var out = mask
        let width = mask.width, height = mask.height
        var outside = [Bool](repeating: false, count: width * height)
        var stack: [Int] = []
        for x in 0..<width { stack.append(x); stack.append((height - 1) * width + x) }
        for y in 0..<height { stack.append(y * width); stack.append(y * width + width - 1) }
        while let index = stack.popLast() {
            guard !outside[index], mask.samples[index] == 0 else { continue }
            outside[index] = true
            let x = index % width, y = index / width
            if x > 0 { stack.append(index - 1) }
            if x < width - 1 { stack.append(index + 1) }
            if y > 0 { stack.append(index - width) }
            if y < height - 1 { stack.append(index + width) }
        }
        // Each enclosed hole: flood it, count the labels on its rim, fill with the commonest.
        var visited = outside
        for start in 0..<(width * height) where mask.samples[start] == 0 && !visited[start] {
            var hole: [Int] = []
            var rim: [UInt8: Int] = [:]
            stack = [start]
            visited[start] = true
            while let index = stack.popLast() {
                hole.append(index)
                let x = index % width, y = index / width
                for (nx, ny) in [(x - 1, y), (x + 1, y), (x, y - 1), (x, y + 1)] where nx >= 0 && ny >= 0 && nx < width && ny < height {
                    let neighbour = ny * width + nx
                    let label = mask.samples[neighbour]
                    if label != 0 {
                        rim[label, default: 0] += 1
                    } else if !visited[neighbour] {
                        visited[neighbour] = true
                        stack.append(neighbour)
                    }
                }
            }
            let fill = rim.max { $0.value < $1.value || ($0.value == $1.value && $0.key > $1.key) }?.key ?? 0
            for index in hole { out.samples[index] = fill }
        }
        return out
    }

    /// Grows every label by `radius` pixels (Euclidean) into the background;
    /// where two labels grow into the same pixel, the nearer one wins.
    public static func dilate(_ mask: Image8, radius: Double) -> Image8 {
        let field = DistanceField(mask) { $0 != 0 }
        var out = mask
        for index in out.samples.indices where mask.samples[index] == 0 && field.squaredDistance[index] <= radius * radius {
            out.samples[index] = mask.samples[field.nearest[index]]
        }
        return out
    }

    /// Shrinks every label by `radius` pixels: labelled pixels within that
    /// distance of the background (or of another label) are cleared.
    public static func erode(_ mask: Image8, radius: Double) -> Image8 {
        var out = mask
        for label in Set(mask.samples) where label != 0 {
            let field = DistanceField(mask) { $0 != label }
            for index in out.samples.indices where mask.samples[index] == label && field.squaredDistance[index] <= radius * radius {
                out.samples[index] = 0
            }
        }
        return out
    }

    /// A connected region of one label (8-connected).
    public struct Blob: Sendable, Equatable {
        public var label: UInt8
        public var area: Int
        public var bounds: PixelRect
        /// Radius of the largest disc that fits inside the region, in pixels.
        public var inscribedRadius: Double
        /// The region's pixels, as indices y * width + x.
        public var pixels: [Int]
    }

    /// Where an operator would click on a region: of its pixels whose eight
    /// neighbours all belong to it (and that `allowed` accepts), the nearest
    /// to its centroid; failing those, its pixel nearest the centroid.
    public static func centralPixel(of blob: Blob, width: Int, height: Int, allowed: (Int) -> Bool = { _ in true }) -> Int {
        let members = Set(blob.pixels)
        let cx = blob.pixels.reduce(0.0) { $0 + Double($1 % width) } / Double(blob.area)
        let cy = blob.pixels.reduce(0.0) { $0 + Double($1 / width) } / Double(blob.area)
        func distance(_ index: Int) -> Double {
            let dx = Double(index % width) - cx, dy = Double(index / width) - cy
            return dx * dx + dy * dy
        }
        let inner = blob.pixels.filter { index in
            let x = index % width, y = index / width
            guard x > 0, y > 0, x < width - 1, y < height - 1, allowed(index) else { return false }
            return [-width - 1, -width, -width + 1, -1, 1, width - 1, width, width + 1].allSatisfy { members.contains(index + $0) }
        }
        return (inner.isEmpty ? blob.pixels : inner).min { distance($0) < distance($1) }!
    }

    /// The pixel of the set farthest from everything outside it (the
    /// image's border counts as outside): the click of an operator who aims
    /// at the middle of a region, as interactive segmentation's benchmarks
    /// place it. Nil for an empty set.
    public static func mostInteriorPixel(of set: Image8) -> Int? {
        let field = DistanceField(set, paddedOutside: true) { $0 == 0 }
        var best: Int?, farthest = -1.0
        for index in set.samples.indices where set.samples[index] != 0 && field.squaredDistance[index] > farthest {
            best = index
            farthest = field.squaredDistance[index]
        }
        return best
    }

    /// Every connected region of each label (8-connected); `measuringRadius` false leaves each inscribed radius 0, for
    /// callers that need only areas.
    public static func blobs(_ mask: Image8, measuringRadius: Bool = true) -> [Blob] {
        let width = mask.width, height = mask.height
        // The pixels read once as a plain array: `Raster` is generic across modules, and reading it pixel by pixel
        // looked its metadata up each time (most of a 1.9-megapixel labelling check).
        let samples = mask.samples
        var seen = [Bool](repeating: false, count: width * height)
        var found: [Blob] = []
        for start in 0..<(width * height) where samples[start] != 0 && !seen[start] {
            let label = samples[start]
            var pixels: [Int] = []
            var stack = [start]
            seen[start] = true
            var minX = width, minY = height, maxX = 0, maxY = 0
            while let index = stack.popLast() {
                pixels.append(index)
                let x = index % width, y = index / width
                minX = min(minX, x); maxX = max(maxX, x); minY = min(minY, y); maxY = max(maxY, y)
                for dy in -1...1 {
                    for dx in -1...1 where dx != 0 || dy != 0 {
                        let nx = x + dx, ny = y + dy
                        guard nx >= 0, ny >= 0, nx < width, ny < height else { continue }
                        let neighbour = ny * width + nx
                        if !seen[neighbour] && samples[neighbour] == label {
                            seen[neighbour] = true
                            stack.append(neighbour)
                        }
                    }
                }
            }
            found.append(
                Blob(
                    label: label, area: pixels.count, bounds: PixelRect(x: minX, y: minY, width: maxX - minX + 1, height: maxY - minY + 1),
                    inscribedRadius: 0, pixels: pixels))
        }
        guard !found.isEmpty, measuringRadius else { return found }
        // Inscribed radius: the largest distance from a region pixel to anything outside the region.
        var region = [Int32](repeating: -1, count: width * height)
        for (number, blob) in found.enumerated() { for index in blob.pixels { region[index] = Int32(number) } }
        for number in found.indices {
            let bounds = found[number].bounds
            let margin = 1
            let box = PixelRect(
                x: max(0, bounds.x - margin), y: max(0, bounds.y - margin),
                width: min(width, bounds.x + bounds.width + margin) - max(0, bounds.x - margin),
                height: min(height, bounds.y + bounds.height + margin) - max(0, bounds.y - margin))
            var inside = [UInt8](repeating: 0, count: box.width * box.height)
            for y in 0..<box.height {
                for x in 0..<box.width where region[(box.y + y) * width + box.x + x] == Int32(number) { inside[y * box.width + x] = 1 }
            }
            let local = Image8(validWidth: box.width, height: box.height, samples: inside)
            // Pixels on the image border count as touching the outside too.
            let field = DistanceField(local, paddedOutside: true) { $0 == 0 }
            var best = 0.0
            for index in inside.indices where inside[index] == 1 { best = max(best, field.squaredDistance[index]) }
            found[number].inscribedRadius = best.squareRoot()
        }
        return found
    }

    /// Clears regions smaller than `minimumArea` pixels ("remove specks").
    public static func removeBlobs(_ mask: Image8, smallerThan minimumArea: Int) -> Image8 {
        var out = mask
        for blob in blobs(mask) where blob.area < minimumArea {
            for index in blob.pixels { out.samples[index] = 0 }
        }
        return out
    }

    /// The seed's labelling guidance: paint defects with at least a 6 px
    /// radius, overdrawing rather than underdrawing. Returns the regions too
    /// thin to have been painted that way.
    public static func tooThin(_ mask: Image8, minimumRadius: Double = 6) -> [Blob] {
        blobs(mask).filter { $0.inscribedRadius < minimumRadius }
    }
}

/// Exact Euclidean distance from every pixel to the nearest "site" pixel,
/// with which site that is (Felzenszwalb and Huttenlocher's separable
/// algorithm, linear in the number of pixels).
struct DistanceField {
    var squaredDistance: [Double]
    /// Index of the nearest site.
    var nearest: [Int]

    /// - Parameter paddedOutside: treat everything beyond the image as a site.
    init(_ mask: Image8, paddedOutside: Bool = false, isSite: (UInt8) -> Bool) {
        let width = mask.width, height = mask.height
        let infinity = Double(width * width + height * height) * 4 + 1
        var distance = [Double](repeating: infinity, count: width * height)
        var site = [Int](repeating: -1, count: width * height)
        let samples = mask.samples
        for index in distance.indices where isSite(samples[index]) {
            distance[index] = 0
            site[index] = index
        }
        // Columns, then rows: each a 1-D lower envelope of parabolas. The line's scratch is allocated once and reused:
        // a 1.9-megapixel mask has 2,800 lines, and the labelling check runs on every edit.
        let longest = max(width, height) + 2
        var envelope = Envelope(capacity: longest)
        distance.withUnsafeMutableBufferPointer { distance in
            site.withUnsafeMutableBufferPointer { site in
                for x in 0..<width {
                    envelope.pass(distance, site, start: x, stride: width, count: height, padded: paddedOutside, infinity: infinity)
                }
                for y in 0..<height {
                    envelope.pass(distance, site, start: y * width, stride: 1, count: width, padded: paddedOutside, infinity: infinity)
                }
            }
        }
        squaredDistance = distance
        nearest = site
    }
}

/// One line of `DistanceField`: the lower envelope of the parabolas rooted at the line's sites, in buffers kept
/// between lines.
private struct Envelope {
    var positions: [Double], values: [Double], owners: [Int]
    var vertices: [Int], bounds: [Double]
    var output: [Double], outputSite: [Int]

    init(capacity: Int) {
        positions = [Double](repeating: 0, count: capacity)
        values = positions
        owners = [Int](repeating: -1, count: capacity)
        vertices = owners
        bounds = [Double](repeating: 0, count: capacity + 1)
        output = positions
        outputSite = owners
    }

    /// Replaces the line's `count` pixels (`start`, then every `stride`) with their squared distance to the
    /// nearest site on the line's envelope, and that site. With `padded`, positions -1 and `count` are sites at
    /// distance 0 belonging to no pixel (-1).
    mutating func pass(
        _ distance: UnsafeMutableBufferPointer<Double>, _ site: UnsafeMutableBufferPointer<Int>, start: Int, stride: Int, count: Int,
        padded: Bool, infinity: Double
    ) {
        var n = 0
        if padded {
            (positions[n], values[n], owners[n]) = (-1, 0, -1)
            n += 1
        }
        for i in 0..<count where distance[start + i * stride] < infinity {
            (positions[n], values[n], owners[n]) = (Double(i), distance[start + i * stride], site[start + i * stride])
            n += 1
        }
        if padded {
            (positions[n], values[n], owners[n]) = (Double(count), 0, -1)
            n += 1
        }
        guard n > 0 else { return }
        // Lower envelope: `vertices[0..<used]`, parabola k winning over (bounds[k], bounds[k + 1]).
        var used = 1
        vertices[0] = 0
        bounds[0] = -Double.infinity
        bounds[1] = Double.infinity
        for q in 1..<max(1, n) {
            var s = 0.0
            while true {
                let v = vertices[used - 1]
                s =
                    ((values[q] + positions[q] * positions[q]) - (values[v] + positions[v] * positions[v]))
                    / (2 * (positions[q] - positions[v]))
                if s <= bounds[used - 1] && used > 1 {
                    used -= 1
                } else {
                    break
                }
            }
            if s <= bounds[used - 1] {
                vertices[0] = q
                bounds[1] = Double.infinity
            } else {
                vertices[used] = q
                bounds[used] = s
                used += 1
                bounds[used] = Double.infinity
            }
        }
        var k = 0
        for i in 0..<count {
            while bounds[k + 1] < Double(i) { k += 1 }
            let v = vertices[k]
            let d = Double(i) - positions[v]
            output[i] = d * d + values[v]
            outputSite[i] = owners[v]
        }
        for i in 0..<count {
            distance[start + i * stride] = output[i]
            site[start + i * stride] = outputSite[i]
        }
    }
}
