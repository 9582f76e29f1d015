import Foundation
import HTTPTypes
public import Hummingbird
public import LoupeCapture
import LoupeImaging
import LoupeStorage
import LoupeVision
import LoupeWire
import NIOCore

/// The recipe and its classes (docs/agent-api.md), and with a camera the
/// aligner's test on the live frame while the recipe is set up.
public struct RecipeAPI: Sendable {
    public let store: LabelStore
    public var user: @Sendable (Request) -> String = AgentAPI.signedInUser
    /// Called after a new recipe version is saved (the live pipeline reloads).
    public var recipeSaved: @Sendable () async throws -> Void = {}
    /// Why the agent cannot run a recipe (its camera takes no triggers); nil when it can.
    public var recipeRefusal: @Sendable (Recipe) -> String? = { _ in nil }
    /// The camera's newest frame, for the aligner's test; nil without an agent around the store.
    public var latestFrame: (@Sendable () throws -> CapturedFrame)?

    public init(store: LabelStore) {
        self.store = store
    }

    /// The agent's wiring: a saved recipe reloads the live pipeline, and one its camera cannot run is refused.
    public init(runtime: AgentRuntime) {
        self.init(store: runtime.store)
        recipeSaved = { try await runtime.recipeChanged() }
        recipeRefusal = { runtime.pipeline.refusal(of: $0) }
        latestFrame = { try runtime.pipeline.requireLatestFrame() }
    }

    public func register(on routes: AgentRoutes) {
        let api = routes.group("api/v1")
        api.get("recipe", .viewer) { _, _ in try AgentAPI.json(try await store.recipe()) }
        api.put("recipe", .operator) { request, _ in
            let recipe = try await AgentAPI.decode(Recipe.self, request, limit: 1 << 20)
            if let refusal = self.recipeRefusal(recipe) { throw HTTPError(.badRequest, message: refusal) }
            let user = self.user(request)
            let saved = try await store.saveRecipe(recipe, user: user)
            try await recipeSaved()
            return try AgentAPI.json(saved)
        }
        api.get("classes", .viewer) { _, _ in try AgentAPI.json(try await store.classes()) }
        api.put("classes", .operator) { request, _ in
            let classes = try await AgentAPI.decode([ClassRecord].self, request, limit: 1 << 16)
            let user = self.user(request)
            try await store.setClasses(classes, user: user)
            return try AgentAPI.json(try await store.classes())
        }
        if let latestFrame {
            // Recipe setup: find the template (saved or drafted) in the current live frame.
            api.post("align/test", .operator) { request, _ in
                let draft = try await AgentAPI.decode(AlignDraft.self, request, limit: 8192)
                let saved = try await store.recipe()
                var recipe = saved
                if let reference = draft.referenceCapture { recipe.referenceCapture = reference }
                if let template = draft.template { recipe.template = template }
                if let range = draft.angleRangeDegrees { recipe.angleRangeDegrees = range }
                if let score = draft.minAlignScore { recipe.minAlignScore = score }
                try recipe.validate()
                guard let configuration = recipe.alignerConfiguration, let referenceNumber = recipe.referenceCapture else {
                    throw StoreError.invalid("draw the aligner's template on a capture first")
                }
                let frame = try latestFrame()
                let reference = try ImageFile.decode(try await store.image(of: try await store.capture(number: referenceNumber))).gray8
                let clock = ContinuousClock()
                let start = clock.now
                let alignment: Alignment
                do {
                    alignment = try Aligner(reference: reference, configuration: configuration).align(frame.image)
                } catch {
                    throw StoreError.invalid("the aligner cannot use this template: \(error)")
                }
                let placement = configuration.placement(of: alignment.pose)
                return try AgentAPI.json(
                    AlignTestResult(
                        score: alignment.score, aligned: alignment.aligned, minScore: configuration.minScore,
                        x: placement.x, y: placement.y, angleDegrees: placement.angleDegrees,
                        shiftX: placement.shiftX, shiftY: placement.shiftY,
                        milliseconds: (clock.now - start).milliseconds, frameSequence: frame.sequence))
            }
        }
    }

    struct AlignDraft: Codable {
        var referenceCapture: Int?
        var template: PixelRect?
        var angleRangeDegrees: Double?
        var minAlignScore: Double?
    }

    struct AlignTestResult: Codable {
        var score: Double
        var aligned: Bool
        var minScore: Double
        /// Where the template's centre was found in the frame.
        var x: Double
        var y: Double
        var angleDegrees: Double
        /// How far the part moved from the reference.
        var shiftX: Double
        var shiftY: Double
        var milliseconds: Double
        var frameSequence: Int
    }
}
