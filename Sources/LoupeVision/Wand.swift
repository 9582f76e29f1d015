import Foundation
public import LoupeImaging

/// The AI wand: from one clicked patch, the mask of the region it belongs
/// to and of every other area of the image that looks like it, whether or
/// not it touches the click.
///
/// 1. Each pixel's departure from the part's local surface: the image minus
///    a wide median (thin and small defects do not move it; the belt and a
///    drilled hole are their own surface, so they depart only at their rim).
/// 2. A band of departures the same way as the clicked patch's, from
///    (1 − tolerance) to (1 + 2 × tolerance) of it; the region is grown from
///    the click over it.
/// 3. Elsewhere, every region in the band of a comparable size (a tenth to
///    ten times), departure, contrast with its own border and thickness,
///    and not lying mostly along the image's edge, is added.
/// A click on an area as wide as the surface itself (a large stain) has no
/// departure to speak of; there the band is of grey levels, half way to a
/// ring around the click.
public struct Wand: Sendable {
    public enum Mode: Sendable {
        case add
        case remove
    }

    /// Radius of the surroundings, pixels: the median that gives the local
    /// surface spans about twice this; the fallback reads a ring this far out.
    public var ringRadius: Int

    public init(ringRadius: Int = 20) {
        self.ringRadius = ringRadius
    }

    /// The selection (255 where selected) for a click at (x, y).
    public func select(_ image: Image8, x: Int, y: Int, tolerance: Double) -> Image8 {
        let grey = image.channels == 1 ? image : DecodedImage.rgb8(image).gray8
        let width = grey.width, height = grey.height
        var selection = Image8(validWidth: width, height: height)
        guard x >= 0, y >= 0, x < width, y < height else { return selection }
        let tolerance = max(0, min(1, tolerance))
        // Each pixel's departure from the part's local surface: defects are
        // small and thin against the surface, so a wide median does not see
        // them, while large dark or bright areas (the belt, a drilled hole)
        // are their own background and depart from it only at their rim.
        let background = Self.localBackground(grey, radius: ringRadius)
        var residual = [Float](repeating: 0, count: width * height)
        for index in residual.indices { residual[index] = Float(grey.samples[index]) - background[index] }
        func median(_ values: [Float]) -> Float {
            let sorted = values.sorted()
            return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
        }
        let around = (-1...1).flatMap { dy in (-1...1).map { dx in (x + dx, y + dy) } }
            .filter { $0.0 >= 0 && $0.1 >= 0 && $0.0 < width && $0.1 < height }
        let patchDeparture = median(around.map { residual[$0.1 * width + $0.0] })
        let inside: Image8
        if abs(patchDeparture) >= Self.minimumDeparture {
            // Pixels departing the same way by at least (1 − tolerance) of
            // the patch's departure (0.5: half way, where the edge of a step
            // lies), and by at most (1 + 2 × tolerance) of it: a defect is
            // seldom even, and a darker (or brighter) part of it is still it.
            let near = abs(patchDeparture) * Float(1 - tolerance), far = abs(patchDeparture) * Float(1 + 2 * tolerance)
            let sign: Float = patchDeparture < 0 ? -1 : 1
            var band = Image8(validWidth: width, height: height)
            for index in residual.indices {
                let departure = residual[index] * sign
                if departure >= near && departure <= far { band.samples[index] = 1 }
            }
            inside = band
        } else {
            // The click is on an area as wide as the surface around it (a
            // large stain, a whole patch): compare grey levels with a ring
            // around the click instead.
            let ringValues = (0..<72).compactMap { step -> Float? in
                let angle = Double(step) * .pi / 36
                let px = x + Int((Double(ringRadius) * cos(angle)).rounded()), py = y + Int((Double(ringRadius) * sin(angle)).rounded())
                guard px >= 0, py >= 0, px < width, py < height else { return nil }
                return Float(grey.samples[py * width + px])
            }
            let level = median(around.map { Float(grey.samples[$0.1 * width + $0.0]) })
            let reach = abs(median(ringValues) - level) * Float(tolerance)
            var band = Image8(validWidth: width, height: height)
            for index in grey.samples.indices where abs(Float(grey.samples[index]) - level) <= reach { band.samples[index] = 1 }
            inside = band
        }
        let blobs = MaskTools.blobs(inside)
        guard let clickedIndex = blobs.firstIndex(where: { $0.pixels.contains(y * width + x) }) else { return selection }
        let clicked = blobs[clickedIndex]
        func meanDeparture(_ blob: MaskTools.Blob) -> Float {
            blob.pixels.reduce(Float(0)) { $0 + residual[$1] } / Float(blob.area)
        }
        let clickedDeparture = meanDeparture(clicked)
        let clickedContrast = Self.borderContrast(clicked, grey: grey)
        for (index, blob) in blobs.enumerated() {
            // Like the clicked region: of a comparable size, departing from
            // the surface as much, standing out from its own border as much
            // (which a strip along the rim of a large dark area does not),
            // and as thick (its inscribed radius: a spot is not a crack); and
            // seen whole, not largely along the image's edge (a strip of the
            // belt there), where neither its shape nor its contrast can be judged.
            let similar =
                index == clickedIndex
                || (abs(clickedDeparture) >= Self.minimumDeparture
                    && Self.shareNearImageEdge(blob, width: width, height: height) < 0.15
                    && blob.area * 10 >= clicked.area && blob.area <= clicked.area * 10
                    && abs(meanDeparture(blob) - clickedDeparture) <= abs(clickedDeparture) * 0.2
                    && abs(Self.borderContrast(blob, grey: grey) - clickedContrast) <= abs(clickedContrast) * 0.5
                    && (0.5...2).contains(blob.inscribedRadius / max(0.5, clicked.inscribedRadius)))
            guard similar else { continue }
            for pixel in blob.pixels { selection.samples[pixel] = 255 }
        }
        return selection
    }

