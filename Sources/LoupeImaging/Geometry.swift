import Foundation

/// An axis-aligned rectangle in pixel coordinates.
public struct PixelRect: Sendable, Equatable, Hashable, Codable {
    public var x: Int
    public var y: Int
    public var width: Int
    public var height: Int

    public init(x: Int, y: Int, width: Int, height: Int) {
        self.x = x
        self.y = y
        self.width = width
        self.height = height
    }
}

/// Scale, rotation and translation: a point p maps to scale * R(angle) * p + (tx, ty).
/// Angles are in radians, counter-clockwise in image coordinates (y down),
/// which looks clockwise on screen.
public struct SimilarityTransform: Sendable, Equatable {
    public var scale: Double
    public var angle: Double
    public var tx: Double
    public var ty: Double

    public static let identity = SimilarityTransform(scale: 1, angle: 0, tx: 0, ty: 0)

    public init(scale: Double = 1, angle: Double = 0, tx: Double = 0, ty: Double = 0) {
        self.scale = scale
        self.angle = angle
        self.tx = tx
        self.ty = ty
    }

    /// A rotation by `angle` about `center`, then a shift by (dx, dy).
    public static func rotation(
        _ angle: Double, about center: (x: Double, y: Double), shift: (dx: Double, dy: Double) = (0, 0)
    ) -> SimilarityTransform {
        let c = cos(angle), s = sin(angle)
        return SimilarityTransform(
            scale: 1, angle: angle,
            tx: center.x - (c * center.x - s * center.y) + shift.dx,
            ty: center.y - (s * center.x + c * center.y) + shift.dy
        )
    }

    public func apply(_ x: Double, _ y: Double) -> (x: Double, y: Double) {
        let c = scale * cos(angle), s = scale * sin(angle)
        return (c * x - s * y + tx, s * x + c * y + ty)
    }

    public var inverse: SimilarityTransform {
        let inverseScale = 1 / scale
        let c = inverseScale * cos(-angle), s = inverseScale * sin(-angle)
        return SimilarityTransform(scale: inverseScale, angle: -angle, tx: -(c * tx - s * ty), ty: -(s * tx + c * ty))
    }

    /// This transform after `other`: p -> self(other(p)).
    public func composed(after other: SimilarityTransform) -> SimilarityTransform {
        let (tx, ty) = apply(other.tx, other.ty)
        return SimilarityTransform(scale: scale * other.scale, angle: angle + other.angle, tx: tx, ty: ty)
    }
}

extension Raster {
    /// The pixels inside `rect`, which must lie within the image.
    public func cropped(to rect: PixelRect) throws -> Raster {
        guard rect.width > 0, rect.height > 0, rect.x >= 0, rect.y >= 0,
            rect.x + rect.width <= width, rect.y + rect.height <= height
        else {
            throw ImageError.outOfBounds(rect: rect, width: width, height: height)
        }
        var out = [Sample]()
        out.reserveCapacity(rect.width * rect.height * channels)
        for row in rect.y..<(rect.y + rect.height) {
            let start = (row * width + rect.x) * channels
            out.append(contentsOf: samples[start..<(start + rect.width * channels)])
        }
        return try Raster(width: rect.width, height: rect.height, channels: channels, samples: out)
    }

    /// Mirrored left to right.
    public func flippedHorizontally() -> Raster {
        var out = self
        for y in 0..<height {
            for x in 0..<width {
                for c in 0..<channels { out[x, y, c] = self[width - 1 - x, y, c] }
            }
        }
        return out
    }

    /// Mirrored top to bottom.
    public func flippedVertically() -> Raster {
        var out = self
        let rowLength = width * channels
        for y in 0..<height {
            let source = (height - 1 - y) * rowLength
            out.samples.replaceSubrange(y * rowLength..<(y + 1) * rowLength, with: samples[source..<(source + rowLength)])
        }
        return out
    }

