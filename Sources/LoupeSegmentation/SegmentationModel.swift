public import Crypto
public import Foundation
public import LoupeImaging
import LoupeProto
import SwiftProtobuf
import LoupeStorage
import LoupeVision

/// A class the model predicts: index 0 is background.
public struct ClassInfo: Codable, Sendable, Equatable {
    public var name: String
    public var color: UInt32

    public init(name: String, color: UInt32) {
        self.name = name
        self.color = color
    }

    public var rgb: RGB { RGB(UInt8((color >> 16) & 0xFF), UInt8((color >> 8) & 0xFF), UInt8(color & 0xFF)) }

    /// Background plus `count - 1` defects with distinct colours.
    public static func defaults(count: Int, names: [String] = []) -> [ClassInfo] {
        let palette: [UInt32] = [0x000000, 0xE6194B, 0x3CB44B, 0xFFE119, 0x4363D8, 0xF58231, 0x911EB4, 0x46F0F0, 0xF032E6]
        return (0..<count).map { index in
            let name = index < names.count ? names[index] : (index == 0 ? "background" : "defect \(index)")
            return ClassInfo(name: name, color: palette[index % palette.count])
        }
    }
}

/// How 8-bit pixels become network input: `(v / 255 - mean[c]) / std[c]`.
public struct InputNormalization: Codable, Sendable, Equatable {
    public var mean: [Float]
    public var std: [Float]

    public init(mean: [Float], std: [Float]) {
        self.mean = mean
        self.std = std
    }

    public static func identity(channels: Int) -> InputNormalization {
        InputNormalization(mean: [Float](repeating: 0.5, count: channels), std: [Float](repeating: 0.25, count: channels))
    }

    /// Planar (C×H×W) normalised floats from an 8-bit image.
    public func planar(_ image: Image8, channels: Int) throws(SegmentationError) -> [Float] {
        guard image.channels == channels else {
            throw .invalidInput("the model takes \(channels)-channel images; this one has \(image.channels)")
        }
        guard mean.count == channels, std.count == channels else {
            throw .invalidModel("normalisation has \(mean.count) means and \(std.count) deviations for \(channels) channels")
        }
        let pixels = image.width * image.height
        var out = [Float](repeating: 0, count: channels * pixels)
        image.samples.withUnsafeBufferPointer { samples in
            for c in 0..<channels {
                let scale = 1 / (255 * std[c]), offset = -mean[c] / std[c]
                for p in 0..<pixels { out[c * pixels + p] = Float(samples[p * channels + c]) * scale + offset }
            }
        }
        return out
    }
}

/// What the model scored and how it was made.
public struct ModelMetadata: Sendable, Equatable {
    public var validationIoU: [Float] = []
    public var validationMIoU: Float = 0
    public var finalLoss: Float = 0
    public var passes = 0
    public var iterations = 0
    public var trainingSeconds: Double = 0
    public var trainingImages = 0
    public var validationImages = 0
    /// The confidence threshold where the defect classes' mean IoU on the validation split is highest; 0: none
    /// (no validation split).
    public var calibratedThreshold: Float = 0
    /// The validation split's precision, recall and IoU per class over the threshold, lowest first.
    public var calibration: [ThresholdPoint] = []
    /// The validation split's parts judged by the fail rule over the same thresholds; nil: no validation split.
    public var parts: PartVerdicts?
    /// Each pass's mean loss and validation mIoU, first pass first.
    public var history: [PassRecord] = []
    /// The kept model's confusion matrix on the validation split; nil without one.
    public var validationConfusion: ConfusionMatrix?
    public var trainingConfigJSON = ""
    public var datasetSHA256 = ""
    public var createdAt = Date(timeIntervalSince1970: 0)
    public var version: UInt64 = 0
    public var parentVersion: UInt64 = 0
    public var description = ""
    /// Provenance the manager's registry signs in (empty/0 on local models).
    public var provenance = ModelProvenance()

    public init() {}
}

/// One pass of training as the model file records it.
public struct PassRecord: Sendable, Equatable, Codable {
    public var pass: Int
    public var loss: Float
    /// nil: the pass was not validated (no validation split).
    public var validationMIoU: Float?

