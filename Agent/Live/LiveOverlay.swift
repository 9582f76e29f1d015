public import Foundation
public import LoupeImaging
import LoupeVision

/// Draws what the live pipeline found onto its frame, for the stream: each
/// ROI's outline (green when it passed, red when it failed, grey when not
/// judged) and its defect pixels tinted with their class colours.
public enum LiveOverlay {
    public static let passColor = RGB(40, 200, 80)
    public static let failColor = RGB(230, 40, 40)
    public static let idleColor = RGB(160, 160, 160)

    public static func render(_ latest: LivePipeline.Latest, colors: [RGB], opacity: Double = 0.5) throws -> Image8 {
        let image = latest.image
        let outcome = latest.outcome
        var out = try Image8(width: image.width, height: image.height, channels: 3)
        for index in 0..<image.pixelCount {
            let base =
                image.channels == 1
                ? (image.samples[index], image.samples[index], image.samples[index])
                : (image.samples[index * 3], image.samples[index * 3 + 1], image.samples[index * 3 + 2])
            out.samples[index * 3] = base.0
            out.samples[index * 3 + 1] = base.1
            out.samples[index * 3 + 2] = base.2
        }
        let alpha = min(1, max(0, opacity))
        func paint(_ x: Int, _ y: Int, _ color: RGB, _ weight: Double) {
            guard x >= 0, y >= 0, x < out.width, y < out.height else { return }
            let index = (y * out.width + x) * 3
            out.samples[index] = UInt8((Double(out.samples[index]) * (1 - weight) + Double(color.r) * weight).rounded())
            out.samples[index + 1] = UInt8((Double(out.samples[index + 1]) * (1 - weight) + Double(color.g) * weight).rounded())
            out.samples[index + 2] = UInt8((Double(out.samples[index + 2]) * (1 - weight) + Double(color.b) * weight).rounded())
        }
        for (number, region) in outcome.regions.enumerated() {
            let toFrame = outcome.pose.composed(after: region.toReference)
            if number < outcome.masks.count, let mask = outcome.masks[number] {
                for y in 0..<mask.height {
                    for x in 0..<mask.width where mask[x, y] != 0 {
                        let label = Int(mask[x, y])
                        let color = label < colors.count ? colors[label] : failColor
                        let point = toFrame.apply(Double(x), Double(y))
                        paint(Int(point.x.rounded()), Int(point.y.rounded()), color, alpha)
                    }
                }
            }
            let verdict: RGB
            if number < outcome.result.rois.count, outcome.masks.indices.contains(number), outcome.masks[number] != nil {
                verdict = outcome.result.rois[number].passed ? passColor : failColor
            } else {
                verdict = idleColor
            }
            // The outline, two pixels wide.
            let w = Double(region.width - 1), h = Double(region.height - 1)
            let corners = [(0.0, 0.0), (w, 0), (w, h), (0, h)]
            for side in 0..<4 {
                let (ax, ay) = corners[side], (bx, by) = corners[(side + 1) % 4]
                let steps = Int(max(abs(bx - ax), abs(by - ay)))
                for step in 0...steps {
                    let t = Double(step) / Double(max(1, steps))
                    for inset in 0..<2 {
                        let ix = ax + (bx - ax) * t + (side == 1 ? -Double(inset) : side == 3 ? Double(inset) : 0)
                        let iy = ay + (by - ay) * t + (side == 0 ? Double(inset) : side == 2 ? -Double(inset) : 0)
                        let point = toFrame.apply(ix, iy)
                        paint(Int(point.x.rounded()), Int(point.y.rounded()), verdict, 1)
                    }
                }
            }
        }
        return out
    }

    /// The overlay as a JPEG, scaled down to at most `maxWidth` pixels wide.
    public static func jpeg(_ latest: LivePipeline.Latest, colors: [RGB], maxWidth: Int, quality: Int = 80) throws -> Data {
        var image = try render(latest, colors: colors)
        if image.width > maxWidth {
            let height = max(1, image.height * maxWidth / image.width)
            image = try image.resizedArea(width: maxWidth, height: height)
        }
        return try JPEGCodec.encode(image, quality: quality)
    }
}
