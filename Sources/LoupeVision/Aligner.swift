import Foundation
public import LoupeImaging

/// What the aligner looks for and how hard.
public struct AlignerConfiguration: Sendable, Equatable, Codable {
    /// The template: a region of the reference image. Only the disc inscribed
    /// in it is used, so rotation brings in no corners from outside.
    public var template: PixelRect
    /// Rotations searched, in degrees either way.
    public var angleRangeDegrees: Double
    /// Frames whose match score (normalised cross-correlation, -1...1) is
    /// below this are "not aligned" and are not inspected.
    public var minScore: Double

    public init(template: PixelRect, angleRangeDegrees: Double = 15, minScore: Double = 0.5) {
        self.template = template
        self.angleRangeDegrees = angleRangeDegrees
        self.minScore = minScore
    }

    /// Where the template's centre lands in a frame under `pose`, and how far
    /// the part moved and turned from the reference: the one rule the align
    /// test and every inspection record report.
    public func placement(of pose: SimilarityTransform) -> PartPlacement {
        let center = (x: Double(template.x) + Double(template.width) / 2, y: Double(template.y) + Double(template.height) / 2)
        let found = pose.apply(center.x, center.y)
        return PartPlacement(
            x: found.x, y: found.y, shiftX: found.x - center.x, shiftY: found.y - center.y, angleDegrees: pose.angle * 180 / .pi)
    }
}

/// The part's place in one frame, in frame pixels and degrees.
public struct PartPlacement: Codable, Sendable, Equatable {
    /// Where the template's centre was found.
    public var x: Double
    public var y: Double
    /// How far the part moved from the reference.
    public var shiftX: Double
    public var shiftY: Double
    public var angleDegrees: Double

    public init(x: Double, y: Double, shiftX: Double, shiftY: Double, angleDegrees: Double) {
        self.x = x
        self.y = y
        self.shiftX = shiftX
        self.shiftY = shiftY
        self.angleDegrees = angleDegrees
    }
}

/// Where the part is in a frame.
public struct Alignment: Sendable, Equatable {
    /// Maps reference-image coordinates to frame coordinates.
    public var pose: SimilarityTransform
    /// Normalised cross-correlation of the template at that pose.
    public var score: Double
    /// False when the score is below the configured minimum.
    public var aligned: Bool
}

/// Finds a template in each frame: translation plus rotation within a range,
/// to sub-pixel and sub-degree accuracy, coarse to fine on an image pyramid.
///
/// The coarsest level is searched exhaustively over every position and a
/// set of angles; the best few candidates are refined level by level on a
/// sparse set of template points; the finest level fits parabolas to the
/// correlation around its peak.
public final class Aligner: Sendable {
    public let configuration: AlignerConfiguration

    /// Sparse template points: offsets from the centre and zero-mean, unit-norm values.
    private struct PointSet: Sendable {
        var offsets: [(Double, Double)] = []
        var values: [Double] = []
    }

    /// The template as seen at one pyramid level.
    private struct Level: Sendable {
        var center: (x: Double, y: Double)
        var radius: Double
        /// About 1,500 points, to steer the search.
        var points: PointSet
        /// Angle step that moves the template's rim by about one pixel here.
        var angleStep: Double
    }

    private let levels: [Level]
    /// About 10,000 points at full resolution, for the final sub-pixel fit,
    /// which needs their averaging against noise.
    private let finePoints: PointSet
    /// Rotated, normalised full templates for the exhaustive coarse search.
    private let coarsePatches: [(angle: Double, offsets: [(Int, Int)], values: [Double])]

