import Foundation
public import LoupeImaging
import Synchronization

/// Hands out frames already in memory, in a loop: as a camera's driver hands
/// over a filled buffer. The pipeline benchmark renders synthetic frames
/// into one of these first, so the figures time the pipeline, not the
/// renderer.
public final class FrameReplay: FrameSource {
    public let images: [Image8]
    public let origin: String
    private let sequence = Mutex(0)

    public init(images: [Image8], origin: String) throws {
        guard !images.isEmpty else { throw CaptureError.invalidConfiguration("a replay needs at least one frame") }
        self.images = images
        self.origin = origin
    }

    public func nextFrame() async throws -> CapturedFrame? {
        let number = sequence.withLock { value -> Int in
            value += 1
            return value
        }
        return CapturedFrame(sequence: number, image: images[(number - 1) % images.count], origin: origin)
    }
}