    /// Turned by a multiple of 90 degrees (clockwise on screen), exactly.
    public func rotated(quarterTurns: Int) -> Raster {
        let turns = ((quarterTurns % 4) + 4) % 4
        guard turns != 0 else { return self }
        if turns == 2 { return flippedHorizontally().flippedVertically() }
        var out = Raster(validWidth: height, height: width, channels: channels)
        for y in 0..<height {
            for x in 0..<width {
                let (nx, ny) = turns == 1 ? (height - 1 - y, x) : (y, width - 1 - x)
                for c in 0..<channels { out[nx, ny, c] = self[x, y, c] }
            }
        }
        return out
    }
}

extension Raster where Sample == UInt8 {
    /// Bilinear sample at a sub-pixel position (pixel centres at integers);
    /// `fill` outside the image.
    @inline(__always)
    public func bilinear(_ x: Double, _ y: Double, channel: Int = 0, fill: Double = 0) -> Double {
        guard x > -1, y > -1, x < Double(width), y < Double(height) else { return fill }
        let x0 = Int(floor(x)), y0 = Int(floor(y))
        let fx = x - Double(x0), fy = y - Double(y0)
        func at(_ px: Int, _ py: Int) -> Double {
            guard px >= 0, py >= 0, px < width, py < height else { return fill }
            return Double(samples[(py * width + px) * channels + channel])
        }
        let top = at(x0, y0) * (1 - fx) + at(x0 + 1, y0) * fx
        let bottom = at(x0, y0 + 1) * (1 - fx) + at(x0 + 1, y0 + 1) * fx
        return top * (1 - fy) + bottom * fy
    }

    /// An image of `width` x `height` whose pixel p is this image at
    /// `transform.inverse(p)`: the picture moved by `transform`. Bilinear; `fill` outside.
    public func warped(by transform: SimilarityTransform, width outWidth: Int, height outHeight: Int, fill: UInt8 = 0) throws -> Raster {
        warped(by: transform, into: try Raster(width: outWidth, height: outHeight, channels: channels, fill: fill), fill: fill)
    }

    /// `warped` into a picture of this one's own size (which cannot fail).
    public func warped(by transform: SimilarityTransform, fill: UInt8 = 0) -> Raster {
        warped(by: transform, into: Raster(validWidth: width, height: height, channels: channels, fill: fill), fill: fill)
    }

    private func warped(by transform: SimilarityTransform, into blank: Raster, fill: UInt8) -> Raster {
        let inverse = transform.inverse
        var out = blank
        let outWidth = out.width, outHeight = out.height
        let c = inverse.scale * cos(inverse.angle), s = inverse.scale * sin(inverse.angle)
        let width = self.width, height = self.height, channels = self.channels
        samples.withUnsafeBufferPointer { source in
            out.samples.withUnsafeMutableBufferPointer { pixels in
                for y in 0..<outHeight {
                    var sx = -s * Double(y) + inverse.tx
                    var sy = c * Double(y) + inverse.ty
                    for x in 0..<outWidth {
                        // Truncation is the floor here (both are >= 0), and cheaper than libm's.
                        let x0 = Int(sx), y0 = Int(sy)
                        if sx >= 0, sy >= 0, x0 + 1 < width, y0 + 1 < height {
                            // All four neighbours inside: the common case, without bounds checks.
                            let fx = sx - Double(x0), fy = sy - Double(y0)
                            let top = (y0 * width + x0) * channels, bottom = top + width * channels
                            for channel in 0..<channels {
                                let upper = Double(source[top + channel]) * (1 - fx) + Double(source[top + channels + channel]) * fx
                                let lower = Double(source[bottom + channel]) * (1 - fx) + Double(source[bottom + channels + channel]) * fx
                                // A blend of values in 0...255 stays in it; + 0.5 and truncation round it.
                                pixels[(y * outWidth + x) * channels + channel] = UInt8(min(255, upper * (1 - fy) + lower * fy + 0.5))
                            }
                        } else {
                            for channel in 0..<channels {
                                let value = bilinear(sx, sy, channel: channel, fill: Double(fill))
                                pixels[(y * outWidth + x) * channels + channel] = UInt8(min(255, max(0, value.rounded())))
                            }
                        }
                        sx += c
                        sy += s
                    }
                }
            }
        }
        return out
    }

