/// Why the segmentation engine refused or stopped, naming the cause (and the
/// file, where there is one).
public enum SegmentationError: Error, Equatable, CustomStringConvertible {
    case invalidConfiguration(String)
    /// A training request asks for something out of range.
    case invalidRequest(String)
    case invalidModel(String)
    case invalidInput(String)
    /// A mask whose size differs from its image's.
    case maskSizeMismatch(file: String, image: String, mask: String)
    /// A mask pixel names a class the model does not have.
    case classOutOfRange(file: String, value: Int, classes: Int)
    case unreadableFile(file: String, reason: String)
    case emptyDataset(String)
    /// No pixel of any image is labelled as a defect.
    case noLabelledPixels(String)
    /// The loss became NaN or infinite; training stopped and kept the last good model.
    case nonFiniteLoss(iteration: Int)
    case cancelled
    case modelFile(file: String, reason: String)
    /// The file's signature is missing, invalid, or by a key the reader does not trust.
    case signatureRefused(file: String, reason: String)
    case engine(String)

    public var description: String {
        switch self {
        case .invalidConfiguration(let why): "invalid network configuration: \(why)"
        case .invalidRequest(let why): "invalid training request: \(why)"
        case .invalidModel(let why): "invalid model: \(why)"
        case .invalidInput(let why): "invalid input: \(why)"
        case .maskSizeMismatch(let file, let image, let mask): "\(file): mask is \(mask) but its image is \(image)"
        case .classOutOfRange(let file, let value, let classes):
            "\(file): mask value \(value) is beyond the model's \(classes) classes (0…\(classes - 1))"
        case .unreadableFile(let file, let reason): "\(file): cannot read: \(reason)"
        case .emptyDataset(let why): "empty dataset: \(why)"
        case .noLabelledPixels(let what): "\(what): no pixel is labelled as a defect, so there is nothing to learn"
        case .nonFiniteLoss(let iteration):
            "the loss became NaN or infinite at iteration \(iteration); training stopped and the last good model was kept"
        case .cancelled: "training was cancelled"
        case .modelFile(let file, let reason), .signatureRefused(let file, let reason): "model file \(file): \(reason)"
        case .engine(let why): "segmentation engine: \(why)"
        }
    }
}

extension SegmentationError {
    init(_ error: DNNLError) { self = .engine(error.description) }
}
