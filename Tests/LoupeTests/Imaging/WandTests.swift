import Foundation
import LoupeCapture
import LoupeImaging
import LoupeVision
import Testing

@Suite struct WandTests {
    /// Clicks once inside each planted defect, near its middle as an operator
    /// would, and measures the wand's selection against that class's true
    /// mask on a 160x160 window around the click. The part's own machined
    /// features (holes, the engraved mark, the slot) are left out of the
    /// score: some look just like defects, and the wand rightly finds them;
    /// how much of the selection lands on them is reported separately.
    private func clickEveryDefect(
        _ camera: SyntheticCamera, frames: Int, tolerance: Double
    ) throws -> (scores: [UInt8: [Double]], onFeatures: Double) {
        let wand = Wand()
        var scores: [UInt8: [Double]] = [:]
        var selectedTotal = 0, selectedOnFeatures = 0
        for _ in 0..<frames {
            let (frame, _) = camera.render()
            let width = frame.mask.width
            let features = MaskTools.dilate(
                try camera.featureMask.warpedNearest(by: frame.pose, width: frame.mask.width, height: frame.mask.height), radius: 3)
            // Where a defect crosses another one or a machined feature, an
            // operator clicks on a clear stretch of it instead.
            let others = MaskTools.dilate(features, radius: 3)
            for blob in MaskTools.blobs(frame.mask) where blob.area >= 30 {
                let crowded = MaskTools.dilate(
                    try Image8(
                        width: width, height: frame.mask.height, samples: frame.mask.samples.map { $0 != 0 && $0 != blob.label ? 1 : 0 }),
                    radius: 4)
                let click = MaskTools.centralPixel(of: blob, width: width, height: frame.mask.height) {
                    others.samples[$0] == 0 && crowded.samples[$0] == 0
                }
                let window = 160
                let x0 = max(0, min(frame.image.width - window, click % width - window / 2))
                let y0 = max(0, min(frame.image.height - window, click / width - window / 2))
                let rect = PixelRect(x: x0, y: y0, width: window, height: window)
                let crop = try frame.image.cropped(to: rect), truth = try frame.mask.cropped(to: rect),
                    fixed = try features.cropped(to: rect)
                let selection = wand.select(crop, x: click % width - x0, y: click / width - y0, tolerance: tolerance)
                var intersection = 0, union = 0
                for index in selection.samples.indices {
                    let chosen = selection.samples[index] != 0, wanted = truth.samples[index] == blob.label
                    if chosen { selectedTotal += 1 }
                    if fixed.samples[index] != 0 && !wanted {
                        if chosen { selectedOnFeatures += 1 }
                        continue
                    }
                    if chosen && wanted { intersection += 1 }
                    if chosen || wanted { union += 1 }
                }
                scores[blob.label, default: []].append(Double(intersection) / Double(max(1, union)))
            }
        }
        return (scores, Double(selectedOnFeatures) / Double(max(1, selectedTotal)))
    }

    /// Three camera seeds, 20 frames each: about 150 clicks on scratches,
    /// spots and cracks, some crossing each other, the part's machined
    /// features or the belt.
    @Test func oneClickSelectsSyntheticDefects() throws {
        var all: [Double] = [], onFeatures: [Double] = []
        for seed: UInt64 in [21, 5, 77] {
            let camera = try SyntheticCamera(configuration: .init(width: 640, height: 512, defectsPerFrame: 2...3, seed: seed))
            let (scores, features) = try clickEveryDefect(camera, frames: 20, tolerance: 0.5)
            for (label, values) in scores.sorted(by: { $0.key < $1.key }) {
                print(
                    "wand on synthetic class \(label), seed \(seed): mean IoU \(values.reduce(0, +) / Double(values.count)) over "
                        + "\(values.count) defects, worst \(values.min()!)"
                )
            }
            all += scores.values.flatMap { $0 }
            onFeatures.append(features)
        }
        let mean = all.reduce(0, +) / Double(max(1, all.count))
        let median = all.sorted()[all.count / 2]
        print(
            "wand on synthetic defects: mean IoU \(mean), median \(median) over \(all.count) clicks; "
                + "\(Int(onFeatures.reduce(0, +) / Double(onFeatures.count) * 100))% of selected pixels fell on the part's machined "
                + "features"
        )
        #expect(all.count >= 120)
        #expect(mean >= 0.8, "the imaging issue asks for a mean IoU of at least 0.8 from one click")
    }

