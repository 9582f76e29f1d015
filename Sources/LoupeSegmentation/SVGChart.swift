import Foundation

/// A line chart drawn as SVG text: axes with ticks, series as polylines (or dots), an optional vertical marker and
/// marked points. No script and no style attribute, so it shows under the agent's content security policy.
struct SVGChart {
    struct Series {
        var name: String
        var color: String
        var points: [(x: Double, y: Double)]
        var dashed = false
    }

    var title: String
    var xLabel: String
    var yLabel: String
    var x: ClosedRange<Double>
    var y: ClosedRange<Double>
    var series: [Series]
    /// A vertical line at this x, labelled.
    var marker: (x: Double, label: String)? = nil
    /// Points to ring, with their labels.
    var marks: [(x: Double, y: Double, color: String, label: String)] = []

    static let width = 460.0, height = 300.0
    private static let left = 56.0, right = 16.0, top = 34.0, bottom = 64.0

    func svg() -> String {
        let w = Self.width, h = Self.height
        let f = Self.f
        let plotWidth = w - Self.left - Self.right, plotHeight = h - Self.top - Self.bottom
        let xSpan = max(x.upperBound - x.lowerBound, 1e-9), ySpan = max(y.upperBound - y.lowerBound, 1e-9)
        func px(_ v: Double) -> Double { Self.left + (min(max(v, x.lowerBound), x.upperBound) - x.lowerBound) / xSpan * plotWidth }
        func py(_ v: Double) -> Double {
            Self.top + plotHeight - (min(max(v, y.lowerBound), y.upperBound) - y.lowerBound) / ySpan * plotHeight
        }
        // The legend's places, under the axis label, wrapping onto more rows (the chart grows by a row each).
        var legend: [(x: Double, row: Int)] = []
        var legendX = Self.left, row = 0
        for s in series {
            let itemWidth = 30 + Double(s.name.count) * 5.6
            if legendX > Self.left, legendX + itemWidth > w - Self.right {
                (legendX, row) = (Self.left, row + 1)
            }
            legend.append((legendX, row))
            legendX += itemWidth
        }
        let total = h + 14 * Double(row)
        var out = """
            <svg xmlns="http://www.w3.org/2000/svg" class="chart" width="\(Int(w))" height="\(Int(total))" \
            viewBox="0 0 \(Int(w)) \(Int(total))" \
            role="img" aria-label="\(HTMLText.escaped(title))">
            <text x="\(f(w / 2))" y="18" text-anchor="middle" font-size="13" font-weight="bold">\(HTMLText.escaped(title))</text>
            <rect x="\(f(Self.left))" y="\(f(Self.top))" width="\(f(plotWidth))" height="\(f(plotHeight))" fill="#fafafa" stroke="#999"/>

            """
        let bottomY = Self.top + plotHeight
        for tick in Self.ticks(x) {
            out += Self.line(px(tick), bottomY, px(tick), bottomY + 4, "stroke=\"#666\"")
            out += Self.text(px(tick), bottomY + 16, Self.label(tick), "text-anchor=\"middle\" font-size=\"10\"")
        }
        for tick in Self.ticks(y) {
            out += Self.line(Self.left, py(tick), Self.left + plotWidth, py(tick), "stroke=\"#e4e4e4\"")
            out += Self.text(Self.left - 5, py(tick) + 3, Self.label(tick), "text-anchor=\"end\" font-size=\"10\"")
        }
        out += Self.text(Self.left + plotWidth / 2, h - 36, xLabel, "text-anchor=\"middle\" font-size=\"11\"")
        let middle = f(Self.top + plotHeight / 2)
        out += Self.text(
            14, Self.top + plotHeight / 2, yLabel, "text-anchor=\"middle\" font-size=\"11\" transform=\"rotate(-90 14 \(middle))\"")
        if let marker {
            out += Self.line(px(marker.x), Self.top, px(marker.x), bottomY, "class=\"marker\" stroke=\"#333\" stroke-dasharray=\"4 3\"")
            out += Self.text(px(marker.x) + 4, Self.top + 12, marker.label, "font-size=\"10\"")
        }
        for s in series where !s.points.isEmpty {
            let path = s.points.map { "\(f(px($0.x))),\(f(py($0.y)))" }.joined(separator: " ")
            out += "<polyline class=\"series\" points=\"\(path)\" fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"2\""
            out += s.dashed ? " stroke-dasharray=\"6 3\"/>" : "/>"
            if s.points.count == 1, let only = s.points.first {
                out += "<circle cx=\"\(f(px(only.x)))\" cy=\"\(f(py(only.y)))\" r=\"3\" fill=\"\(s.color)\"/>"
            }
            out += "\n"
        }
        for mark in marks {
            out += "<circle class=\"mark\" cx=\"\(f(px(mark.x)))\" cy=\"\(f(py(mark.y)))\" r=\"5\" fill=\"none\" stroke=\"\(mark.color)\" "
            out += "stroke-width=\"2\"/>"
            // Near the right edge the label runs leftwards, so it stays inside the chart.
            let leftwards = px(mark.x) > Self.left + plotWidth * 0.7
            out += Self.text(
                px(mark.x) + (leftwards ? -7 : 7), py(mark.y) - 6, mark.label,
                "font-size=\"10\"" + (leftwards ? " text-anchor=\"end\"" : ""))
        }
        for (s, place) in zip(series, legend) {
            let y = h - 14 + 14 * Double(place.row)
            out += Self.line(
                place.x, y, place.x + 18, y, "stroke=\"\(s.color)\" stroke-width=\"2\"" + (s.dashed ? " stroke-dasharray=\"6 3\"" : ""))
            out += Self.text(place.x + 22, y + 4, s.name, "font-size=\"10\"")
        }
        return out + "</svg>\n"
    }

    private static func f(_ v: Double) -> String { String(format: "%.1f", v) }

    /// A line element with these extra attributes.
    static func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double, _ attributes: String) -> String {
        "<line x1=\"\(f(x1))\" y1=\"\(f(y1))\" x2=\"\(f(x2))\" y2=\"\(f(y2))\" \(attributes)/>"
    }

    /// A text element: `content` escaped, with these extra attributes.
    static func text(_ x: Double, _ y: Double, _ content: String, _ attributes: String) -> String {
        "<text x=\"\(f(x))\" y=\"\(f(y))\" \(attributes)>\(HTMLText.escaped(content))</text>\n"
    }

    /// Five or six round ticks across `range`.
    static func ticks(_ range: ClosedRange<Double>) -> [Double] {
        let span = range.upperBound - range.lowerBound
        guard span > 0, span.isFinite else { return [range.lowerBound] }
        let raw = span / 5
        let magnitude = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 2.5, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? raw
        var ticks: [Double] = []
        var tick = (range.lowerBound / step).rounded(.up) * step
        while tick <= range.upperBound + step * 1e-6 {
            ticks.append(tick)
            tick += step
        }
        return ticks
    }

    static func label(_ value: Double) -> String {
        if value == value.rounded(), abs(value) < 1e6 { return String(Int(value)) }
        return String(format: abs(value) < 0.1 ? "%.3g" : "%.2f", value)
    }
}

/// Text made safe for HTML and SVG, in one place.
enum HTMLText {
    static func escaped(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(character)
            }
        }
        return out
    }
}