    public init(reference: Image8, configuration: AlignerConfiguration) throws {
        let rect = configuration.template
        _ = try reference.cropped(to: rect)  // checks the template lies inside the reference
        guard min(rect.width, rect.height) >= 16 else {
            throw VisionError.templateTooSmall(width: rect.width, height: rect.height)
        }
        self.configuration = configuration
        let radius = Double(min(rect.width, rect.height)) / 2 - 1
        let center = (x: Double(rect.x) + Double(rect.width) / 2 - 0.5, y: Double(rect.y) + Double(rect.height) / 2 - 0.5)
        // Coarsest level: a template radius of 6 to 12 pixels, enough to find
        // the part among a few candidates, small enough to search exhaustively.
        let depth = max(0, Int(floor(log2(radius / 6))))
        var pyramid = [reference]
        for _ in 0..<depth {
            let last = pyramid.last!
            pyramid.append(try last.halved())
        }
        var levels: [Level] = []
        for (index, image) in pyramid.enumerated() {
            let scale = Double(1 << index)
            let levelCenter = (x: (center.x + 0.5) / scale - 0.5, y: (center.y + 0.5) / scale - 0.5)
            let levelRadius = radius / scale
            let points = try Self.sample(
                image, center: levelCenter, radius: levelRadius, budget: 1_500, seed: UInt64(index + 1), rect: rect)
            levels.append(Level(center: levelCenter, radius: levelRadius, points: points, angleStep: 1 / levelRadius))
        }
        self.levels = levels
        finePoints = try Self.sample(reference, center: levels[0].center, radius: levels[0].radius, budget: 10_000, seed: 99, rect: rect)

        let coarse = levels.last!
        let coarseImage = pyramid.last!
        let range = configuration.angleRangeDegrees * .pi / 180
        let steps = max(0, Int((range / coarse.angleStep).rounded(.up)))
        var patches: [(Double, [(Int, Int)], [Double])] = []
        for step in -steps...steps {
            let angle = steps == 0 ? 0 : Double(step) * range / Double(steps)
            // Template value seen at frame offset d when the part is turned by `angle`: ref(c + R(-angle) d).
            let c = cos(-angle), s = sin(-angle)
            var offsets: [(Int, Int)] = []
            var values: [Double] = []
            let reach = Int(coarse.radius)
            for dy in -reach...reach {
                for dx in -reach...reach where Double(dx * dx + dy * dy) <= coarse.radius * coarse.radius {
                    offsets.append((dx, dy))
                    values.append(
                        coarseImage.bilinear(
                            coarse.center.x + c * Double(dx) - s * Double(dy), coarse.center.y + s * Double(dx) + c * Double(dy)))
                }
            }
            guard Self.normalise(&values) else { throw VisionError.flatTemplate(rect) }
            patches.append((angle, offsets, values))
        }
        coarsePatches = patches
    }

    /// Finds the template in a frame of any size.
    public func align(_ frame: Image8) throws -> Alignment {
        let image = frame.channels == 1 ? frame : DecodedImage.rgb8(frame).gray8
        var pyramid = [image]
        for _ in 1..<levels.count {
            pyramid.append(try pyramid.last!.halved())
        }
        // 1. Exhaustive search at the coarsest level.
        var candidates = coarseSearch(pyramid.last!, keep: 4)
        // 2. Refine each candidate down the pyramid by hill climbing: move to
        //    the best of the 27 neighbours (+/-1 pixel, +/-1 angle step) until
        //    the centre is best. After doubling, an estimate is good to about
        //    a pixel, so the climb is short.
        for index in stride(from: levels.count - 1, through: 0, by: -1) {
            let level = levels[index]
            let image = pyramid[index]
            let coarsest = index == levels.count - 1
            candidates = candidates.map { candidate in
                var best = candidate
                if !coarsest {
                    best.x = (candidate.x + 0.5) * 2 - 0.5
                    best.y = (candidate.y + 0.5) * 2 - 0.5
                }
                best.score = correlation(image, level.points, x: best.x, y: best.y, angle: best.angle)
                for _ in 0..<8 {
                    let center = best
                    for da in -1...1 {
                        for dy in -1...1 {
                            for dx in -1...1 where da != 0 || dy != 0 || dx != 0 {
                                let x = center.x + Double(dx), y = center.y + Double(dy)
                                let angle = center.angle + Double(da) * level.angleStep
                                let score = correlation(image, level.points, x: x, y: y, angle: angle)
                                if score > best.score { best = Candidate(x: x, y: y, angle: angle, score: score) }
                            }
                        }
                    }
                    if best.x == center.x && best.y == center.y && best.angle == center.angle { break }
                }
                return best
            }
            candidates.sort { $0.score > $1.score }
            candidates = Array(candidates.prefix(index > 1 ? 2 : 1))
        }
        // 3. Sub-pixel, sub-step: a parabola along each axis through the
        //    correlation around the peak, all three from one centre value,
        //    with the steps halving each round.
        var best = candidates[0]
        let finest = levels[0]
        var center = correlation(image, finePoints, x: best.x, y: best.y, angle: best.angle)
        for step in [1.0, 0.5, 0.25] {
            let angleStep = finest.angleStep * step
            let shiftX = parabolaPeak(center: center) {
                correlation(image, finePoints, x: best.x + $0 * step, y: best.y, angle: best.angle)
            }
            let shiftY = parabolaPeak(center: center) {
                correlation(image, finePoints, x: best.x, y: best.y + $0 * step, angle: best.angle)
            }
            let turn = parabolaPeak(center: center) {
                correlation(image, finePoints, x: best.x, y: best.y, angle: best.angle + $0 * angleStep)
            }
            let moved = Candidate(x: best.x + shiftX * step, y: best.y + shiftY * step, angle: best.angle + turn * angleStep, score: 0)
            let score = correlation(image, finePoints, x: moved.x, y: moved.y, angle: moved.angle)
            // Keep the move only if the joint step did not overshoot.
            if score >= center {
                best = moved
                center = score
            }
        }
        best.score = center
        // T(p) = R(angle)(p - c) + (x, y)
        let c = cos(best.angle), s = sin(best.angle)
        let pose = SimilarityTransform(
            scale: 1, angle: best.angle,
            tx: best.x - (c * finest.center.x - s * finest.center.y),
            ty: best.y - (s * finest.center.x + c * finest.center.y)
        )
        return Alignment(pose: pose, score: best.score, aligned: best.score >= configuration.minScore)
    }

