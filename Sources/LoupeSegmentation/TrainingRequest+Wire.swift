import Foundation
public import LoupeProto
import SwiftProtobuf

// The training messages of the wire and the engine's types, converted in one place. On the wire 0 means "not
// set" for iterations, the time budget and the seed, and a missing `augmentation` means the default.

extension TrainingRequest {
    /// What a `TrainingStart` asks for.
    public init(_ start: Loupe_V1_TrainingStart) {
        var augmentation: Augmentation?
        if start.hasAugmentation {
            let a = start.augmentation
            augmentation = Augmentation(
                flipHorizontal: a.flipHorizontal, flipVertical: a.flipVertical, rotationDegrees: Double(a.rotationDegrees),
                brightness: Double(a.brightness), contrast: Double(a.contrast))
        }
        self.init(
            iterations: start.iterations == 0 ? nil : Int(start.iterations),
            timeBudgetSeconds: start.timeBudgetSeconds == 0 ? nil : Double(start.timeBudgetSeconds),
            augmentation: augmentation, seed: start.seed == 0 ? nil : start.seed)
    }
}

extension Loupe_V1_TrainingStart {
    /// Asks for `request` on `inspectionType`. The wire counts the budget in whole seconds, so a budget is
    /// rounded up (half a second stays a budget, not "none").
    public init(inspectionType: String, request: TrainingRequest) {
        self.init()
        self.inspectionType = inspectionType
        iterations = request.iterations.map { UInt32(clamping: $0) } ?? 0
        // Out of range (negative, not finite) stays out of range, for the manager to refuse by name.
        timeBudgetSeconds = request.timeBudgetSeconds.map { $0 > 0 && $0 < 1e9 ? UInt32(max(1, $0.rounded(.up))) : .max } ?? 0
        seed = request.seed ?? 0
        if let a = request.augmentation {
            augmentation.flipHorizontal = a.flipHorizontal
            augmentation.flipVertical = a.flipVertical
            augmentation.rotationDegrees = Float(a.rotationDegrees)
            augmentation.brightness = Float(a.brightness)
            augmentation.contrast = Float(a.contrast)
        }
    }
}

extension Loupe_V1_TrainingProgress {
    /// Takes a trainer update's figures: pass, passes, loss, throughput, time left and, after a validation, the IoU.
    public mutating func take(_ update: TrainingProgress) {
        pass = UInt32(clamping: update.pass)
        passesTotal = UInt32(clamping: update.passes ?? 0)
        loss = update.loss
        imagesPerSecond = Float(update.imagesPerSecond)
        etaSeconds = Float(update.etaSeconds)
        if let iou = update.validationIoU {
            validationClassIou = iou
            validationMiou = update.validationMIoU ?? 0
        }
    }
}

extension PartFigures {
    public init(_ wire: Loupe_V1_PartFigures) {
        self.init(
            threshold: wire.threshold, minimumDefectPixels: Int(wire.minimumDefectPixels), defectiveParts: Int(wire.defectiveParts),
            goodParts: Int(wire.goodParts), escapes: Int(wire.escapes), falseRejects: Int(wire.falseRejects))
    }

    public var wire: Loupe_V1_PartFigures {
        .with {
            $0.threshold = threshold
            $0.minimumDefectPixels = UInt32(clamping: minimumDefectPixels)
            $0.defectiveParts = UInt32(clamping: defectiveParts)
            $0.goodParts = UInt32(clamping: goodParts)
            $0.escapes = UInt32(clamping: escapes)
            $0.falseRejects = UInt32(clamping: falseRejects)
        }
    }
}
