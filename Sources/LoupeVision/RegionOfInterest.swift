import Foundation
public import LoupeImaging

/// A rectangle, optionally rotated, defined in the reference (template)
/// image's coordinates. After alignment it is cut out of each frame through
/// the found pose, so a label drawn on it stays on the part when the part moves.
public struct RegionOfInterest: Sendable, Equatable, Codable {
    public var name: String
    /// Centre in reference-image pixel coordinates.
    public var centerX: Double
    public var centerY: Double
    public var width: Int
    public var height: Int
    /// Rotation of the rectangle in the reference image, degrees.
    public var angleDegrees: Double

    public init(name: String, centerX: Double, centerY: Double, width: Int, height: Int, angleDegrees: Double = 0) {
        self.name = name
        self.centerX = centerX
        self.centerY = centerY
        self.width = width
        self.height = height
        self.angleDegrees = angleDegrees
    }

    /// An unrotated ROI covering `rect` of the reference image.
    public init(name: String, rect: PixelRect) {
        self.init(
            name: name, centerX: Double(rect.x) + Double(rect.width - 1) / 2, centerY: Double(rect.y) + Double(rect.height - 1) / 2,
            width: rect.width, height: rect.height)
    }

    /// Maps the ROI's own pixel coordinates (origin top-left) to reference coordinates.
    public var toReference: SimilarityTransform {
        SimilarityTransform.rotation(
            angleDegrees * .pi / 180, about: (Double(width - 1) / 2, Double(height - 1) / 2),
            shift: (centerX - Double(width - 1) / 2, centerY - Double(height - 1) / 2))
    }

    /// The ROI cut from a frame whose part sits at `pose` (bilinear).
    public func crop(_ frame: Image8, pose: SimilarityTransform) throws -> Image8 {
        try frame.warped(by: pose.composed(after: toReference).inverse, width: width, height: height)
    }

    /// The ROI cut from a label mask (nearest neighbour, so classes stay classes).
    public func cropMask(_ mask: Image8, pose: SimilarityTransform) throws -> Image8 {
        try mask.warpedNearest(by: pose.composed(after: toReference).inverse, width: width, height: height)
    }
}
