public import LoupeImaging

/// When an ROI (a part, as the line sees it) fails inspection: the one rule the live verdict, `loupe eval`'s part
/// figures and the training result's escape and false-reject rates all apply.
public struct FailRule: Codable, Sendable, Equatable {
    /// Fail when any one defect (a connected region of one class, at or above
    /// the confidence threshold) covers this many pixels or more.
    public var minimumDefectPixels: Int

    public init(minimumDefectPixels: Int = 25) {
        self.minimumDefectPixels = minimumDefectPixels
    }

    /// Whether a region of this many pixels is a defect that fails the part.
    public func counts(area: Int) -> Bool { area >= minimumDefectPixels }

    /// Whether an ROI with these defect regions fails.
    public func fails(_ regions: [MaskTools.Blob]) -> Bool {
        regions.contains { counts(area: $0.area) }
    }

    /// The classes of `mask` (0 is background) that have a region failing the part, ascending; empty: the part passes.
    public func failingClasses(_ mask: Image8) -> [Int] {
        Set(MaskTools.blobs(mask, measuringRadius: false).filter { counts(area: $0.area) }.map { Int($0.label) }).sorted()
    }
}
