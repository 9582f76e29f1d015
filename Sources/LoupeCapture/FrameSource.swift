public import Foundation
public import LoupeImaging

/// One frame from a camera, a file, or the synthetic camera.
public struct CapturedFrame: Sendable {
    /// Counts frames from 1 per source.
    public var sequence: Int
    public var capturedAt: Date
    public var image: Image8
    /// Where it came from: a device path, a file path, or "synthetic".
    public var origin: String
    /// The true label mask, when the source knows it (the synthetic camera).
    public var groundTruth: Image8?

    public init(sequence: Int, capturedAt: Date = Date(), image: Image8, origin: String, groundTruth: Image8? = nil) {
        self.sequence = sequence
        self.capturedAt = capturedAt
        self.image = image
        self.origin = origin
        self.groundTruth = groundTruth
    }
}

/// Anything that produces frames: V4L2 cameras, file imports, the synthetic camera.
public protocol FrameSource: AnyObject, Sendable {
    /// The next frame, or nil when the source has no more (a finished import).
    func nextFrame() async throws -> CapturedFrame?
}

/// What makes a camera take a frame.
public enum CameraTrigger: Sendable, Equatable, Codable {
    /// The camera streams at its frame rate.
    case freeRun
    /// One frame per software trigger (`SoftwareTriggered.trigger()`, GenICam TriggerSoftware).
    case software
    /// One frame per edge on a hardware input (GenICam TriggerSource, e.g. "Line0").
    case line(String)

    /// How results, statistics and the config name it.
    public var name: String {
        switch self {
        case .freeRun: return "free-run"
        case .software: return "software"
        case .line(let line): return line
        }
    }

    /// The config's and the recipe's spelling: "free-run", "software", or an
    /// input line name of letters, digits, "-" and "_" ("Line0"); nil for anything else.
    public init?(name: String) {
        switch name {
        case "free-run": self = .freeRun
        case "software": self = .software
        default:
            guard !name.isEmpty, name.utf8.count <= 64,
                name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") })
            else { return nil }
            self = .line(name)
        }
    }

    /// What a refusal of a bad name says.
    public static let expected = "\"free-run\", \"software\" or an input line name such as \"Line0\""
}

/// A camera whose trigger mode can change while it runs (a recipe that asks for another).
public protocol TriggerConfigurable: Sendable {
    var triggerMode: CameraTrigger { get }
    /// Takes effect before the next frame: the camera is set up again in the new mode.
    func setTriggerMode(_ trigger: CameraTrigger)
}

/// A source that takes a frame when told to (a GenICam camera in software trigger mode).
public protocol SoftwareTriggered: Sendable {
    /// Whether `trigger()` takes a frame now (the camera is set to software triggering).
    var takesSoftwareTriggers: Bool { get }
    func trigger() throws
}

/// Why a source could not produce frames.
public enum CaptureError: Error, CustomStringConvertible, Equatable {
    case noFiles(pattern: String)
    case noDevice(path: String)
    case deviceBusy(path: String)
    case formatNotOffered(path: String, wanted: String, offered: [String])
    case unplugged(path: String)
    case timeout(path: String, milliseconds: Int)
    case device(path: String, reason: String)
    case invalidConfiguration(String)
    /// A GenICam camera that stopped answering; the source looks for it again on every call.
    case cameraLost(camera: String, reason: String)
    case cameraNotFound(camera: String, found: [String])
    /// The agent's config has no camera: what needs one is refused (409 over HTTP), the same way everywhere.
    case notConfigured
    /// A camera is configured but has not delivered its first frame (503 over HTTP: try again shortly).
    case noFrameYet
    /// A camera being set up again in another trigger mode: a trigger now is refused (503), to be sent again.
    case settingUp(camera: String, mode: String)
    /// A triggered camera's frame that arrived broken (packets lost beyond resend, or late), whose first packet came at
    /// `startedAt` (nil: the camera's driver did not say): the trigger it answers gets no inspection, and says why (a
    /// free-running camera takes the next frame).
    case incompleteFrame(camera: String, reason: String, startedAt: Date?)

    public var description: String {
        switch self {
        case .noFiles(let pattern): return "no PNG or JPEG files match \(pattern)"
        case .noDevice(let path): return "no camera at \(path)"
        case .deviceBusy(let path): return "camera \(path) is busy (another program is using it)"
        case .formatNotOffered(let path, let wanted, let offered):
            return "camera \(path) does not offer \(wanted); it offers \(offered.joined(separator: ", "))"
        case .unplugged(let path): return "camera \(path) was unplugged"
        case .timeout(let path, let milliseconds): return "camera \(path) sent no frame within \(milliseconds) ms"
        case .device(let path, let reason): return "camera \(path): \(reason)"
        case .invalidConfiguration(let reason): return reason
        case .cameraLost(let camera, let reason): return "camera lost: \(camera): \(reason)"
        case .notConfigured: return "this agent has no camera configured (its config has no camera section); import images instead"
        case .noFrameYet: return "the camera has not delivered a frame yet; try again in a moment"
        case .settingUp(let camera, let mode): return "camera \(camera) is being set up in \(mode) trigger mode; trigger again in a moment"
        case .incompleteFrame(let camera, let reason, _): return "camera \(camera) sent an incomplete frame (\(reason))"
        case .cameraNotFound(let camera, let found):
            return "no GigE Vision or USB3 Vision camera \(camera) found; "
                + (found.isEmpty
                    ? "none answered (is it powered, on this subnet, not opened by another program?)"
                    : "found \(found.joined(separator: ", "))")
        }
    }
}
