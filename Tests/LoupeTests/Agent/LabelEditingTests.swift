import Foundation
import LoupeAgent
import LoupeImaging
import LoupeStorage
import LoupeVision
import Testing

@Suite struct LabelEditingTests {
    @Test func brushAndEraserStrokesPaintCapsules() throws {
        var mask = try Image8(width: 40, height: 20)
        // A horizontal brush line of radius 3 from x=5 to x=30 at y=10.
        try MaskPainter.apply([Stroke(tool: .brush, classIndex: 2, radius: 3, points: [[5, 10], [30, 10]])], to: &mask, classes: 3)
        let painted = mask.samples.filter { $0 == 2 }.count
        // Area of the capsule: 25 x 6 rectangle plus a disc of radius 3.
        let expected = 25.0 * 6 + Double.pi * 9
        #expect(abs(Double(painted) - expected) / expected < 0.1, "painted \(painted), expected about \(expected)")
        #expect(mask.samples[10 * 40 + 17] == 2 && mask.samples[2 * 40 + 17] == 0)
        // The eraser clears a dab in the middle.
        try MaskPainter.apply([Stroke(tool: .eraser, radius: 4, points: [[17.5, 10.5]])], to: &mask, classes: 3)
        #expect(mask.samples[10 * 40 + 17] == 0 && mask.samples[10 * 40 + 8] == 2)
        // Strokes outside the mask are clipped, not a crash.
        try MaskPainter.apply([Stroke(tool: .brush, classIndex: 1, radius: 5, points: [[-50, -50], [-10, -10]])], to: &mask, classes: 3)
    }

    @Test func badStrokesAreRefusedAndChangeNothing() throws {
        var mask = try Image8(width: 16, height: 16)
        let cases: [Stroke] = [
            Stroke(tool: .brush, classIndex: 0, radius: 2, points: [[1, 1]]),
            Stroke(tool: .brush, classIndex: 3, radius: 2, points: [[1, 1]]),
            Stroke(tool: .brush, classIndex: 1, radius: 0, points: [[1, 1]]),
            Stroke(tool: .brush, classIndex: 1, radius: 2, points: []),
            Stroke(tool: .brush, classIndex: 1, radius: 2, points: [[1]]),
            Stroke(tool: .brush, classIndex: 1, radius: 2, points: [[.nan, 1]]),
            Stroke(tool: .brush, classIndex: 1, radius: 2, points: Array(repeating: [1, 1], count: Stroke.maximumPoints + 1)),
        ]
        for bad in cases {
            // A good stroke first: the whole batch is refused, so it must not land either.
            #expect(throws: StoreError.self) {
                try MaskPainter.apply([Stroke(tool: .brush, classIndex: 1, radius: 2, points: [[8, 8]]), bad], to: &mask, classes: 3)
            }
        }
        #expect(mask.samples.allSatisfy { $0 == 0 })
    }

    @Test func recipesAreVersionedAndValidated() async throws {
        let dir = LabelStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try LabelStore(directory: dir)
        #expect(try await store.recipe() == Recipe())
        var recipe = Recipe(
            inspectionType: "brake-disc", template: PixelRect(x: 0, y: 0, width: 64, height: 64),
            rois: [RecipeROI(name: "hub", rect: PixelRect(x: 10, y: 10, width: 32, height: 32))], confidenceThreshold: 0.6)
        let first = try await store.saveRecipe(recipe, user: "ann")
        recipe.confidenceThreshold = 0.7
        let second = try await store.saveRecipe(recipe, user: "ann")
        #expect(first.version == 1 && second.version == 2)
        // Reopening gives the latest.
        #expect(try await LabelStore(directory: dir).recipe() == second)

        for bad in [
            Recipe(inspectionType: "../etc"),
            Recipe(rois: [RecipeROI(name: "a", rect: PixelRect(x: 0, y: 0, width: 4, height: 40))]),
            Recipe(rois: [
                RecipeROI(name: "a", rect: PixelRect(x: 0, y: 0, width: 9, height: 9)),
                RecipeROI(name: "a", rect: PixelRect(x: 0, y: 0, width: 9, height: 9)),
            ]),
            Recipe(rois: [RecipeROI(name: "a/b", rect: PixelRect(x: 0, y: 0, width: 9, height: 9))]),
            Recipe(confidenceThreshold: 1.5),
            Recipe(failRule: FailRule(minimumDefectPixels: 0)),
        ] {
            await #expect(throws: StoreError.self) { try await store.saveRecipe(bad, user: "ann") }
        }
        #expect(try await store.recipe().version == 2)
    }

    @Test func strokesLandInTheStoreAsTheROIsMask() async throws {
        let dir = LabelStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try LabelStore(directory: dir)
        _ = try await store.addCapture(
            LabelStore.EncodedImage(bytes: try LabelStoreTests.png(50, size: 64), width: 64, height: 64, channels: 1), source: "camera",
            inspectionType: "t",
            recipeVersion: 1, user: "ann")
        let roi = RecipeROI(name: "hub", rect: PixelRect(x: 8, y: 8, width: 32, height: 32))
        try await store.applyStrokes(
            [Stroke(tool: .brush, classIndex: 1, radius: 2, points: [[4, 4], [20, 4]])], captureNumber: 1, roi: roi, classes: 2, user: "ann"
        )
        let afterBrush = try await store.mask(of: try #require(try await store.label(captureNumber: 1, roiName: "hub")))
        try await store.applyStrokes(
            [Stroke(tool: .eraser, radius: 3, points: [[12, 4]])], captureNumber: 1, roi: roi, classes: 2, user: "bob")
        let label = try #require(try await store.label(captureNumber: 1, roiName: "hub"))
        let afterEraser = try await store.mask(of: label)
        #expect(afterBrush.samples.filter { $0 == 1 }.count > afterEraser.samples.filter { $0 == 1 }.count)
        #expect(afterEraser.samples.filter { $0 == 1 }.count > 0)
        #expect(label.updatedBy == "bob" && label.labelledPixels == afterEraser.samples.filter { $0 == 1 }.count)
        #expect(try await store.edits().prefix(2).allSatisfy { $0.action == "strokes" })
    }
}
