public import HTTPTypes
public import Hummingbird
public import LoupeCapture
public import LoupeImaging
public import LoupeSegmentation
public import LoupeStorage
public import LoupeVision
public import LoupeFraming
import LoupeWire

// What each error the agent's parts throw means over HTTP, decided once, on the error: a route just throws, and
// `SecurityHeadersMiddleware` turns any `HTTPResponseError` into its answer (`{"error":{"message":…}}`, the error's
// own description). An error nobody classified is a 500, logged. No route can forget the mapping.

/// An error whose HTTP answer is its status and its message (its description unless it says otherwise).
protocol DescribedHTTPError: HTTPResponseError, CustomStringConvertible {
    /// What the client reads.
    var message: String { get }
}

extension DescribedHTTPError {
    public func response(from request: Request, context: some RequestContext) throws -> Response {
        try HTTPError(status, message: message).response(from: request, context: context)
    }

    var message: String { description }
}

extension HTTPResponse.Status {
    static let insufficientStorage = HTTPResponse.Status(code: 507, reasonPhrase: "Insufficient Storage")
}

extension StoreError: HTTPResponseError, DescribedHTTPError {
    public var status: HTTPResponse.Status {
        switch self {
        case .invalid: .badRequest
        case .notFound: .notFound
        case .diskFull: .insufficientStorage
        default: .internalServerError
        }
    }

    var message: String {
        switch self {
        case .invalid(let why): why
        case .notFound(let what): "not found: \(what)"
        default: description
        }
    }
}

extension CaptureError: HTTPResponseError, DescribedHTTPError {
    /// No camera configured is the request's conflict with the agent's config; any other camera fault is the camera
    /// being unavailable.
    public var status: HTTPResponse.Status { self == .notConfigured ? .conflict : .serviceUnavailable }
}

extension TriggerError: HTTPResponseError, DescribedHTTPError {
    /// A trigger the camera's mode or state cannot take now; a frame the camera sent broken is the camera's fault (502).
    public var status: HTTPResponse.Status {
        if case .frameFailed = self { return .badGateway }
        return .conflict
    }
}

extension WandError: HTTPResponseError, DescribedHTTPError {
    public var status: HTTPResponse.Status { .badRequest }
}

extension TrainingJobError: HTTPResponseError, DescribedHTTPError {
    public var status: HTTPResponse.Status { self == .managerUnreachable ? .serviceUnavailable : .conflict }
}

extension ModelInstallError: HTTPResponseError, DescribedHTTPError {
    public var status: HTTPResponse.Status {
        switch self {
        case .noPreviousModel: .conflict
        case .io: .internalServerError
        default: .unprocessableContent
        }
    }
}

/// A model or a set the engine refuses: the request asked for something it cannot do with what it sent or chose.
extension SegmentationError: HTTPResponseError, DescribedHTTPError {
    public var status: HTTPResponse.Status { .unprocessableContent }
}

/// An image the codecs refuse.
extension ImageError: HTTPResponseError, DescribedHTTPError {
    public var status: HTTPResponse.Status { .unprocessableContent }
}

/// A template the aligner cannot use.
extension VisionError: HTTPResponseError, DescribedHTTPError {
    public var status: HTTPResponse.Status { .unprocessableContent }
}

/// The manager refused or could not be reached for something the page asked of it (training there, say).
extension WireError: HTTPResponseError, DescribedHTTPError {
    public var status: HTTPResponse.Status { .badGateway }
}
