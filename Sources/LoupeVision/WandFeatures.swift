import Foundation
public import LoupeImaging

/// The per-pixel features the learned wand classifies, computed once per
/// image (ilastik's pixel-classification set): at scales from 0.7 to 10 px,
/// Gaussian smoothing, gradient magnitude, Laplacian of Gaussian, the two
/// Hessian eigenvalues and the two structure-tensor eigenvalues, of the image
/// with its grey levels normalised (median 0, robust spread 1) so that
/// features of one camera's images compare across lighting.
///
/// Stored one plane per feature (`planes[f * pixelCount + i]`), with each
/// feature's mean and spread over the image: the classifier works in
/// standardised units, the planes stay raw.
public struct WandFeatures: Sendable {
    public let width: Int
    public let height: Int
    /// Raw feature values, feature-major.
    public let planes: [Float]
    /// Per feature: mean and standard deviation over the image.
    public let means: [Float]
    public let deviations: [Float]

    public static let scales: [Float] = [0.7, 1.6, 3.5, 5, 10]
    /// Radii of the local surfaces (wide medians) a pixel departs from.
    public static let surfaceRadii = [10, 20]
    /// Smoothing at every scale; six more at each scale from 1.6 on; the
    /// departures from the local surfaces.
    public static let count = scales.count + 6 * (scales.count - 1) + surfaceRadii.count

    public var pixelCount: Int { width * height }
    /// An all-zero image of the features' size (a selection to fill in).
    public let blank: Image8

    /// One pixel's standardised feature vector.
    public func vector(at index: Int) -> [Float] {
        (0..<Self.count).map { (planes[$0 * pixelCount + index] - means[$0]) / deviations[$0] }
    }

    /// The features of `image` (grey or RGB; RGB is read as grey), on the
    /// calling thread (so at its priority).
    public init(_ image: Image8) {
        let grey = image.channels == 1 ? image : DecodedImage.rgb8(image).gray8
        let width = grey.width, height = grey.height
        self.width = width
        self.height = height
        var blank = grey
        blank.samples = Array(repeating: 0, count: grey.samples.count)
        self.blank = blank
        let n = width * height
        let normalised = Self.normalise(grey)
        var planes = [Float](repeating: 0, count: n * Self.count)
        var next = 0
        var finerGradient: (x: [Float], y: [Float])?
        planes.withUnsafeMutableBufferPointer { out in
            for scale in Self.scales {
                let smooth = Self.gaussian(normalised, width: width, height: height, sigma: scale)
                out.baseAddress!.advanced(by: next * n).update(from: smooth, count: n)
                next += 1
                let derivatives = Self.derivatives(smooth, width: width, height: height)
                defer { finerGradient = (derivatives.gx, derivatives.gy) }
                guard scale >= 1 else { continue }
                let gradient = out.baseAddress!.advanced(by: next * n)
                let laplacian = gradient.advanced(by: n)
                let hessianHigh = laplacian.advanced(by: n), hessianLow = hessianHigh.advanced(by: n)
                for i in 0..<n {
                    let gx = derivatives.gx[i], gy = derivatives.gy[i]
                    gradient[i] = (gx * gx + gy * gy).squareRoot()
                    let xx = derivatives.xx[i], yy = derivatives.yy[i], xy = derivatives.xy[i]
                    laplacian[i] = xx + yy
                    let half = (xx + yy) / 2, spread = (((xx - yy) / 2) * ((xx - yy) / 2) + xy * xy).squareRoot()
                    hessianHigh[i] = half + spread
                    hessianLow[i] = half - spread
                }
                next += 4
                // The structure tensor: products of the finer scale's
                // gradient, averaged at this scale.
                let (fx, fy) = finerGradient ?? (derivatives.gx, derivatives.gy)
                var jxx = [Float](repeating: 0, count: n), jyy = jxx, jxy = jxx
                for i in 0..<n { jxx[i] = fx[i] * fx[i]; jyy[i] = fy[i] * fy[i]; jxy[i] = fx[i] * fy[i] }
                jxx = Self.gaussian(jxx, width: width, height: height, sigma: scale)
                jyy = Self.gaussian(jyy, width: width, height: height, sigma: scale)
                jxy = Self.gaussian(jxy, width: width, height: height, sigma: scale)
                let tensorHigh = out.baseAddress!.advanced(by: next * n), tensorLow = tensorHigh.advanced(by: n)
                for i in 0..<n {
                    let half = (jxx[i] + jyy[i]) / 2,
                        spread = (((jxx[i] - jyy[i]) / 2) * ((jxx[i] - jyy[i]) / 2) + jxy[i] * jxy[i]).squareRoot()
                    tensorHigh[i] = half + spread
                    tensorLow[i] = half - spread
                }
                next += 2
            }
            // The departure from the part's local surface (what the
            // rule-based wand reads): thin and small defects do not move a
            // wide median.
            for radius in Self.surfaceRadii {
                let surface = Wand.localBackground(grey, radius: radius)
                let departure = out.baseAddress!.advanced(by: next * n)
                for i in 0..<n { departure[i] = Float(grey.samples[i]) - surface[i] }
                next += 1
            }
        }
        var means = [Float](repeating: 0, count: Self.count), deviations = means
        for f in 0..<Self.count {
            var sum = 0.0, squares = 0.0
            for i in 0..<n {
                let value = Double(planes[f * n + i])
                sum += value
                squares += value * value
            }
            let mean = sum / Double(max(1, n))
            means[f] = Float(mean)
            deviations[f] = Float(max(1e-6, (squares / Double(max(1, n)) - mean * mean).squareRoot()))
        }
        self.planes = planes
        self.means = means
        self.deviations = deviations
    }