    private struct Candidate {
        var x: Double
        var y: Double
        var angle: Double
        var score: Double
    }

    /// Every integer position and every coarse angle; the best `keep` distinct peaks.
    private func coarseSearch(_ image: Image8, keep: Int) -> [Candidate] {
        let radius = Int(levels.last!.radius)
        guard image.width > 2 * radius, image.height > 2 * radius else { return [Candidate(x: 0, y: 0, angle: 0, score: -1)] }
        var found: [Candidate] = []
        image.samples.withUnsafeBufferPointer { pixels in
            for patch in coarsePatches {
                let count = Double(patch.values.count)
                let linear = patch.offsets.map { $0.1 * image.width + $0.0 }
                patch.values.withUnsafeBufferPointer { values in
                    linear.withUnsafeBufferPointer { linear in
                        for y in radius..<(image.height - radius) {
                            for x in radius..<(image.width - radius) {
                                let base = y * image.width + x
                                var sum = 0.0, squares = 0.0, cross = 0.0
                                for index in 0..<values.count {
                                    let value = Double(pixels[base + linear[index]])
                                    sum += value
                                    squares += value * value
                                    cross += value * values[index]
                                }
                                let variance = squares - sum * sum / count
                                guard variance > 1e-6 else { continue }
                                let score = cross / variance.squareRoot()
                                Self.offer(
                                    Candidate(x: Double(x), y: Double(y), angle: patch.angle, score: score), to: &found, keep: keep,
                                    separation: Double(radius))
                            }
                        }
                    }
                }
            }
        }
        return found.isEmpty ? [Candidate(x: 0, y: 0, angle: 0, score: -1)] : found
    }

    /// About `budget` template points in the disc: one per grid cell, at a
    /// fixed pseudo-random spot inside it, so the sparse sampling does not
    /// alias with the part's texture.
    private static func sample(
        _ image: Image8, center: (x: Double, y: Double), radius: Double, budget: Double, seed: UInt64, rect: PixelRect
    ) throws -> PointSet {
        let stride = max(1, Int((Double.pi * radius * radius / budget).squareRoot().rounded(.up)))
        var jitter = SeededGenerator(seed: seed)
        var points = PointSet()
        let reach = Int(radius)
        for cellY in Swift.stride(from: -reach, through: reach, by: stride) {
            for cellX in Swift.stride(from: -reach, through: reach, by: stride) {
                let dx = Double(cellX + Int.random(in: 0..<stride, using: &jitter))
                let dy = Double(cellY + Int.random(in: 0..<stride, using: &jitter))
                guard dx * dx + dy * dy <= radius * radius else { continue }
                points.offsets.append((dx, dy))
                points.values.append(image.bilinear(center.x + dx, center.y + dy))
            }
        }
        guard normalise(&points.values) else { throw VisionError.flatTemplate(rect) }
        return points
    }