    /// Like `warped`, but each output pixel takes its nearest source pixel:
    /// for label masks, whose values are classes, not intensities.
    public func warpedNearest(
        by transform: SimilarityTransform, width outWidth: Int, height outHeight: Int, fill: UInt8 = 0
    ) throws -> Raster {
        warpedNearest(by: transform, into: try Raster(width: outWidth, height: outHeight, channels: channels, fill: fill))
    }

    /// `warpedNearest` into a mask of this one's own size (which cannot fail).
    public func warpedNearest(by transform: SimilarityTransform, fill: UInt8 = 0) -> Raster {
        warpedNearest(by: transform, into: Raster(validWidth: width, height: height, channels: channels, fill: fill))
    }

    private func warpedNearest(by transform: SimilarityTransform, into blank: Raster) -> Raster {
        let inverse = transform.inverse
        var out = blank
        for y in 0..<out.height {
            for x in 0..<out.width {
                let (sx, sy) = inverse.apply(Double(x), Double(y))
                let ix = Int(sx.rounded()), iy = Int(sy.rounded())
                guard ix >= 0, iy >= 0, ix < width, iy < height else { continue }
                for channel in 0..<channels { out[x, y, channel] = self[ix, iy, channel] }
            }
        }
        return out
    }

    /// Resized with bilinear interpolation (pixel centres aligned).
    public func resizedBilinear(width outWidth: Int, height outHeight: Int) throws -> Raster {
        var out = try Raster(width: outWidth, height: outHeight, channels: channels)
        let scaleX = Double(width) / Double(outWidth), scaleY = Double(height) / Double(outHeight)
        for y in 0..<outHeight {
            let sy = min(Double(height - 1), max(0, (Double(y) + 0.5) * scaleY - 0.5))
            for x in 0..<outWidth {
                let sx = min(Double(width - 1), max(0, (Double(x) + 0.5) * scaleX - 0.5))
                for channel in 0..<channels {
                    out[x, y, channel] = UInt8(bilinear(sx, sy, channel: channel).rounded())
                }
            }
        }
        return out
    }

    /// Half the width and height, each pixel the mean of a 2x2 block (an odd
    /// last row or column is dropped): one pyramid step, exact and fast.
    public func halved() throws -> Raster {
        let outWidth = max(1, width / 2), outHeight = max(1, height / 2)
        var out = try Raster(width: outWidth, height: outHeight, channels: channels)
        guard width >= 2, height >= 2 else { return try resizedArea(width: outWidth, height: outHeight) }
        let channels = self.channels, width = self.width
        samples.withUnsafeBufferPointer { source in
            out.samples.withUnsafeMutableBufferPointer { target in
                for y in 0..<outHeight {
                    let top = 2 * y * width * channels, bottom = top + width * channels
                    let row = y * outWidth * channels
                    for x in 0..<outWidth {
                        for c in 0..<channels {
                            let left = 2 * x * channels + c, right = left + channels
                            let sum =
                                UInt32(source[top + left]) + UInt32(source[top + right]) + UInt32(source[bottom + left])
                                + UInt32(source[bottom + right])
                            target[row + x * channels + c] = UInt8((sum + 2) / 4)
                        }
                    }
                }
            }
        }
        return out
    }

