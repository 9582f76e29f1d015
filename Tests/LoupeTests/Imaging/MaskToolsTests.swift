import Foundation
import LoupeImaging
import LoupeVision
import Testing

@Suite struct MaskToolsTests {
    private func mask(_ rows: [String]) throws -> Image8 {
        let samples = rows.flatMap { $0.map { UInt8(String($0)) ?? 0 } }
        return try Image8(width: rows[0].count, height: rows.count, samples: samples)
    }

    private func disc(radius: Double, size: Int = 41, label: UInt8 = 1) throws -> Image8 {
        var image = try Image8(width: size, height: size)
        let center = Double(size - 1) / 2
        for y in 0..<size {
            for x in 0..<size
            where (Double(x) - center) * (Double(x) - center) + (Double(y) - center) * (Double(y) - center) <= radius * radius {
                image[x, y] = label
            }
        }
        return image
    }

    @Test func fillHolesFillsEnclosedBackgroundOnly() throws {
        let ring = try mask([
            "0000000",
            "0222200",
            "0200200",
            "0222200",
            "0000000",
        ])
        let filled = MaskTools.fillHoles(ring)
        #expect(filled[2, 2] == 2 && filled[3, 2] == 2)
        #expect(filled[0, 0] == 0 && filled[6, 2] == 0, "background that reaches the border stays")
    }

    @Test func dilateAndErodeUseEuclideanDistance() throws {
        var dot = try Image8(width: 9, height: 9)
        dot[4, 4] = 3
        let grown = MaskTools.dilate(dot, radius: 2)
        #expect(grown.samples.filter { $0 == 3 }.count == 13, "a disc of radius 2 holds 13 pixels")
        var square = try Image8(width: 9, height: 9)
        for y in 2..<7 { for x in 2..<7 { square[x, y] = 1 } }
        let shrunk = MaskTools.erode(square, radius: 1)
        #expect(shrunk.samples.filter { $0 == 1 }.count == 9)
        #expect(shrunk[4, 4] == 1 && shrunk[2, 2] == 0)
    }

    @Test func dilationGivesContestedPixelsToTheNearerLabel() throws {
        let two = try mask(["100002"])
        let grown = MaskTools.dilate(two, radius: 3)
        #expect(grown.samples == [1, 1, 1, 2, 2, 2])
    }

    @Test func removeSpecksKeepsLargeRegions() throws {
        var image = try disc(radius: 5)
        image[0, 0] = 2; image[1, 0] = 2; image[0, 1] = 2
        let cleaned = MaskTools.removeBlobs(image, smallerThan: 10)
        #expect(cleaned[0, 0] == 0 && cleaned[1, 0] == 0)
        #expect(cleaned.samples.filter { $0 == 1 }.count == image.samples.filter { $0 == 1 }.count)
        #expect(MaskTools.blobs(image).count == 2)
    }

    @Test func theLabelCheckFlagsStrokesThinnerThanSixPixels() throws {
        var image = try disc(radius: 9)
        for x in 0..<41 { image[x, 2] = 2; image[x, 3] = 2; image[x, 4] = 2 }  // a 3 px wide line
        let flagged = MaskTools.tooThin(image)
        #expect(flagged.count == 1)
        #expect(flagged.first?.label == 2)
        let discBlob = try #require(MaskTools.blobs(image).first { $0.label == 1 })
        #expect(abs(discBlob.inscribedRadius - 9.5) <= 1, "disc of radius 9 has inscribed radius \(discBlob.inscribedRadius)")
    }

    @Test func distancesMatchBruteForce() throws {
        var generator = SeededGenerator(seed: 8)
        var image = try Image8(width: 23, height: 17)
        for index in image.samples.indices where Int.random(in: 0..<12, using: &generator) == 0 {
            image.samples[index] = UInt8.random(in: 1...3, using: &generator)
        }
        let grown = MaskTools.dilate(image, radius: 4)
        for y in 0..<17 {
            for x in 0..<23 {
                var best = Double.infinity
                for sy in 0..<17 {
                    for sx in 0..<23 where image[sx, sy] != 0 { best = min(best, Double((sx - x) * (sx - x) + (sy - y) * (sy - y))) }
                }
                #expect((grown[x, y] != 0) == (best <= 16), "pixel (\(x), \(y)) at squared distance \(best)")
            }
        }
    }
}
