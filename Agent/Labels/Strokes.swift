public import LoupeImaging
public import LoupeStorage

/// One brush or eraser stroke from the Label & Train page, in ROI pixel
/// coordinates: the compact delta the page sends instead of a whole mask.
public struct Stroke: Codable, Sendable, Equatable {
    public enum Tool: String, Codable, Sendable { case brush, eraser }

    public var tool: Tool
    /// The brush class (1…); ignored by the eraser.
    public var classIndex: Int
    /// Half the brush size, in pixels.
    public var radius: Double
    /// The pointer path: [[x, y], …]; one point is a dab.
    public var points: [[Double]]

    public init(tool: Tool, classIndex: Int = 1, radius: Double, points: [[Double]]) {
        self.tool = tool
        self.classIndex = classIndex
        self.radius = radius
        self.points = points
    }

    public static let maximumPoints = 20_000
    public static let maximumRadius = 256.0
}

/// Paints strokes into a class mask: every pixel whose centre lies within
/// `radius` of the stroke's path (a chain of capsules) takes the brush class,
/// or background for the eraser.
public enum MaskPainter {
    public static func apply(_ strokes: [Stroke], to mask: inout Image8, classes: Int) throws(StoreError) {
        for stroke in strokes { try validate(stroke, classes: classes) }
        for stroke in strokes {
            let value = stroke.tool == .brush ? UInt8(stroke.classIndex) : 0
            let points = stroke.points.map { ($0[0], $0[1]) }
            if points.count == 1 {
                paintCapsule(from: points[0], to: points[0], radius: stroke.radius, value: value, mask: &mask)
            }
            for index in points.indices.dropFirst() {
                paintCapsule(from: points[index - 1], to: points[index], radius: stroke.radius, value: value, mask: &mask)
            }
        }
    }

    static func validate(_ stroke: Stroke, classes: Int) throws(StoreError) {
        guard !stroke.points.isEmpty, stroke.points.count <= Stroke.maximumPoints else {
            throw .invalid("a stroke needs 1…\(Stroke.maximumPoints) points, not \(stroke.points.count)")
        }
        guard stroke.radius.isFinite, stroke.radius >= 0.5, stroke.radius <= Stroke.maximumRadius else {
            throw .invalid("brush radius must be 0.5…\(Int(Stroke.maximumRadius)) px, not \(stroke.radius)")
        }
        if stroke.tool == .brush, !(1..<classes).contains(stroke.classIndex) {
            throw .invalid("brush class \(stroke.classIndex) is not one of the defect classes 1…\(classes - 1)")
        }
        for point in stroke.points where point.count != 2 || !point.allSatisfy({ $0.isFinite && abs($0) < 1_000_000 }) {
            throw .invalid("a stroke point must be [x, y] with finite coordinates, not \(point)")
        }
    }

    private static func paintCapsule(from a: (Double, Double), to b: (Double, Double), radius: Double, value: UInt8, mask: inout Image8) {
        let minX = max(0, Int((min(a.0, b.0) - radius).rounded(.down)))
        let maxX = min(mask.width - 1, Int((max(a.0, b.0) + radius).rounded(.up)))
        let minY = max(0, Int((min(a.1, b.1) - radius).rounded(.down)))
        let maxY = min(mask.height - 1, Int((max(a.1, b.1) + radius).rounded(.up)))
        guard minX <= maxX, minY <= maxY else { return }
        let dx = b.0 - a.0, dy = b.1 - a.1
        let length2 = dx * dx + dy * dy
        let r2 = radius * radius
        for y in minY...maxY {
            for x in minX...maxX {
                // Pixel centres sit at half-integers.
                let px = Double(x) + 0.5, py = Double(y) + 0.5
                var t = length2 > 0 ? ((px - a.0) * dx + (py - a.1) * dy) / length2 : 0
                t = min(1, max(0, t))
                let ex = px - (a.0 + t * dx), ey = py - (a.1 + t * dy)
                if ex * ex + ey * ey <= r2 { mask.samples[y * mask.width + x] = value }
            }
        }
    }
}