    /// Departures from the local surface smaller than this (grey levels) are
    /// texture and noise, not a defect of their own.
    static let minimumDeparture: Float = 12

    /// The local surface under each pixel: the median of a square of side
    /// about 2 × `radius` + 1, computed at a quarter of the resolution
    /// (Huang's sliding histogram) and interpolated back.
    static func localBackground(_ grey: Image8, radius: Int) -> [Float] {
        let factor = 4
        let width = grey.width, height = grey.height
        let smallWidth = max(1, width / factor), smallHeight = max(1, height / factor)
        var small = [Int](repeating: 0, count: smallWidth * smallHeight)
        grey.samples.withUnsafeBufferPointer { source in
            for sy in 0..<smallHeight {
                for sx in 0..<smallWidth {
                    var sum = 0, count = 0
                    for y in (sy * factor)..<min(height, sy * factor + factor) {
                        for x in (sx * factor)..<min(width, sx * factor + factor) { sum += Int(source[y * width + x]); count += 1 }
                    }
                    small[sy * smallWidth + sx] = (sum + count / 2) / max(1, count)
                }
            }
        }
        let r = max(1, radius / factor)
        var medians = [Float](repeating: 0, count: smallWidth * smallHeight)
        var histogram = [Int](repeating: 0, count: 256)
        small.withUnsafeBufferPointer { small in
            histogram.withUnsafeMutableBufferPointer { histogram in
                for sy in 0..<smallHeight {
                    let top = max(0, sy - r), bottom = min(smallHeight - 1, sy + r)
                    for level in 0..<256 { histogram[level] = 0 }
                    var count = 0
                    for column in 0...min(smallWidth - 1, r) {
                        for row in top...bottom { histogram[small[row * smallWidth + column]] += 1; count += 1 }
                    }
                    // The median: `below` values lie under `level`, and half the count falls in its bin.
                    var level = 0, below = 0
                    for sx in 0..<smallWidth {
                        if sx > 0 {
                            let leaving = sx - r - 1, entering = sx + r
                            if leaving >= 0 {
                                for row in top...bottom {
                                    let value = small[row * smallWidth + leaving]
                                    histogram[value] -= 1; count -= 1
                                    if value < level { below -= 1 }
                                }
                            }
                            if entering < smallWidth {
                                for row in top...bottom {
                                    let value = small[row * smallWidth + entering]
                                    histogram[value] += 1; count += 1
                                    if value < level { below += 1 }
                                }
                            }
                        }
                        let half = count / 2
                        while below > half { level -= 1; below -= histogram[level] }
                        while below + histogram[level] <= half { below += histogram[level]; level += 1 }
                        medians[sy * smallWidth + sx] = Float(level)
                    }
                }
            }
        }
        var out = [Float](repeating: 0, count: width * height)
        let offset = Float(factor - 1) / 2
        for y in 0..<height {
            let fy = max(0, min(Float(smallHeight - 1), (Float(y) - offset) / Float(factor)))
            let y0 = Int(fy), y1 = min(smallHeight - 1, y0 + 1), wy = fy - Float(y0)
            for x in 0..<width {
                let fx = max(0, min(Float(smallWidth - 1), (Float(x) - offset) / Float(factor)))
                let x0 = Int(fx), x1 = min(smallWidth - 1, x0 + 1), wx = fx - Float(x0)
                let upper = medians[y0 * smallWidth + x0] * (1 - wx) + medians[y0 * smallWidth + x1] * wx
                let lower = medians[y1 * smallWidth + x0] * (1 - wx) + medians[y1 * smallWidth + x1] * wx
                out[y * width + x] = upper * (1 - wy) + lower * wy
            }
        }
        return out
    }

