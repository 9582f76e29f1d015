public import LoupeImaging

/// One ROI of one capture, at one rectangle (a moved ROI is another image):
/// what the wand's features and sessions and the model's suggestions are kept by.
public struct CaptureROI: Hashable, Sendable, CustomStringConvertible {
    public var capture: Int
    public var roi: String
    public var rect: PixelRect

    public init(capture: Int, roi: String, rect: PixelRect) {
        self.capture = capture
        self.roi = roi
        self.rect = rect
    }

    public var description: String { "\(capture)/\(roi)@\(rect.x),\(rect.y),\(rect.width)x\(rect.height)" }
}
