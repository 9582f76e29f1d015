public import Foundation
import LoupeImaging

/// A model's training report as one HTML page of pictures: the training curve, precision and recall over the
/// threshold with the chosen one marked, the parts a line would let through and throw away, the confusion matrix,
/// and, when a labelled split was scored, its worst images with truth and prediction overlaid. `loupe eval --report`
/// writes it with the split's figures; the agent serves it for the model it runs, from the figures the file carries.
public struct TrainingReport: Sendable {
    /// A labelled split scored by `Trainer.assess`, with its worst images drawn.
    public struct Evaluation: Sendable {
        public var split: String
        public var images: Int
        public var assessment: Trainer.Assessment
        public var worst: [WorstImage]

        public init(split: String, images: Int, assessment: Trainer.Assessment, worst: [WorstImage]) {
            (self.split, self.images, self.assessment, self.worst) = (split, images, assessment, worst)
        }
    }

    /// One image as three panels side by side: the image, the truth over it, the prediction over it.
    public struct WorstImage: Sendable {
        public var name: String
        public var defectIoU: Float
        public var fileName: String
        public var png: Data
        /// The strip's size in pixels.
        public var width: Int
        public var height: Int
    }

    public let title: String
    public let model: SegmentationModel
    public var evaluation: Evaluation?

    public init(title: String, model: SegmentationModel, evaluation: Evaluation? = nil) {
        (self.title, self.model, self.evaluation) = (title, model, evaluation)
    }

    /// The report's stylesheet, served beside it (the agent's policy allows no inline style).
    public static let stylesheet = """
        body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1500px; }
        h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; border-bottom: 1px solid #ccc; }
        .charts { display: flex; flex-wrap: wrap; gap: 12px; }
        .facts td { padding: 2px 12px 2px 0; } .facts td:first-child { color: #666; }
        figure { margin: 0 0 16px 0; } figcaption { font-size: 12px; color: #444; }
        figure img { image-rendering: pixelated; border: 1px solid #ccc; max-width: 100%; }
        .note { color: #666; font-size: 13px; }
        """

    /// The page; `stylesheet` is where the stylesheet is served from, relative to the page.
    public func html(stylesheet: String = "report.css") -> String {
        let m = model.metadata
        let names = model.classes.isEmpty ? (0..<model.configuration.classes).map { "class \($0)" } : model.classes.map(\.name)
        var facts: [(String, String)] = [
            ("network", "\(model.configuration), \(model.weights.parameterCount) parameters"),
            ("classes", names.joined(separator: ", ")),
            (
                "trained",
                String(
                    format: "%d passes, %d steps, %.0f s on %d images (%d for validation)", m.passes, m.iterations,
                    m.trainingSeconds, m.trainingImages, m.validationImages)
            ),
            (
                "validation mIoU",
                String(format: "%.4f", m.validationMIoU) + " ("
                    + zip(names, m.validationIoU).map {
                        String(format: "%@ %.3f", $0, $1)
                    }.joined(separator: ", ") + ")"
            ),
            (
                "calibrated threshold",
                m.calibratedThreshold > 0 ? String(format: "%.2f", m.calibratedThreshold) : "none (no validation split)"
            ),
        ]
        if let figures = m.partFigures {
            facts.append(
                ("validation parts", figures.summary + " (a part fails on one defect region of \(figures.minimumDefectPixels) px or more)"))
        }
        if let e = evaluation {
            let a = e.assessment
            facts.append(("scored on", "split \(e.split): \(e.images) images, mIoU " + String(format: "%.4f", a.matrix.meanIoU)))
            if let figures = a.parts.figures(at: reportThreshold) {
                facts.append(("parts on \(e.split)", figures.summary))
            }
        }
        var body = "<h1>\(HTMLText.escaped(title))</h1>\n<table class=\"facts\">\n"
        for (key, value) in facts { body += "<tr><td>\(HTMLText.escaped(key))</td><td>\(HTMLText.escaped(value))</td></tr>\n" }
        body += "</table>\n"

        body += "<h2>Training</h2>\n"
        if m.history.isEmpty {
            body += "<p class=\"note\">The file records no training curve (trained before models kept one).</p>\n"
        } else {
            body += "<div class=\"charts\">\n" + trainingCharts(m.history) + "</div>\n"
        }

        body += "<h2>Precision and recall over the confidence threshold</h2>\n"
        body += "<p class=\"note\">A pixel counts as a defect where its class's probability reaches the threshold (the page's slider). "
        body += "Rings: the model's calibrated threshold.</p>\n<div class=\"charts\">\n"
        body += thresholdCharts(names: names)
        body += "</div>\n"

        body += "<h2>Parts</h2>\n<p class=\"note\">Each image judged as a part by the fail rule: escapes are defective parts judged "
        body += "good, false rejects good parts judged bad.</p>\n<div class=\"charts\">\n" + partCharts() + "</div>\n"

        body += "<h2>Confusion matrix</h2>\n<div class=\"charts\">\n" + confusionCharts(names: names) + "</div>\n"

        if let e = evaluation, !e.worst.isEmpty {
            body += "<h2>Worst images of split \(HTMLText.escaped(e.split))</h2>\n"
            body += "<p class=\"note\">Lowest defect IoU first; each shows the image, the truth over it and the prediction over it at "
            body += String(format: "threshold %.2f.</p>\n", reportThreshold)
            for image in e.worst {
                // Small ROIs are drawn at twice their size (a width attribute: the page allows no inline style).
                let shown = image.height < 160 ? " width=\"\(2 * image.width)\"" : ""
                let name = URL(fileURLWithPath: image.name).lastPathComponent
                body += "<figure><img src=\"\(HTMLText.escaped(image.fileName))\" alt=\"\(HTMLText.escaped(name))\"\(shown)>"
                body += "<figcaption>\(HTMLText.escaped(name)): defect IoU " + String(format: "%.3f", image.defectIoU)
                body += "</figcaption></figure>\n"
            }
        }
        return """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><title>\(HTMLText.escaped(title))</title>
            <link rel="stylesheet" href="\(HTMLText.escaped(stylesheet))"></head>
            <body>
            \(body)</body></html>

            """
    }