    public init(pass: Int, loss: Float, validationMIoU: Float?) {
        (self.pass, self.loss, self.validationMIoU) = (pass, loss, validationMIoU)
    }
}

/// Who a manager-signed model is for and where it stands: signed with the
/// rest of the payload, so an offer cannot relabel, retarget or replay it.
public struct ModelProvenance: Sendable, Equatable {
    public var inspectionType = ""
    public var versionName = ""
    /// The registry's monotonic counter at publication.
    public var sequence: UInt64 = 0

    public init(inspectionType: String = "", versionName: String = "", sequence: UInt64 = 0) {
        self.inspectionType = inspectionType
        self.versionName = versionName
        self.sequence = sequence
    }
}

/// A trained network with everything needed to run it and account for it.
public struct SegmentationModel: Sendable, Equatable {
    public var weights: Weights
    public var classes: [ClassInfo]
    public var normalization: InputNormalization
    public var metadata: ModelMetadata

    public init(
        weights: Weights, classes: [ClassInfo]? = nil, normalization: InputNormalization? = nil, metadata: ModelMetadata = ModelMetadata()
    ) {
        self.weights = weights
        self.classes = classes ?? ClassInfo.defaults(count: weights.configuration.classes)
        self.normalization = normalization ?? .identity(channels: weights.configuration.inputChannels)
        self.metadata = metadata
    }

    public var configuration: UNetConfiguration { weights.configuration }
}

/// Who signed a model file, if anyone.
public enum ModelSignatureStatus: Sendable, Equatable {
    case unsigned
    /// Signed by this raw Ed25519 public key, and the signature checks out.
    case signed(publicKey: Data)
}

/// Reads and writes model files (`Proto/model.proto`; see docs/model-format.md).
public enum ModelFile {
    public static let magic = Data("LOUPEMDL".utf8)
    public static let formatVersion: UInt32 = 1

    /// Serialises the model; signs the payload when a key is given.
    public static func encode(_ model: SegmentationModel, signingKey: Curve25519.Signing.PrivateKey? = nil) throws -> Data {
        let payload = try payload(of: model).serializedData()
        var file = Loupe_Model_V1_ModelFile()
        file.formatVersion = formatVersion
        file.payload = payload
        file.payloadSha256 = Data(SHA256.hash(data: payload))
        if let signingKey { file.signature = try signature(over: payload, with: signingKey) }
        return magic + (try file.serializedData())
    }

    /// Adds (or replaces) the signature of an encoded model without touching its payload.
    public static func sign(_ data: Data, with key: Curve25519.Signing.PrivateKey, name: String = "model") throws -> Data {
        var file = try container(data, name: name)
        file.signature = try signature(over: file.payload, with: key)
        return magic + (try file.serializedData())
    }

    /// The one way a payload is signed: Ed25519, with the signer's public key.
    static func signature(over payload: Data, with key: Curve25519.Signing.PrivateKey) throws -> Loupe_Model_V1_Signature {
        var signature = Loupe_Model_V1_Signature()
        signature.algorithm = "ed25519"
        signature.publicKey = key.publicKey.rawRepresentation
        signature.signature = try key.signature(for: payload)
        return signature
    }

    /// Writes the registry's provenance (and version number) into an encoded
    /// model's payload and signs it: the signature covers them with the weights.
    public static func sign(
        _ data: Data, with key: Curve25519.Signing.PrivateKey, provenance: ModelProvenance, version: UInt64,
        name: String = "model"
    ) throws -> Data {
        var file = try container(data, name: name)
        var payload: Loupe_Model_V1_ModelPayload
        do { payload = try Loupe_Model_V1_ModelPayload(serializedBytes: file.payload) } catch {
            throw SegmentationError.modelFile(file: name, reason: "payload does not parse: \(error)")
        }
        payload.inspectionType = provenance.inspectionType
        payload.versionName = provenance.versionName
        payload.sequence = provenance.sequence
        payload.version = version
        file.payload = try payload.serializedData()
        file.payloadSha256 = Data(SHA256.hash(data: file.payload))
        file.signature = try signature(over: file.payload, with: key)
        return magic + (try file.serializedData())
    }

