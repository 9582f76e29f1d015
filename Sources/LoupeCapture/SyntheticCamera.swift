import Foundation
public import LoupeImaging
import Synchronization

/// A camera without hardware: it renders the same machined part in every
/// frame, moved by a random shift and rotation, with freshly planted
/// defects, and returns each frame with its true label mask and pose.
/// Demos, tests and benchmarks use it.
public final class SyntheticCamera: FrameSource {
    /// Defect classes in the masks: 0 is background.
    public enum DefectClass: UInt8, CaseIterable, Sendable {
        case scratch = 1, spot = 2, crack = 3
    }

    public struct Configuration: Sendable {
        public var width: Int
        public var height: Int
        /// Largest random shift in pixels, each axis.
        public var maxShift: Double
        /// Largest random rotation in degrees, either way.
        public var maxRotationDegrees: Double
        /// Defects planted per frame (0 gives a good part).
        public var defectsPerFrame: ClosedRange<Int>
        /// Standard deviation of sensor noise, grey levels.
        public var noise: Double
        /// Seeds the frames (poses, defects, noise).
        public var seed: UInt64
        /// Seeds the part itself; nil uses `seed`. Cameras on one line share a
        /// part seed (the same product) and differ in `seed`.
        public var partSeed: UInt64?

        public init(
            width: Int = 1280, height: Int = 1024, maxShift: Double = 40, maxRotationDegrees: Double = 10,
            defectsPerFrame: ClosedRange<Int> = 0...4, noise: Double = 3, seed: UInt64 = 1
        ) {
            self.width = width
            self.height = height
            self.maxShift = maxShift
            self.maxRotationDegrees = maxRotationDegrees
            self.defectsPerFrame = defectsPerFrame
            self.noise = noise
            self.seed = seed
        }
    }

    /// A frame with what the camera knows about it.
    public struct Frame: Sendable {
        public var image: Image8
        public var mask: Image8
        /// Maps the reference part's coordinates to this frame's.
        public var pose: SimilarityTransform
        /// The defects' mask at the reference pose (before the part moved).
        public var referenceMask: Image8
    }

    public let configuration: Configuration
    /// The part at its reference pose, without defects: what recipes are set up on.
    public let reference: Image8
    /// Where the part's own machined features are (holes, the engraved mark,
    /// the slot) at the reference pose: 1 there, 0 on plain surface. They are
    /// not defects, though some look like them.
    public let featureMask: Image8
    private let state: Mutex<(generator: SeededGenerator, sequence: Int)>

    /// Refuses sizes too small to hold the part and its defects (below
    /// 320x256), negative ranges and negative noise.
    public init(configuration: Configuration = Configuration()) throws {
        let c = configuration
        guard c.width >= 320, c.height >= 256, c.width <= 8192, c.height <= 8192 else {
            throw CaptureError.invalidConfiguration("synthetic camera size \(c.width)x\(c.height) must be from 320x256 to 8192x8192")
        }
        guard c.maxShift >= 0, c.maxRotationDegrees >= 0, c.noise >= 0, c.defectsPerFrame.lowerBound >= 0 else {
            throw CaptureError.invalidConfiguration("synthetic camera shift, rotation, noise and defect count must not be negative")
        }
        self.configuration = configuration
        var generator = SeededGenerator(seed: configuration.seed)
        if let partSeed = configuration.partSeed {
            var partGenerator = SeededGenerator(seed: partSeed)
            (reference, featureMask) = Self.renderPart(width: configuration.width, height: configuration.height, generator: &partGenerator)
        } else {
            (reference, featureMask) = Self.renderPart(width: configuration.width, height: configuration.height, generator: &generator)
        }
        state = Mutex((generator, 0))
    }

    /// The area of the reference image the part covers (defects land inside it).
    public var partRect: PixelRect {
        PixelRect(
            x: configuration.width / 8, y: configuration.height / 8, width: configuration.width * 3 / 4,
            height: configuration.height * 3 / 4)
    }

    public func nextFrame() async throws -> CapturedFrame? {
        let (frame, sequence) = render()
        return CapturedFrame(sequence: sequence, image: frame.image, origin: "synthetic", groundTruth: frame.mask)
    }