    /// The share of the region's pixels within 6 px of the image's edge.
    private static func shareNearImageEdge(_ blob: MaskTools.Blob, width: Int, height: Int) -> Double {
        let margin = 6
        let near = blob.pixels.count { index in
            let x = index % width, y = index / width
            return x < margin || y < margin || x >= width - margin || y >= height - margin
        }
        return Double(near) / Double(blob.area)
    }

    /// Mean level inside the region minus the mean level of the pixels just outside it.
    private static func borderContrast(_ blob: MaskTools.Blob, grey: Image8) -> Double {
        let width = grey.width, height = grey.height
        let members = Set(blob.pixels)
        var insideSum = 0.0, outsideSum = 0.0, outsideCount = 0.0
        var seen = Set<Int>()
        for index in blob.pixels {
            insideSum += Double(grey.samples[index])
            let x = index % width, y = index / width
            for (dx, dy) in [(-2, 0), (2, 0), (0, -2), (0, 2)] {
                let nx = x + dx, ny = y + dy
                guard nx >= 0, ny >= 0, nx < width, ny < height else { continue }
                let neighbour = ny * width + nx
                if !members.contains(neighbour) && seen.insert(neighbour).inserted {
                    outsideSum += Double(grey.samples[neighbour])
                    outsideCount += 1
                }
            }
        }
        return insideSum / Double(blob.area) - (outsideCount > 0 ? outsideSum / outsideCount : 0)
    }

    /// Applies a selection to a label mask: `.add` paints it with `label`,
    /// `.remove` clears it.
    public static func apply(_ selection: Image8, to mask: Image8, label: UInt8, mode: Mode) throws -> Image8 {
        guard selection.width == mask.width, selection.height == mask.height else {
            throw ImageError.maskSizeMismatch(
                imageWidth: mask.width, imageHeight: mask.height, maskWidth: selection.width, maskHeight: selection.height)
        }
        var out = mask
        for index in out.samples.indices where selection.samples[index] != 0 {
            out.samples[index] = mode == .add ? label : 0
        }
        return out
    }
}