    /// The threshold the worst images and the split's part figures are read at: the model's calibrated one, or the
    /// page's default, 0.5, for a model without one.
    public var reportThreshold: Float {
        model.metadata.calibratedThreshold > 0 ? model.metadata.calibratedThreshold : 0.5
    }

    /// Writes index.html, report.css and the worst images' PNG files into `directory` (made if missing).
    public func write(to directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let base = URL(fileURLWithPath: directory)
        try Data(html().utf8).write(to: base.appendingPathComponent("index.html"))
        try Data(Self.stylesheet.utf8).write(to: base.appendingPathComponent("report.css"))
        for image in evaluation?.worst ?? [] { try image.png.write(to: base.appendingPathComponent(image.fileName)) }
    }

    // MARK: Charts

    private static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]

    private func color(_ c: Int) -> String {
        // Class colours are the page's; a black or missing one takes the palette's.
        if c < model.classes.count, model.classes[c].color != 0 { return String(format: "#%06X", model.classes[c].color & 0xFFFFFF) }
        return Self.palette[c % Self.palette.count]
    }

    private func trainingCharts(_ history: [PassRecord]) -> String {
        let passes = Double(history.map(\.pass).max() ?? 1)
        let losses = history.map { (x: Double($0.pass), y: Double($0.loss)) }.filter { $0.y.isFinite }
        let highest = max(losses.map(\.y).max() ?? 1, 1e-6)
        let loss = SVGChart(
            title: "Training loss per pass", xLabel: "pass", yLabel: "mean loss", x: 1...max(2, passes), y: 0...highest * 1.05,
            series: [.init(name: "loss", color: Self.palette[0], points: losses)])
        let validated = history.compactMap { record in record.validationMIoU.map { (x: Double(record.pass), y: Double($0)) } }
        var best: [(x: Double, y: Double, color: String, label: String)] = []
        if let top = validated.max(by: { $0.y < $1.y }) {
            best.append((top.x, top.y, "#333", String(format: "kept: pass %d, %.3f", Int(top.x), top.y)))
        }
        let miou = SVGChart(
            title: "Validation mIoU per pass", xLabel: "pass", yLabel: "mIoU", x: 1...max(2, passes), y: 0...1,
            series: [.init(name: "validation mIoU", color: Self.palette[2], points: validated)], marks: best)
        return loss.svg() + (validated.isEmpty ? "" : miou.svg())
    }

    /// Per defect class: precision against recall, and IoU against the threshold; the validation split the file
    /// carries, and the scored split beside it.
    private func thresholdCharts(names: [String]) -> String {
        let m = model.metadata
        let scored = evaluation.map { (name: $0.split, curve: $0.assessment.tally.curve) }
        var out = ""
        for c in 1..<max(1, model.configuration.classes) {
            var pr: [SVGChart.Series] = [], iou: [SVGChart.Series] = []
            var marks: [(x: Double, y: Double, color: String, label: String)] = []
            for (index, source) in [(name: "validation", curve: m.calibration), scored].compactMap({ $0 }).enumerated()
            where !source.curve.isEmpty {
                let dashed = index == 1
                let shade = dashed ? Self.palette[(c + 3) % Self.palette.count] : color(c)
                pr.append(
                    .init(
                        name: source.name, color: shade, points: source.curve.map { (Double($0.recall[c]), Double($0.precision[c])) },
                        dashed: dashed))
                iou.append(
                    .init(
                        name: source.name, color: shade, points: source.curve.map { (Double($0.threshold), Double($0.iou[c])) },
                        dashed: dashed))
                if m.calibratedThreshold > 0,
                    let chosen = source.curve.min(by: {
                        abs($0.threshold - m.calibratedThreshold) < abs($1.threshold - m.calibratedThreshold)
                    })
                {
                    marks.append((Double(chosen.recall[c]), Double(chosen.precision[c]), shade, String(format: "%.2f", chosen.threshold)))
                }
            }
            guard !pr.isEmpty else { continue }
            out += SVGChart(
                title: "\(names[c]): precision against recall", xLabel: "recall", yLabel: "precision", x: 0...1, y: 0...1,
                series: pr, marks: marks
            ).svg()
            out += SVGChart(
                title: "\(names[c]): IoU over the threshold", xLabel: "confidence threshold", yLabel: "IoU", x: 0...1, y: 0...1,
                series: iou,
                marker: m.calibratedThreshold > 0
                    ? (Double(m.calibratedThreshold), String(format: "calibrated %.2f", m.calibratedThreshold)) : nil
            ).svg()
        }
        if out.isEmpty { out = "<p class=\"note\">No curve: the model has no validation split and no split was scored.</p>\n" }
        return out
    }

    private func partCharts() -> String {
        let sources = [("validation", model.metadata.parts), (evaluation?.split ?? "", evaluation?.assessment.parts)]
        var series: [SVGChart.Series] = []
        for (index, (name, parts)) in sources.enumerated() {
            guard let parts, !name.isEmpty else { continue }
            let dashed = index == 1
            if parts.defectiveParts[0] > 0 {
                series.append(
                    .init(
                        name: "\(name) escape rate", color: Self.palette[1],
                        points: parts.curve.compactMap { point in
                            parts.escapeRate(point).map { (Double(point.threshold), $0) }
                        }, dashed: dashed))
            }
            if parts.goodParts > 0 {
                series.append(
                    .init(
                        name: "\(name) false-reject rate", color: Self.palette[0],
                        points: parts.curve.compactMap { point in
                            parts.falseRejectRate(point).map { (Double(point.threshold), $0) }
                        }, dashed: dashed))
            }
        }
        guard !series.isEmpty else { return "<p class=\"note\">No parts were judged.</p>\n" }
        let threshold = reportThreshold
        return SVGChart(
            title: "Parts over the threshold", xLabel: "confidence threshold", yLabel: "share of parts", x: 0...1, y: 0...1, series: series,
            marker: (
                Double(threshold), String(format: "%@ %.2f", model.metadata.calibratedThreshold > 0 ? "calibrated" : "default", threshold)
            )
        ).svg()
    }

    /// The scored split's confusion matrix (or the validation split's) as a grid: each cell shaded by its share of
    /// the truth's row.
    private func confusionCharts(names: [String]) -> String {
        let source =
            evaluation.map { (name: "split \($0.split)", matrix: $0.assessment.matrix) }
            ?? model.metadata.validationConfusion.map { (name: "the validation split", matrix: $0) }
        guard let (splitName, matrix) = source, matrix.classes == names.count else {
            return "<p class=\"note\">The file records no confusion matrix; score a labelled split (loupe eval --report) to see one.</p>\n"
        }
        let n = matrix.classes, cell = 64.0, left = 110.0, top = 60.0
        let title = "Pixels of \(splitName) by truth (rows) and prediction (columns)"
        // Wide enough for the grid and for the title (about 7 px a character at 13 px bold).
        let size = (w: max(left + 7.2 * Double(title.count), left + cell * Double(n) + 16), h: top + cell * Double(n) + 30)
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart confusion\" width=\"\(Int(size.w))\" height=\"\(Int(size.h))\" "
        out += "role=\"img\" aria-label=\"confusion matrix\">\n"
        out += "<text x=\"\(Int(left))\" y=\"16\" font-size=\"13\" font-weight=\"bold\">"
        out += "\(HTMLText.escaped(title))</text>\n"
        for c in 0..<n {
            out += "<text x=\"\(Int(left + cell * (Double(c) + 0.5)))\" y=\"\(Int(top - 8))\" text-anchor=\"middle\" font-size=\"11\">"
            out += "\(HTMLText.escaped(names[c]))</text>\n"
            out += "<text x=\"\(Int(left - 8))\" y=\"\(Int(top + cell * (Double(c) + 0.5) + 4))\" text-anchor=\"end\" font-size=\"11\">"
            out += "\(HTMLText.escaped(names[c]))</text>\n"
        }
        for t in 0..<n {
            let row = max(1, (0..<n).reduce(0) { $0 + matrix.count(truth: t, predicted: $1) })
            for p in 0..<n {
                let share = Double(matrix.count(truth: t, predicted: p)) / Double(row)
                let level = Int((255 * (1 - share)).rounded())
                let fill = String(format: "#%02X%02XFF", level, level)
                let (x, y) = (Int(left + cell * Double(p)), Int(top + cell * Double(t)))
                out +=
                    "<rect class=\"cell\" x=\"\(x)\" y=\"\(y)\" width=\"\(Int(cell))\" height=\"\(Int(cell))\" "
                    + "fill=\"\(fill)\" stroke=\"#fff\"/>"
                out += "<text x=\"\(Int(left + cell * (Double(p) + 0.5)))\" y=\"\(Int(top + cell * (Double(t) + 0.5) + 4))\" "
                out += "text-anchor=\"middle\" font-size=\"11\" fill=\"\(share > 0.5 ? "#fff" : "#000")\">"
                out += String(format: "%.1f%%", share * 100) + "</text>\n"
            }
        }
        return out + "</svg>\n"
    }

    // MARK: Worst images

    /// Draws the `count` worst of `assessment.worst` from `dataset`: image, truth and prediction at `threshold`.
    public static func worstImages(
        _ model: SegmentationModel, on dataset: any TrainingImages, assessment: Trainer.Assessment, count: Int, threshold: Float,
        precision: InferencePrecision = .fp32
    ) throws -> [WorstImage] {
        let segmenter = try Segmenter(model: model, precision: precision)
        let colors = (0..<model.configuration.classes).map { c -> RGB in
            c < model.classes.count && model.classes[c].color != 0 ? model.classes[c].rgb : RGB(230, 60, 40)
        }
        var out: [WorstImage] = []
        for (rank, (index, iou)) in assessment.worst.prefix(max(0, count)).enumerated() {
            let item = try dataset.image(at: index)
            let predicted = try segmenter.segment(item.image).mask(threshold: threshold)
            let plain = try item.image.overlay(
                mask: Image8(validWidth: item.image.width, height: item.image.height), colors: colors, opacity: 0)
            let truth = try item.image.overlay(mask: item.mask, colors: colors, opacity: 0.5)
            let prediction = try item.image.overlay(mask: predicted, colors: colors, opacity: 0.5)
            let gap = 4, w = item.image.width, h = item.image.height
            var strip = try Image8(width: 3 * w + 2 * gap, height: h, channels: 3, fill: 255)
            for (panel, source) in [plain, truth, prediction].enumerated() {
                for y in 0..<h {
                    let from = y * w * 3, to = (y * strip.width + panel * (w + gap)) * 3
                    strip.samples.replaceSubrange(to..<(to + w * 3), with: source.samples[from..<(from + w * 3)])
                }
            }
            out.append(
                WorstImage(
                    name: item.name, defectIoU: iou, fileName: String(format: "worst-%02d.png", rank + 1), png: try PNGCodec.encode(strip),
                    width: strip.width, height: strip.height))
        }
        return out
    }
}
