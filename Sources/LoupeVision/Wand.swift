import Foundation
import LoupeImaging

/// The AI wand: from one clicked patch, the mask of the region it belongs
/// to and of every other area of the image that looks like it, whether or
/// not it touches the click.
///
/// 1. The patch's level (median of the 3x3 around the click) and the level of
///    its surroundings (median of a ring around it) set a band around the
///    patch's level reaching `tolerance` of the way to the surroundings' (0.5:
///    half way, where the edge of a step lies), on both sides.
/// 2. The region is grown from the click over pixels inside the band.
/// 3. Elsewhere, every compact region inside the band,
///    from a tenth to ten times the clicked region's size, whose contrast
///    with its own border is like the clicked region's, is added: the
///    similar areas that do not touch it. Large regions (shading, the belt)
///    are not.
public struct Wand: Sendable {
    public enum Mode: Sendable {
        case add
        case remove
    }

    /// Radius of the ring the surroundings are read from, pixels.
    public var ringRadius: Int

    public init(ringRadius: Int = 20) {
        self.ringRadius = ringRadius
    }

    /// The selection (255 where selected) for a click at (x, y).
    public func select(_ image: Image8, x: Int, y: Int, tolerance: Double) -> Image8 {
        let grey = image.channels == 1 ? image : DecodedImage.rgb8(image).gray8
        let width = grey.width, height = grey.height
        func level(_ points: [(Int, Int)]) -> Double {
            let values = points.compactMap { px, py -> UInt8? in
                guard px >= 0, py >= 0, px < width, py < height else { return nil }
                return grey[px, py]
            }.sorted()
            return values.isEmpty ? 0 : Double(values[values.count / 2])
        }
        let patch = level((-1...1).flatMap { dy in (-1...1).map { dx in (x + dx, y + dy) } })
        let ring = level((0..<72).map { step in
            let angle = Double(step) * .pi / 36
            return (x + Int((Double(ringRadius) * cos(angle)).rounded()), y + Int((Double(ringRadius) * sin(angle)).rounded()))
        })
        // A band around the patch's level, reaching `tolerance` of the way to
        // the surroundings' level on both sides: far darker (or brighter)
        // areas, such as the belt beside the part, are not the same thing.
        let reach = abs(ring - patch) * max(0, min(1, tolerance))
        var inside = try! Image8(width: width, height: height)
        for index in grey.samples.indices where abs(Double(grey.samples[index]) - patch) <= reach {
            inside.samples[index] = 1
        }
        var selection = try! Image8(width: width, height: height)
        let blobs = MaskTools.blobs(inside)
        guard let clicked = blobs.first(where: { $0.pixels.contains(y * width + x) }) else { return selection }
        let clickedContrast = Self.borderContrast(clicked, grey: grey)
        for blob in blobs {
            let similar = blob.pixels == clicked.pixels || (
                blob.area * 10 >= clicked.area && blob.area <= clicked.area * 10
                && abs(Self.borderContrast(blob, grey: grey) - clickedContrast) <= abs(clickedContrast) * 0.5
            )
            guard similar else { continue }
            for index in blob.pixels { selection.samples[index] = 255 }
        }
        return selection
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
            throw ImageError.maskSizeMismatch(imageWidth: mask.width, imageHeight: mask.height, maskWidth: selection.width, maskHeight: selection.height)
        }
        var out = mask
        for index in out.samples.indices where selection.samples[index] != 0 {
            out.samples[index] = mode == .add ? label : 0
        }
        return out
    }
}