    /// Parses and checks a model file. With `trustedKeys`, the file must be signed by one of them.
    public static func decode(
        _ data: Data, name: String = "model", trustedKeys: [Curve25519.Signing.PublicKey]? = nil
    ) throws(SegmentationError) -> (SegmentationModel, ModelSignatureStatus) {
        let file = try container(data, name: name)
        let status: ModelSignatureStatus
        if file.hasSignature {
            let signature = file.signature
            guard signature.algorithm == "ed25519" else {
                throw .signatureRefused(
                    file: name, reason: "signature algorithm \"\(signature.algorithm)\" is not supported (only ed25519)")
            }
            guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: signature.publicKey) else {
                throw .signatureRefused(file: name, reason: "the signature's public key is not a valid Ed25519 key")
            }
            guard key.isValidSignature(signature.signature, for: file.payload) else {
                throw .signatureRefused(file: name, reason: "the signature does not match the payload (tampered, or signed by another key)")
            }
            status = .signed(publicKey: signature.publicKey)
        } else {
            status = .unsigned
        }
        if let trustedKeys {
            guard case .signed(let publicKey) = status else {
                throw .signatureRefused(file: name, reason: "the model is not signed, and this reader accepts only signed models")
            }
            guard trustedKeys.contains(where: { $0.rawRepresentation == publicKey }) else {
                throw .signatureRefused(file: name, reason: "signed by key \(publicKey.prefix(8).hexString)…, which is not a trusted key")
            }
        }
        let payload: Loupe_Model_V1_ModelPayload
        do {
            payload = try Loupe_Model_V1_ModelPayload(serializedBytes: file.payload)
        } catch {
            throw .modelFile(file: name, reason: "payload does not parse: \(error)")
        }
        return (try model(from: payload, name: name), status)
    }

    public static func read(
        path: String, trustedKeys: [Curve25519.Signing.PublicKey]? = nil
    ) throws(SegmentationError) -> (SegmentationModel, ModelSignatureStatus) {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw .unreadableFile(file: path, reason: (error as NSError).localizedDescription)
        }
        return try decode(data, name: path, trustedKeys: trustedKeys)
    }

    /// Writes atomically (temporary file, then rename), so a crash never leaves half a model.
    public static func write(_ model: SegmentationModel, to path: String, signingKey: Curve25519.Signing.PrivateKey? = nil) throws {
        try encode(model, signingKey: signingKey).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    private static func container(_ data: Data, name: String) throws(SegmentationError) -> Loupe_Model_V1_ModelFile {
        guard data.count >= magic.count, data.prefix(magic.count) == magic else {
            throw .modelFile(file: name, reason: data.isEmpty ? "the file is empty" : "not a Loupe model (no LOUPEMDL header)")
        }
        let file: Loupe_Model_V1_ModelFile
        do {
            file = try Loupe_Model_V1_ModelFile(serializedBytes: data.dropFirst(magic.count))
        } catch {
            throw .modelFile(file: name, reason: "truncated or corrupt container (\(error))")
        }
        guard file.formatVersion == formatVersion else {
            throw .modelFile(
                file: name,
                reason: "format version \(file.formatVersion) is unknown to this Loupe (it reads version \(formatVersion)); upgrade Loupe")
        }
        guard Data(SHA256.hash(data: file.payload)) == file.payloadSha256 else {
            throw .modelFile(file: name, reason: "payload SHA-256 does not match (the file is truncated or was altered)")
        }
        return file
    }

    static func payload(of model: SegmentationModel) -> Loupe_Model_V1_ModelPayload {
        var payload = Loupe_Model_V1_ModelPayload()
        let c = model.configuration
        payload.architecture = .with {
            $0.kind = "unet"
            $0.inputChannels = UInt32(c.inputChannels)
            $0.classes = UInt32(c.classes)
            $0.baseWidth = UInt32(c.baseWidth)
            $0.depth = UInt32(c.depth)
        }
        payload.tensors = (model.weights.parameters + model.weights.buffers).map { tensor in
            .with {
                $0.name = tensor.name
                $0.shape = tensor.shape.map(UInt32.init)
                $0.float32Le = tensor.values.withUnsafeBufferPointer { Data(buffer: $0) }
            }
        }
        payload.classes = model.classes.map { info in
            .with {
                $0.name = info.name; $0.rgb = info.color
            }
        }
        payload.normalization = .with {
            $0.mean = model.normalization.mean; $0.std = model.normalization.std
        }
        let m = model.metadata
        payload.trainingConfigJson = m.trainingConfigJSON
        payload.datasetSha256 = m.datasetSHA256
        payload.createdAtMs = Int64((m.createdAt.timeIntervalSince1970 * 1000).rounded())
        payload.version = m.version
        payload.parentVersion = m.parentVersion
        payload.description_p = m.description
        payload.inspectionType = m.provenance.inspectionType
        payload.versionName = m.provenance.versionName
        payload.sequence = m.provenance.sequence
        payload.metrics = .with {
            $0.validationIou = m.validationIoU
            $0.validationMiou = m.validationMIoU
            $0.finalLoss = m.finalLoss
            $0.passes = UInt32(m.passes)
            $0.iterations = UInt32(m.iterations)
            $0.trainingSeconds = m.trainingSeconds
            $0.trainingImages = UInt32(m.trainingImages)
            $0.validationImages = UInt32(m.validationImages)
            $0.calibratedThreshold = m.calibratedThreshold
            $0.calibration = m.calibration.map { point in
                .with {
                    $0.threshold = point.threshold
                    $0.precision = point.precision
                    $0.recall = point.recall
                    $0.iou = point.iou
                }
            }
            if let parts = m.parts {
                $0.parts = .with {
                    $0.minimumDefectPixels = UInt32(clamping: parts.rule.minimumDefectPixels)
                    $0.goodParts = UInt32(clamping: parts.goodParts)
                    $0.defectiveParts = parts.defectiveParts.map { UInt32(clamping: $0) }
                    $0.curve = parts.curve.map { point in
                        .with {
                            $0.threshold = point.threshold
                            $0.escapes = point.escapes.map { UInt32(clamping: $0) }
                            $0.falseRejects = point.falseRejects.map { UInt32(clamping: $0) }
                        }
                    }
                }
            }
            $0.validationConfusion = m.validationConfusion?.counts.map { UInt64(clamping: $0) } ?? []
            $0.history = m.history.map { record in
                .with {
                    $0.pass = UInt32(clamping: record.pass)
                    $0.loss = record.loss
                    $0.validated = record.validationMIoU != nil
                    $0.validationMiou = record.validationMIoU ?? 0
                }
            }
        }
        return payload
    }

    static func model(from payload: Loupe_Model_V1_ModelPayload, name: String) throws(SegmentationError) -> SegmentationModel {
        let a = payload.architecture
        guard a.kind == "unet" else { throw .modelFile(file: name, reason: "architecture \"\(a.kind)\" is unknown (expected unet)") }
        let configuration = UNetConfiguration(
            inputChannels: Int(a.inputChannels), classes: Int(a.classes), baseWidth: Int(a.baseWidth), depth: Int(a.depth))
        do { try configuration.validate() } catch { throw .modelFile(file: name, reason: error.description) }
        var tensors: [NamedTensor] = []
        for tensor in payload.tensors {
            let shape = tensor.shape.map(Int.init)
            let count = shape.reduce(1, *)
            guard tensor.float32Le.count == count * 4 else {
                throw .modelFile(file: name, reason: "tensor \(tensor.name) has \(tensor.float32Le.count) bytes for shape \(shape)")
            }
            let values = tensor.float32Le.withUnsafeBytes { raw in
                (0..<count).map { raw.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self) }
            }
            tensors.append(NamedTensor(name: tensor.name, shape: shape, values: values))
        }
        let parameterCount = configuration.parameterShapes.count
        guard tensors.count >= parameterCount else {
            throw .modelFile(file: name, reason: "\(tensors.count) tensors, expected \(parameterCount + configuration.bufferShapes.count)")
        }
        let weights: Weights
        do {
            weights = try Weights(
                configuration: configuration, parameters: Array(tensors.prefix(parameterCount)),
                buffers: Array(tensors.dropFirst(parameterCount)))
        } catch {
            throw .modelFile(file: name, reason: error.description)
        }
        guard weights.isFinite else { throw .modelFile(file: name, reason: "weights contain NaN or infinity") }
        let classes = payload.classes.map { ClassInfo(name: $0.name, color: $0.rgb) }
        guard classes.isEmpty || classes.count == configuration.classes else {
            throw .modelFile(file: name, reason: "\(classes.count) class names for \(configuration.classes) classes")
        }
        var metadata = ModelMetadata()
        let m = payload.metrics
        metadata.validationIoU = m.validationIou
        metadata.validationMIoU = m.validationMiou
        metadata.finalLoss = m.finalLoss
        metadata.passes = Int(m.passes)
        metadata.iterations = Int(m.iterations)
        metadata.trainingSeconds = m.trainingSeconds
        metadata.trainingImages = Int(m.trainingImages)
        metadata.validationImages = Int(m.validationImages)
        // Read by the page's slider and by `loupe eval`: a threshold outside 0…1 or a curve of another class count is a
        // broken file, refused by name.
        guard m.calibratedThreshold.isFinite, (0...1).contains(m.calibratedThreshold) else {
            throw .modelFile(file: name, reason: "calibrated threshold \(m.calibratedThreshold) is not between 0 and 1")
        }
        for point in m.calibration {
            let counts = [point.precision.count, point.recall.count, point.iou.count]
            guard point.threshold.isFinite, (0...1).contains(point.threshold), counts.allSatisfy({ $0 == configuration.classes }) else {
                throw .modelFile(
                    file: name,
                    reason: "calibration point at threshold \(point.threshold) has \(counts) figures for \(configuration.classes) classes")
            }
        }
        if m.hasParts {
            let p = m.parts
            guard
                let parts = PartVerdicts(
                    classes: configuration.classes, rule: FailRule(minimumDefectPixels: Int(p.minimumDefectPixels)),
                    goodParts: Int(p.goodParts),
                    defectiveParts: p.defectiveParts.map(Int.init),
                    curve: p.curve.map {
                        PartPoint(threshold: $0.threshold, escapes: $0.escapes.map(Int.init), falseRejects: $0.falseRejects.map(Int.init))
                    })
            else {
                throw .modelFile(
                    file: name,
                    reason: "the part verdicts do not fit \(configuration.classes) classes (or count more parts than were judged)")
            }
            metadata.parts = parts
        }
        if !m.validationConfusion.isEmpty {
            guard m.validationConfusion.count == configuration.classes * configuration.classes,
                m.validationConfusion.allSatisfy({ $0 <= UInt64(Int.max) })
            else {
                throw .modelFile(
                    file: name,
                    reason: "a validation confusion matrix of \(m.validationConfusion.count) cells for \(configuration.classes) classes")
            }
            metadata.validationConfusion = ConfusionMatrix(classes: configuration.classes, counts: m.validationConfusion.map { Int($0) })
        }
        metadata.history = m.history.map {
            PassRecord(pass: Int($0.pass), loss: $0.loss, validationMIoU: $0.validated ? $0.validationMiou : nil)
        }
        metadata.calibratedThreshold = m.calibratedThreshold
        metadata.calibration = m.calibration.map {
            ThresholdPoint(threshold: $0.threshold, precision: $0.precision, recall: $0.recall, iou: $0.iou)
        }
        metadata.trainingConfigJSON = payload.trainingConfigJson
        metadata.datasetSHA256 = payload.datasetSha256
        metadata.createdAt = Date(timeIntervalSince1970: Double(payload.createdAtMs) / 1000)
        metadata.version = payload.version
        metadata.parentVersion = payload.parentVersion
        metadata.description = payload.description_p
        metadata.provenance = ModelProvenance(
            inspectionType: payload.inspectionType, versionName: payload.versionName, sequence: payload.sequence)
        let normalization =
            payload.hasNormalization
            ? InputNormalization(mean: payload.normalization.mean, std: payload.normalization.std)
            : InputNormalization.identity(channels: configuration.inputChannels)
        guard normalization.mean.count == configuration.inputChannels, normalization.std.count == configuration.inputChannels,
            normalization.std.allSatisfy({ $0 > 0 })
        else {
            throw .modelFile(file: name, reason: "input normalisation does not fit \(configuration.inputChannels) channels")
        }
        return SegmentationModel(
            weights: weights, classes: classes.isEmpty ? nil : classes, normalization: normalization, metadata: metadata)
    }
}