    /// Renders the next frame with its mask and pose.
    public func render() -> (Frame, sequence: Int) {
        var (generator, sequence) = state.withLock { state -> (SeededGenerator, Int) in
            state.sequence += 1
            // Each frame gets its own stream, so frames do not depend on each other's work.
            let frameSeed = state.generator.next()
            return (SeededGenerator(seed: frameSeed), state.sequence)
        }
        let c = configuration
        let angle = Double.random(in: -c.maxRotationDegrees...c.maxRotationDegrees, using: &generator) * .pi / 180
        let pose = SimilarityTransform.rotation(
            angle, about: (Double(c.width) / 2, Double(c.height) / 2),
            shift: (
                Double.random(in: -c.maxShift...c.maxShift, using: &generator),
                Double.random(in: -c.maxShift...c.maxShift, using: &generator)
            )
        )
        var part = reference
        var mask = Image8(validWidth: c.width, height: c.height)
        let count = Int.random(in: c.defectsPerFrame, using: &generator)
        for _ in 0..<count {
            plantDefect(in: &part, mask: &mask, generator: &generator)
        }
        var image = part.warped(by: pose, fill: 24)
        let movedMask = mask.warpedNearest(by: pose)
        if c.noise > 0 {
            for index in image.samples.indices {
                let gaussian =
                    (Double.random(in: 0..<1, using: &generator) + Double.random(in: 0..<1, using: &generator)
                        + Double.random(in: 0..<1, using: &generator) - 1.5) * 2 * c.noise
                image.samples[index] = UInt8(max(0, min(255, (Double(image.samples[index]) + gaussian).rounded())))
            }
        }
        return (Frame(image: image, mask: movedMask, pose: pose, referenceMask: mask), sequence)
    }

    // MARK: Drawing

    private func plantDefect(in part: inout Image8, mask: inout Image8, generator: inout SeededGenerator) {
        let area = partRect
        let x = Double.random(in: Double(area.x + 60)...Double(area.x + area.width - 60), using: &generator)
        let y = Double.random(in: Double(area.y + 60)...Double(area.y + area.height - 60), using: &generator)
        let kind = DefectClass.allCases.randomElement(using: &generator)!
        switch kind {
        case .scratch:
            let angle = Double.random(in: 0..<Double.pi, using: &generator)
            let length = Double.random(in: 50...160, using: &generator)
            let bright = Bool.random(using: &generator)
            let width = Double.random(in: 2.5...4, using: &generator)
            Self.stroke(
                from: (x, y), to: (x + cos(angle) * length, y + sin(angle) * length), radius: width / 2, part: &part, mask: &mask,
                label: kind.rawValue, shade: bright ? 70 : -70)
        case .spot:
            let radius = Double.random(in: 6...16, using: &generator)
            Self.disc(center: (x, y), radius: radius, part: &part, mask: &mask, label: kind.rawValue, shade: -80)
        case .crack:
            var point = (x, y)
            var heading = Double.random(in: 0..<(2 * Double.pi), using: &generator)
            for _ in 0..<Int.random(in: 8...16, using: &generator) {
                heading += Double.random(in: -0.6...0.6, using: &generator)
                let next = (point.0 + cos(heading) * 9, point.1 + sin(heading) * 9)
                Self.stroke(from: point, to: next, radius: 1.6, part: &part, mask: &mask, label: kind.rawValue, shade: -90)
                point = next
            }
        }
    }

    /// A thick line segment: every pixel within `radius` of the segment.
    static func stroke(
        from a: (Double, Double), to b: (Double, Double), radius: Double, part: inout Image8, mask: inout Image8, label: UInt8, shade: Int
    ) {
        let minX = max(0, Int(floor(min(a.0, b.0) - radius - 1))), maxX = min(part.width - 1, Int(ceil(max(a.0, b.0) + radius + 1)))
        let minY = max(0, Int(floor(min(a.1, b.1) - radius - 1))), maxY = min(part.height - 1, Int(ceil(max(a.1, b.1) + radius + 1)))
        guard minX <= maxX, minY <= maxY else { return }
        let dx = b.0 - a.0, dy = b.1 - a.1
        let lengthSquared = max(1e-9, dx * dx + dy * dy)
        for y in minY...maxY {
            for x in minX...maxX {
                let t = max(0, min(1, ((Double(x) - a.0) * dx + (Double(y) - a.1) * dy) / lengthSquared))
                let ex = Double(x) - (a.0 + t * dx), ey = Double(y) - (a.1 + t * dy)
                if ex * ex + ey * ey <= radius * radius {
                    paint(x, y, part: &part, mask: &mask, label: label, shade: shade)
                }
            }
        }
    }

