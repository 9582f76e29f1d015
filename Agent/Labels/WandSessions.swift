import Foundation
public import LoupeImaging
public import LoupeVision
import Synchronization

/// The agent's side of the learned wand (`LearnedWand`): each ROI's feature
/// stack, computed once in the background when the page opens a capture and
/// kept for the few ROIs in use; the clicks so far on each ROI, so that every
/// click retrains the wand on all of them and replaces the selection the
/// previous one made; and the camera's `WandMemory`, which the masks of the
/// ROIs the operator opened and finished teach, so that the next image's wand
/// starts from them.
public final class WandSessions: Sendable {
    /// What one click did.
    public struct Outcome: Sendable {
        public var mask: Image8
        /// Pixels the selection holds (for an unlabel click without a
        /// selection: pixels it cleared).
        public var selectedPixels: Int
    }

    /// The clicks on one ROI in one class since the mask last changed by
    /// anything else, the mask they started from and the mask they made.
    private struct Session {
        var classIndex: UInt8
        var clicks: [LearnedWand.Click]
        var base: Image8
        var result: Image8
    }

    private struct Entry {
        var key: CaptureROI
        var task: Task<WandFeatures, Never>
        /// Set once the task is done.
        var value: WandFeatures?
    }

    private struct State {
        /// Most recently used last.
        var features: [Entry] = []
        var sessions: [CaptureROI: Session] = [:]
        var memory = WandMemory()
        /// The ROI the last click was on.
        var active: CaptureROI?
    }

    /// Feature stacks kept (a 256x256 ROI's is 8 MB, a 1280x1024 one 160 MB).
    public let capacity: Int
    private let wand = LearnedWand()
    private let state = Mutex(State())

    public init(capacity: Int = 4) {
        self.capacity = max(1, capacity)
    }

    /// Starts computing `key`'s features (on `executor`: the page's threads)
    /// unless they are cached or under way; `mask` is the ROI's stored label,
    /// remembered once the features exist. Returns the computation.
    @discardableResult
    public func prepare(_ key: CaptureROI, crop: Image8, mask: Image8?, on executor: (any TaskExecutor)?) -> Task<WandFeatures, Never> {
        state.withLock { state in
            if let index = state.features.firstIndex(where: { $0.key == key }) {
                let entry = state.features.remove(at: index)
                state.features.append(entry)
                return entry.task
            }
            let task = Task(executorPreference: executor) { [self] in
                let features = WandFeatures(crop)
                self.state.withLock { state in
                    if let index = state.features.firstIndex(where: { $0.key == key }) { state.features[index].value = features }
                    if let mask, mask.samples.contains(where: { $0 != 0 }) {
                        state.memory.record(key: key.description, features: features, mask: mask)
                    }
                }
                return features
            }
            state.features.append(Entry(key: key, task: task))
            if state.features.count > capacity {
                let dropped = state.features.removeFirst().key
                state.sessions[dropped] = nil
            }
            return task
        }
    }

    /// `key`'s computation, when cached or under way.
    public func cached(_ key: CaptureROI) -> Task<WandFeatures, Never>? {
        state.withLock { $0.features.first { $0.key == key }?.task }
    }

    /// Whether `key`'s features are ready (cached and computed).
    public func isPrepared(_ key: CaptureROI) -> Bool {
        state.withLock { $0.features.first { $0.key == key }?.value != nil }
    }

    /// Images the memory holds.
    public var rememberedImages: Int { state.withLock { $0.memory.imageCount } }

    /// One click on `key` whose mask is now `current`: a "label" click
    /// (`positive`) retrains the wand on this session's clicks and paints its
    /// selection in `classIndex` over the mask the session started from; an
    /// "unlabel" click does the same with the click as a negative, and also
    /// clears the region of `classIndex` under it, which alone is what it does
    /// when the session has no label click yet. A mask changed by anything
    /// else since the session's last click starts a new session.
    public func click(
        _ key: CaptureROI, features: WandFeatures, at click: LearnedWand.Click, classIndex: UInt8,
        tolerance: Double = 0.5, current: Image8
    ) throws(WandError) -> Outcome {
        let (previous, memory) = state.withLock { state -> (Session?, WandMemory) in
            // The operator moved on: what they left on the last ROI teaches the next.
            if let active = state.active, active != key, let left = state.sessions[active],
                let done = state.features.first(where: { $0.key == active })?.value
            {
                state.memory.record(key: active.description, features: done, mask: left.result)
            }
            state.active = key
            var memory = state.memory
            memory.forget(key: key.description)
            return (state.sessions[key], memory)
        }
        var session =
            previous.flatMap { $0.classIndex == classIndex && $0.result == current ? $0 : nil }
            ?? Session(classIndex: classIndex, clicks: [], base: current, result: current)
        session.clicks.append(click)
        if !click.positive {
            let cleared = Self.clearRegion(of: classIndex, at: click, in: &session.base)
            if !session.clicks.contains(where: \.positive) {
                state.withLock { $0.sessions[key] = nil }
                return Outcome(mask: session.base, selectedPixels: cleared)
            }
        }
        let selection = try wand.select(
            features, clicks: session.clicks, classIndex: classIndex, mask: session.base,
            memory: memory.imageCount > 0 ? memory : nil, tolerance: tolerance)
        var out = session.base
        var selected = 0
        for index in out.samples.indices where selection.samples[index] != 0 {
            out.samples[index] = classIndex
            selected += 1
        }
        session.result = out
        state.withLock { $0.sessions[key] = session }
        return Outcome(mask: out, selectedPixels: selected)
    }

    /// Clears the 8-connected region of `label` holding the click; returns its area.
    private static func clearRegion(of label: UInt8, at click: LearnedWand.Click, in mask: inout Image8) -> Int {
        let index = click.y * mask.width + click.x
        guard mask.samples[index] == label else { return 0 }
        var layer = mask
        for i in layer.samples.indices { layer.samples[i] = layer.samples[i] == label ? 1 : 0 }
        guard let blob = MaskTools.blobs(layer).first(where: { $0.label == 1 && $0.pixels.contains(index) }) else { return 0 }
        for pixel in blob.pixels { mask.samples[pixel] = 0 }
        return blob.area
    }
}
