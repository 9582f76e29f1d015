import Foundation
import LoupeCapture
public import LoupeImaging
public import LoupeStorage
public import LoupeVision

/// A named region of interest, in template coordinates.
public struct RecipeROI: Codable, Sendable, Equatable {
    public var name: String
    public var rect: PixelRect

    public init(name: String, rect: PixelRect) {
        self.name = name
        self.rect = rect
    }
}

/// What the camera inspects and how: set through the API, persisted with a
/// version number that every capture and model records.
public struct Recipe: Codable, Sendable, Equatable {
    public var version: Int
    public var inspectionType: String
    /// The capture whose image is the aligner's reference, and the template region in it.
    public var referenceCapture: Int?
    public var template: PixelRect?
    /// Rotations the aligner searches, degrees either way (AlignerConfiguration's default, 15, when unset).
    public var angleRangeDegrees: Double?
    /// Frames matching the template below this score (-1…1) are not inspected (the default, 0.5, when unset).
    public var minAlignScore: Double?
    public var rois: [RecipeROI]
    /// A defect pixel counts only at or above this softmax confidence.
    public var confidenceThreshold: Double
    public var failRule: FailRule
    /// What makes the camera take a frame for this recipe: "free-run", "software" or an input line ("Line0");
    /// nil: the camera config's `trigger`. GenICam cameras only.
    public var trigger: String?

    public init(
        version: Int = 0, inspectionType: String = "default", referenceCapture: Int? = nil, template: PixelRect? = nil,
        rois: [RecipeROI] = [], confidenceThreshold: Double = 0.5, failRule: FailRule = FailRule()
    ) {
        self.version = version
        self.inspectionType = inspectionType
        self.referenceCapture = referenceCapture
        self.template = template
        self.rois = rois
        self.confidenceThreshold = confidenceThreshold
        self.failRule = failRule
    }

    public static let maximumROIs = 64

    public func validate() throws(StoreError) {
        guard FleetName.isValid(inspectionType) else { throw .invalid(FleetName.refusal("inspection type", inspectionType)) }
        guard rois.count <= Self.maximumROIs else { throw .invalid("at most \(Self.maximumROIs) ROIs, not \(rois.count)") }
        guard Set(rois.map(\.name)).count == rois.count else { throw .invalid("ROI names must be unique") }
        for roi in rois {
            guard FleetName.isValid(roi.name) else { throw .invalid(FleetName.refusal("ROI name", roi.name)) }
            guard roi.rect.width >= 8, roi.rect.height >= 8, roi.rect.width <= 4096, roi.rect.height <= 4096 else {
                throw .invalid("ROI \(roi.name) is \(roi.rect.width)x\(roi.rect.height); each side must be 8…4096 px")
            }
        }
        if let template, template.width < 16 || template.height < 16 {
            throw .invalid("the aligner template must be at least 16x16 px")
        }
        if let range = angleRangeDegrees, !(range.isFinite && (0...180).contains(range)) {
            throw .invalid("the aligner's rotation range must be 0…180 degrees, not \(range)")
        }
        if let score = minAlignScore, !(score.isFinite && (-1...1).contains(score)) {
            throw .invalid("the aligner's minimum score must be -1…1, not \(score)")
        }
        guard confidenceThreshold.isFinite, (0...1).contains(confidenceThreshold) else {
            throw .invalid("confidence threshold must be between 0 and 1, not \(confidenceThreshold)")
        }
        guard failRule.minimumDefectPixels >= 1 else { throw .invalid("the fail rule needs at least 1 px") }
        if let trigger, CameraTrigger(name: trigger) == nil {
            throw .invalid("trigger must be \(CameraTrigger.expected), not \"\(trigger.prefix(64))\"")
        }
    }

    /// The aligner's settings for this recipe, when it has a template.
    public var alignerConfiguration: AlignerConfiguration? {
        guard let template else { return nil }
        var configuration = AlignerConfiguration(template: template)
        if let angleRangeDegrees { configuration.angleRangeDegrees = angleRangeDegrees }
        if let minAlignScore { configuration.minScore = minAlignScore }
        return configuration
    }

    public func roi(named name: String) throws(StoreError) -> RecipeROI {
        guard let roi = rois.first(where: { $0.name == name }) else { throw .notFound("ROI \"\(name)\" in recipe version \(version)") }
        return roi
    }
}