    /// Keeps the best `keep` candidates that are at least `separation` apart.
    private static func offer(_ candidate: Candidate, to list: inout [Candidate], keep: Int, separation: Double) {
        if list.count == keep, let worst = list.last, candidate.score <= worst.score { return }
        if let near = list.firstIndex(where: { abs($0.x - candidate.x) < separation && abs($0.y - candidate.y) < separation }) {
            guard candidate.score > list[near].score else { return }
            list.remove(at: near)
        }
        let position = list.firstIndex { $0.score < candidate.score } ?? list.count
        list.insert(candidate, at: position)
        if list.count > keep { list.removeLast() }
    }

    /// Normalised cross-correlation of the level's sparse template points
    /// against the frame at a pose, sampling the frame bilinearly.
    private func correlation(_ image: Image8, _ points: PointSet, x: Double, y: Double, angle: Double) -> Double {
        let c = cos(angle), s = sin(angle)
        let width = image.width, height = image.height
        var sum = 0.0, squares = 0.0, cross = 0.0
        image.samples.withUnsafeBufferPointer { pixels in
            points.offsets.withUnsafeBufferPointer { offsets in
                points.values.withUnsafeBufferPointer { values in
                    for index in 0..<offsets.count {
                        let (dx, dy) = offsets[index]
                        let px = x + c * dx - s * dy, py = y + s * dx + c * dy
                        var value = 0.0
                        if px >= 0, py >= 0, px < Double(width - 1), py < Double(height - 1) {
                            let ix = Int(px), iy = Int(py)
                            let fx = px - Double(ix), fy = py - Double(iy)
                            let base = iy * width + ix
                            let top = Double(pixels[base]) + (Double(pixels[base + 1]) - Double(pixels[base])) * fx
                            let bottom =
                                Double(pixels[base + width]) + (Double(pixels[base + width + 1]) - Double(pixels[base + width])) * fx
                            value = top + (bottom - top) * fy
                        }
                        sum += value
                        squares += value * value
                        cross += value * values[index]
                    }
                }
            }
        }
        let variance = squares - sum * sum / Double(points.offsets.count)
        return variance > 1e-6 ? cross / variance.squareRoot() : 0
    }

    /// Offset in [-1, 1] of the vertex of the parabola through f(-1), f(0) = center, f(1).
    private func parabolaPeak(center middle: Double, _ f: (Double) -> Double) -> Double {
        let left = f(-1), right = f(1)
        let curvature = left - 2 * middle + right
        guard curvature < -1e-12 else { return 0 }
        return max(-1, min(1, 0.5 * (left - right) / curvature))
    }

    /// Zero mean, unit norm; false for a flat template.
    private static func normalise(_ values: inout [Double]) -> Bool {
        let mean = values.reduce(0, +) / Double(values.count)
        var norm = 0.0
        for index in values.indices {
            values[index] -= mean
            norm += values[index] * values[index]
        }
        guard norm > 1e-6 else { return false }
        let scale = 1 / norm.squareRoot()
        for index in values.indices { values[index] *= scale }
        return true
    }
}

/// Why a vision step could not run.
public enum VisionError: Error, CustomStringConvertible, Equatable {
    case templateTooSmall(width: Int, height: Int)
    case flatTemplate(PixelRect)

    public var description: String {
        switch self {
        case .templateTooSmall(let width, let height):
            return "template of \(width)x\(height) pixels is too small; it needs at least 16x16"
        case .flatTemplate(let rect):
            return "template \(rect.width)x\(rect.height) at (\(rect.x), \(rect.y)) is flat: it has no texture to match"
        }
    }
}
