import Foundation
import LoupeImaging
import Testing

@Suite struct GeometryTests {
    private func ramp(width: Int = 40, height: Int = 30, channels: Int = 1) throws -> Image8 {
        var image = try Image8(width: width, height: height, channels: channels)
        for y in 0..<height { for x in 0..<width { for c in 0..<channels { image[x, y, c] = UInt8((x * 5 + y * 3 + c * 40) & 0xFF) } } }
        return image
    }

    @Test func cropTakesTheRectangleAndRefusesOneOutside() throws {
        let image = try ramp()
        let crop = try image.cropped(to: PixelRect(x: 5, y: 7, width: 10, height: 4))
        #expect(crop.width == 10 && crop.height == 4)
        #expect(crop[0, 0] == image[5, 7] && crop[9, 3] == image[14, 10])
        #expect(throws: ImageError.outOfBounds(rect: PixelRect(x: 35, y: 0, width: 10, height: 4), width: 40, height: 30)) {
            try image.cropped(to: PixelRect(x: 35, y: 0, width: 10, height: 4))
        }
    }

    @Test func flipsAndQuarterTurnsAreExact() throws {
        let image = try ramp(channels: 3)
        #expect(image.flippedHorizontally().flippedHorizontally() == image)
        #expect(image.flippedVertically()[3, 0, 1] == image[3, 29, 1])
        #expect(image.flippedHorizontally()[0, 4, 2] == image[39, 4, 2])
        let quarter = image.rotated(quarterTurns: 1)
        #expect(quarter.width == 30 && quarter.height == 40)
        #expect(quarter[29, 0] == image[0, 0], "top-left goes to top-right, clockwise on screen")
        #expect(image.rotated(quarterTurns: 1).rotated(quarterTurns: 3) == image)
        #expect(image.rotated(quarterTurns: 2) == image.flippedHorizontally().flippedVertically())
    }

    @Test func warpingByIntegerShiftsMovesPixelsExactly() throws {
        let image = try ramp()
        let moved = try image.warped(by: SimilarityTransform(tx: 3, ty: 2), width: 40, height: 30)
        #expect(moved[10, 10] == image[7, 8])
        #expect(moved[0, 0] == 0, "uncovered pixels take the fill")
        #expect(try image.warped(by: .identity, width: 40, height: 30) == image)
    }

    @Test func aRotationAndItsInverseGiveTheImageBack() throws {
        var smooth = try Image8(width: 64, height: 64)
        for y in 0..<64 { for x in 0..<64 { smooth[x, y] = UInt8(128 + 100 * sin(Double(x) / 6) * cos(Double(y) / 7)) } }
        let turn = SimilarityTransform.rotation(12 * .pi / 180, about: (31.5, 31.5), shift: (1.5, -2.25))
        let there = try smooth.warped(by: turn, width: 64, height: 64)
        let back = try there.warped(by: turn.inverse, width: 64, height: 64)
        var worst = 0
        for y in 16..<48 { for x in 16..<48 { worst = max(worst, abs(Int(back[x, y]) - Int(smooth[x, y]))) } }
        #expect(worst <= 6, "largest difference in the centre \(worst)")
        let roundTrip = turn.composed(after: turn.inverse)
        #expect(abs(roundTrip.tx) < 1e-9 && abs(roundTrip.ty) < 1e-9 && abs(roundTrip.angle) < 1e-12)
    }

    @Test func areaResizeAveragesBlocksAndBilinearKeepsFlatAreasFlat() throws {
        let image = try Image8(width: 4, height: 2, samples: [0, 10, 20, 30, 40, 50, 60, 70])
        let half = try image.resizedArea(width: 2, height: 1)
        #expect(half.samples == [25, 45])
        let third = try Image8(width: 3, height: 1, samples: [0, 90, 180]).resizedArea(width: 2, height: 1)
        #expect(third.samples == [30, 150], "fractional coverage: (0 + 90/2) / 1.5 and (90/2 + 180) / 1.5")
        let flat = try Image8(width: 7, height: 5, fill: 77)
        #expect(try flat.resizedBilinear(width: 23, height: 11).samples.allSatisfy { $0 == 77 })
        #expect(try flat.resizedArea(width: 3, height: 2).samples.allSatisfy { $0 == 77 })
    }

    @Test func brightnessAndContrastClamp() throws {
        let image = try Image8(width: 3, height: 1, samples: [0, 128, 255])
        #expect(image.adjusted(brightness: 0.1).samples == [26, 154, 255])
        #expect(image.adjusted(contrast: 2).samples == [0, 128, 255])
        #expect(image.adjusted(contrast: 0.5).samples == [64, 128, 192])
    }

    @Test func overlayTintsLabelledPixelsAtTheOpacity() throws {
        let image = try Image8(width: 2, height: 1, samples: [100, 200])
        let mask = try Image8(width: 2, height: 1, samples: [0, 1])
        let colors = [RGB(0, 0, 0), RGB(255, 0, 0)]
        #expect(try image.overlay(mask: mask, colors: colors, opacity: 0).samples == [100, 100, 100, 200, 200, 200])
        #expect(try image.overlay(mask: mask, colors: colors, opacity: 1).samples == [100, 100, 100, 255, 0, 0])
        #expect(try image.overlay(mask: mask, colors: colors, opacity: 0.5).samples == [100, 100, 100, 228, 100, 100])
        #expect(throws: ImageError.maskSizeMismatch(imageWidth: 2, imageHeight: 1, maskWidth: 1, maskHeight: 1)) {
            try image.overlay(mask: Image8(width: 1, height: 1), colors: colors, opacity: 0.5)
        }
    }
}