    /// Resized by area averaging: each output pixel is the mean of the source
    /// area it covers (the right filter for shrinking).
    public func resizedArea(width outWidth: Int, height outHeight: Int) throws -> Raster {
        // Separable: rows first into Doubles, then columns.
        let horizontal = Self.areaWeights(from: width, to: outWidth)
        let vertical = Self.areaWeights(from: height, to: outHeight)
        var rows = [Double](repeating: 0, count: height * outWidth * channels)
        for y in 0..<height {
            for (x, weights) in horizontal.enumerated() {
                for channel in 0..<channels {
                    var sum = 0.0
                    for (source, weight) in weights { sum += Double(self[source, y, channel]) * weight }
                    rows[(y * outWidth + x) * channels + channel] = sum
                }
            }
        }
        var out = try Raster(width: outWidth, height: outHeight, channels: channels)
        for (y, weights) in vertical.enumerated() {
            for x in 0..<outWidth {
                for channel in 0..<channels {
                    var sum = 0.0
                    for (source, weight) in weights { sum += rows[(source * outWidth + x) * channels + channel] * weight }
                    out[x, y, channel] = UInt8(min(255, max(0, sum.rounded())))
                }
            }
        }
        return out
    }

    /// For each output index, the source indices it covers and their weights (summing to 1).
    private static func areaWeights(from source: Int, to target: Int) -> [[(Int, Double)]] {
        let ratio = Double(source) / Double(target)
        return (0..<target).map { index in
            let start = Double(index) * ratio, end = start + ratio
            var weights: [(Int, Double)] = []
            var position = Int(floor(start))
            while Double(position) < end && position < source {
                let covered = min(end, Double(position + 1)) - max(start, Double(position))
                if covered > 1e-12 { weights.append((position, covered / ratio)) }
                position += 1
            }
            return weights
        }
    }

    /// out = (in - 128) * contrast + 128 + brightness * 255, clamped.
    public func adjusted(brightness: Double = 0, contrast: Double = 1) -> Raster {
        var out = self
        let offset = 128 + brightness * 255
        out.samples = samples.map { UInt8(min(255, max(0, ((Double($0) - 128) * contrast + offset).rounded()))) }
        return out
    }
}

/// An RGB colour for a class.
public struct RGB: Sendable, Equatable, Hashable {
    public var r: UInt8
    public var g: UInt8
    public var b: UInt8

    public init(_ r: UInt8, _ g: UInt8, _ b: UInt8) {
        self.r = r
        self.g = g
        self.b = b
    }
}

extension Raster where Sample == UInt8 {
    /// The image in RGB with each labelled pixel (mask value > 0) tinted with
    /// its class colour at `opacity` (0 shows the image, 1 the colour).
    public func overlay(mask: Image8, colors: [RGB], opacity: Double) throws -> Image8 {
        guard mask.width == width, mask.height == height, mask.channels == 1 else {
            throw ImageError.maskSizeMismatch(imageWidth: width, imageHeight: height, maskWidth: mask.width, maskHeight: mask.height)
        }
        let alpha = min(1, max(0, opacity))
        var out = try Image8(width: width, height: height, channels: 3)
        for index in 0..<(width * height) {
            let base: (Double, Double, Double) =
                channels == 1
                ? (Double(samples[index]), Double(samples[index]), Double(samples[index]))
                : (Double(samples[index * 3]), Double(samples[index * 3 + 1]), Double(samples[index * 3 + 2]))
            let label = Int(mask.samples[index])
            if label > 0, label < colors.count {
                let color = colors[label]
                out.samples[index * 3] = UInt8((base.0 * (1 - alpha) + Double(color.r) * alpha).rounded())
                out.samples[index * 3 + 1] = UInt8((base.1 * (1 - alpha) + Double(color.g) * alpha).rounded())
                out.samples[index * 3 + 2] = UInt8((base.2 * (1 - alpha) + Double(color.b) * alpha).rounded())
            } else {
                out.samples[index * 3] = UInt8(base.0)
                out.samples[index * 3 + 1] = UInt8(base.1)
                out.samples[index * 3 + 2] = UInt8(base.2)
            }
        }
        return out
    }
}