    static func disc(center: (Double, Double), radius: Double, part: inout Image8, mask: inout Image8, label: UInt8, shade: Int) {
        let minX = max(0, Int(center.0 - radius - 1)), maxX = min(part.width - 1, Int(center.0 + radius + 1))
        let minY = max(0, Int(center.1 - radius - 1)), maxY = min(part.height - 1, Int(center.1 + radius + 1))
        for y in minY...maxY {
            for x in minX...maxX {
                let ex = Double(x) - center.0, ey = Double(y) - center.1
                if ex * ex + ey * ey <= radius * radius {
                    paint(x, y, part: &part, mask: &mask, label: label, shade: shade)
                }
            }
        }
    }

    private static func paint(_ x: Int, _ y: Int, part: inout Image8, mask: inout Image8, label: UInt8, shade: Int) {
        part[x, y] = UInt8(max(0, min(255, Int(part[x, y]) + shade)))
        mask[x, y] = label
    }

    /// The part: a brushed plate with drilled holes and an asymmetric
    /// engraved mark, on a dark belt.
    private static func renderPart(width: Int, height: Int, generator: inout SeededGenerator) -> (Image8, features: Image8) {
        var image = Image8(validWidth: width, height: height, fill: 24)
        let plate = PixelRect(x: width / 8, y: height / 8, width: width * 3 / 4, height: height * 3 / 4)
        // Brushed texture: each row has its own slowly varying brightness.
        var rowShade = [Double](repeating: 0, count: height)
        var drift = 0.0
        for y in 0..<height {
            drift = drift * 0.9 + Double.random(in: -6...6, using: &generator)
            rowShade[y] = drift
        }
        let grain = (0..<(width / 16 + 2) * (height / 16 + 2)).map { _ in Double.random(in: -12...12, using: &generator) }
        let gridWidth = width / 16 + 2
        for y in plate.y..<(plate.y + plate.height) {
            for x in plate.x..<(plate.x + plate.width) {
                let gx = Double(x) / 16, gy = Double(y) / 16
                let x0 = Int(gx), y0 = Int(gy)
                let fx = gx - Double(x0), fy = gy - Double(y0)
                let noise =
                    (grain[y0 * gridWidth + x0] * (1 - fx) + grain[y0 * gridWidth + x0 + 1] * fx) * (1 - fy)
                    + (grain[(y0 + 1) * gridWidth + x0] * (1 - fx) + grain[(y0 + 1) * gridWidth + x0 + 1] * fx) * fy
                image[x, y] = UInt8(max(0, min(255, 150 + rowShade[y] + noise)))
            }
        }
        var features = Image8(validWidth: width, height: height)
        // Holes near three corners (not the fourth), so the pose is unambiguous.
        let holes = [(0.12, 0.15, 0.035), (0.88, 0.18, 0.03), (0.15, 0.85, 0.045), (0.5, 0.5, 0.06), (0.7, 0.62, 0.025)]
        for (u, v, r) in holes {
            disc(
                center: (Double(plate.x) + u * Double(plate.width), Double(plate.y) + v * Double(plate.height)),
                radius: r * Double(plate.height), part: &image, mask: &features, label: 1, shade: -110)
        }
        // An engraved "L" mark and a slot.
        let mx = Double(plate.x) + 0.3 * Double(plate.width), my = Double(plate.y) + 0.3 * Double(plate.height)
        stroke(from: (mx, my), to: (mx, my + 90), radius: 5, part: &image, mask: &features, label: 1, shade: -60)
        stroke(from: (mx, my + 90), to: (mx + 55, my + 90), radius: 5, part: &image, mask: &features, label: 1, shade: -60)
        stroke(from: (mx + 200, my + 20), to: (mx + 330, my + 60), radius: 9, part: &image, mask: &features, label: 1, shade: 50)
        return (image, features)
    }
}
