import Foundation
import LoupeImaging

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

    /// The template as seen at one pyramid level.
    private struct Level: Sendable {
        var scale: Double
        var center: (x: Double, y: Double)
        var radius: Double
        /// Sparse template points: offsets from the centre and zero-mean, unit-norm values.
        var offsets: [(Double, Double)]
        var values: [Double]
        /// Angle step that moves the template's rim by about one pixel here.
        var angleStep: Double
    }

    private let levels: [Level]
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
        // Coarsest level: template radius of at least 8 pixels.
        let depth = max(0, Int(floor(log2(radius / 8))))
        var pyramid = [reference]
        for _ in 0..<depth {
            let last = pyramid.last!
            pyramid.append(try last.resizedArea(width: max(1, last.width / 2), height: max(1, last.height / 2)))
        }
        var levels: [Level] = []
        for (index, image) in pyramid.enumerated() {
            let scale = Double(1 << index)
            let levelCenter = (x: (center.x + 0.5) / scale - 0.5, y: (center.y + 0.5) / scale - 0.5)
            let levelRadius = radius / scale
            // About 2,500 points, on a grid.
            let stride = max(1, Int((Double.pi * levelRadius * levelRadius / 2500).squareRoot().rounded(.up)))
            var offsets: [(Double, Double)] = []
            var values: [Double] = []
            let reach = Int(levelRadius)
            for dy in Swift.stride(from: -reach, through: reach, by: stride) {
                for dx in Swift.stride(from: -reach, through: reach, by: stride) where Double(dx * dx + dy * dy) <= levelRadius * levelRadius {
                    offsets.append((Double(dx), Double(dy)))
                    values.append(image.bilinear(levelCenter.x + Double(dx), levelCenter.y + Double(dy)))
                }
            }
            guard Self.normalise(&values) else { throw VisionError.flatTemplate(rect) }
            levels.append(Level(scale: scale, center: levelCenter, radius: levelRadius, offsets: offsets, values: values, angleStep: 1 / levelRadius))
        }
        self.levels = levels

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
                    values.append(coarseImage.bilinear(coarse.center.x + c * Double(dx) - s * Double(dy), coarse.center.y + s * Double(dx) + c * Double(dy)))
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
            let last = pyramid.last!
            pyramid.append(try last.resizedArea(width: max(1, last.width / 2), height: max(1, last.height / 2)))
        }
        // 1. Exhaustive search at the coarsest level.
        var candidates = coarseSearch(pyramid.last!, keep: 4)
        // 2. Refine each candidate down the pyramid.
        for index in stride(from: levels.count - 1, through: 0, by: -1) {
            let level = levels[index]
            let image = pyramid[index]
            candidates = candidates.map { candidate in
                var best = candidate
                if index < levels.count - 1 {
                    best.x = (candidate.x + 0.5) * 2 - 0.5
                    best.y = (candidate.y + 0.5) * 2 - 0.5
                }
                best.score = -2
                for da in -1...1 {
                    let angle = candidate.angle + Double(da) * level.angleStep
                    for dy in -2...2 {
                        for dx in -2...2 {
                            let x = (index < levels.count - 1 ? (candidate.x + 0.5) * 2 - 0.5 : candidate.x) + Double(dx)
                            let y = (index < levels.count - 1 ? (candidate.y + 0.5) * 2 - 0.5 : candidate.y) + Double(dy)
                            let score = correlation(image, level: level, x: x, y: y, angle: angle)
                            if score > best.score { best = Candidate(x: x, y: y, angle: angle, score: score) }
                        }
                    }
                }
                return best
            }
            candidates.sort { $0.score > $1.score }
            candidates = Array(candidates.prefix(index == 0 ? 1 : 2))
        }
        // 3. Sub-pixel, sub-step: parabolas through the correlation around the peak.
        var best = candidates[0]
        let finest = levels[0]
        for (stepX, stepY, stepAngle) in [(1.0, 1.0, finest.angleStep), (0.5, 0.5, finest.angleStep / 2), (0.25, 0.25, finest.angleStep / 4)] {
            best.x += parabolaPeak { correlation(image, level: finest, x: best.x + $0 * stepX, y: best.y, angle: best.angle) } * stepX
            best.y += parabolaPeak { correlation(image, level: finest, x: best.x, y: best.y + $0 * stepY, angle: best.angle) } * stepY
            best.angle += parabolaPeak { correlation(image, level: finest, x: best.x, y: best.y, angle: best.angle + $0 * stepAngle) } * stepAngle
        }
        best.score = correlation(image, level: finest, x: best.x, y: best.y, angle: best.angle)
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
                                Self.offer(Candidate(x: Double(x), y: Double(y), angle: patch.angle, score: score), to: &found, keep: keep, separation: Double(radius))
                            }
                        }
                    }
                }
            }
        }
        return found.isEmpty ? [Candidate(x: 0, y: 0, angle: 0, score: -1)] : found
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
    private func correlation(_ image: Image8, level: Level, x: Double, y: Double, angle: Double) -> Double {
        let c = cos(angle), s = sin(angle)
        var sum = 0.0, squares = 0.0, cross = 0.0
        for index in level.offsets.indices {
            let (dx, dy) = level.offsets[index]
            let value = image.bilinear(x + c * dx - s * dy, y + s * dx + c * dy)
            sum += value
            squares += value * value
            cross += value * level.values[index]
        }
        let variance = squares - sum * sum / Double(level.offsets.count)
        return variance > 1e-6 ? cross / variance.squareRoot() : 0
    }

    /// Offset in [-1, 1] of the vertex of the parabola through f(-1), f(0), f(1).
    private func parabolaPeak(_ f: (Double) -> Double) -> Double {
        let left = f(-1), middle = f(0), right = f(1)
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