    @Test func reportsTheWandOnNEUSegDefects() throws {
        guard FileManager.default.fileExists(atPath: NEUSeg.root) else {
            print("skipped: NEU-Seg not found at \(NEUSeg.root)")
            return
        }
        // Every 14th test image: 60 images spread over the whole split.
        let names = try FileManager.default.contentsOfDirectory(atPath: NEUSeg.root + "/images/test").sorted().enumerated()
            .filter { $0.offset % 14 == 0 }.map(\.element)
        // The rule-based wand and the learned one, from the same click.
        let wand = Wand(), learned = LearnedWand()
        var perClass: [UInt8: [Double]] = [:], learnedPerClass: [UInt8: [Double]] = [:]
        for name in names {
            let image = try ImageFile.read(NEUSeg.root + "/images/test/" + name).gray8
            guard
                case .gray8(let truth) = try ImageFile.read(
                    NEUSeg.root + "/annotations/test/" + (name as NSString).deletingPathExtension + ".png")
            else { continue }
            // Click the pixel deepest inside the largest labelled region (as `loupe bench wand` does).
            guard let blob = MaskTools.blobs(truth).max(by: { $0.area < $1.area }), blob.area >= 30 else { continue }
            var region = try Image8(width: truth.width, height: truth.height)
            for pixel in blob.pixels { region.samples[pixel] = 255 }
            let click = try #require(MaskTools.mostInteriorPixel(of: region))
            let (x, y) = (click % image.width, click / image.width)
            perClass[blob.label, default: []].append(
                LearnedWandTests.iou(wand.select(image, x: x, y: y, tolerance: 0.5), truth, label: blob.label))
            let selection = try learned.select(WandFeatures(image), clicks: [.init(x: x, y: y, positive: true)], classIndex: blob.label)
            learnedPerClass[blob.label, default: []].append(LearnedWandTests.iou(selection, truth, label: blob.label))
        }
        func mean(_ values: [Double]) -> Double { values.reduce(0, +) / Double(max(1, values.count)) }
        for (label, values) in perClass.sorted(by: { $0.key < $1.key }) {
            print(
                "wand on NEU-Seg class \(label): mean IoU \(mean(values)) rule-based, \(mean(learnedPerClass[label] ?? [])) learned, over "
                    + "\(values.count) images"
            )
        }
        let all = perClass.values.flatMap { $0 }, allLearned = learnedPerClass.values.flatMap { $0 }
        print(
            "wand on NEU-Seg test images, one click: mean IoU \(mean(all)) rule-based, \(mean(allLearned)) learned, over \(all.count) "
                + "clicks"
        )
        #expect(all.count >= 40)
        #expect(mean(all) > 0.1, "the rule-based wand finds next to nothing on real defects")
        #expect(mean(allLearned) > mean(all) + 0.05, "the learned wand must beat the rules it replaced on real steel")
    }

    @Test func addAndRemoveEditTheMask() throws {
        let selection = try Image8(width: 3, height: 1, samples: [255, 0, 255])
        let mask = try Image8(width: 3, height: 1, samples: [0, 2, 2])
        #expect(try Wand.apply(selection, to: mask, label: 1, mode: .add).samples == [1, 2, 1])
        #expect(try Wand.apply(selection, to: mask, label: 1, mode: .remove).samples == [0, 2, 0])
    }
}