    /// Grey levels minus their median, over 1.4826 × the median absolute
    /// deviation plus one (so a flat image is not blown up).
    static func normalise(_ grey: Image8) -> [Float] {
        var histogram = [Int](repeating: 0, count: 256)
        for sample in grey.samples { histogram[Int(sample)] += 1 }
        func median(_ histogram: [Int]) -> Int {
            var seen = 0
            let half = (histogram.reduce(0, +) + 1) / 2
            for (level, count) in histogram.enumerated() {
                seen += count
                if seen >= half { return level }
            }
            return 0
        }
        let center = median(histogram)
        var deviationHistogram = [Int](repeating: 0, count: 256)
        for (level, count) in histogram.enumerated() { deviationHistogram[abs(level - center)] += count }
        let spread = 1.4826 * Float(median(deviationHistogram)) + 1
        return grey.samples.map { (Float($0) - Float(center)) / spread }
    }

    /// Separable Gaussian of standard deviation `sigma` (truncated at 3σ),
    /// borders replicated.
    static func gaussian(_ input: [Float], width: Int, height: Int, sigma: Float) -> [Float] {
        let radius = max(1, Int((3 * sigma).rounded(.up)))
        var kernel = (-radius...radius).map { exp(-Float($0 * $0) / (2 * sigma * sigma)) }
        let total = kernel.reduce(0, +)
        kernel = kernel.map { $0 / total }
        var vertical = [Float](repeating: 0, count: width * height)
        var out = vertical
        input.withUnsafeBufferPointer { source in
            vertical.withUnsafeMutableBufferPointer { vertical in
                kernel.withUnsafeBufferPointer { kernel in
                    let source = source.baseAddress!, target = vertical.baseAddress!, k = kernel.baseAddress!
                    for y in 0..<height {
                        let row = target.advanced(by: y * width)
                        row.initialize(repeating: 0, count: width)
                        for t in 0...(2 * radius) {
                            let sourceRow = source.advanced(by: min(height - 1, max(0, y + t - radius)) * width)
                            let weight = k[t]
                            for x in 0..<width { row[x] += weight * sourceRow[x] }
                        }
                    }
                }
            }
        }
        vertical.withUnsafeBufferPointer { vertical in
            out.withUnsafeMutableBufferPointer { out in
                kernel.withUnsafeBufferPointer { kernel in
                    let source = vertical.baseAddress!, target = out.baseAddress!, k = kernel.baseAddress!
                    let padded = UnsafeMutablePointer<Float>.allocate(capacity: width + 2 * radius)
                    defer { padded.deallocate() }
                    for y in 0..<height {
                        let sourceRow = source.advanced(by: y * width)
                        for x in 0..<(width + 2 * radius) { padded[x] = sourceRow[min(width - 1, max(0, x - radius))] }
                        let row = target.advanced(by: y * width)
                        row.initialize(repeating: 0, count: width)
                        for t in 0...(2 * radius) {
                            let weight = k[t], shifted = padded.advanced(by: t)
                            for x in 0..<width { row[x] += weight * shifted[x] }
                        }
                    }
                }
            }
        }
        return out
    }

    /// First and second differences (central, borders replicated).
    static func derivatives(_ s: [Float], width: Int, height: Int) -> (gx: [Float], gy: [Float], xx: [Float], yy: [Float], xy: [Float]) {
        let n = width * height
        var gx = [Float](repeating: 0, count: n), gy = gx, xx = gx, yy = gx, xy = gx
        for y in 0..<height {
            let up = max(0, y - 1) * width, down = min(height - 1, y + 1) * width, row = y * width
            for x in 0..<width {
                let left = max(0, x - 1), right = min(width - 1, x + 1)
                let centre = s[row + x]
                gx[row + x] = (s[row + right] - s[row + left]) / 2
                gy[row + x] = (s[down + x] - s[up + x]) / 2
                xx[row + x] = s[row + right] - 2 * centre + s[row + left]
                yy[row + x] = s[down + x] - 2 * centre + s[up + x]
                xy[row + x] = (s[down + right] - s[down + left] - s[up + right] + s[up + left]) / 4
            }
        }
        return (gx, gy, xx, yy, xy)
    }
}
