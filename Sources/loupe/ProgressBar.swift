import Foundation

/// A progress bar on a terminal; on a pipe, a plain line at most every few seconds.
final class ProgressBar: @unchecked Sendable {
    private let isTerminal = isatty(STDERR_FILENO) == 1
    private let lock = NSLock()
    private var lastPlain = Date.distantPast
    private var shown = false

    /// A bar with `fraction` done, then `text`.
    func update(fraction: Double, _ text: String) {
        let clamped = min(1, max(0, fraction))
        let width = 30
        let filled = Int(clamped * Double(width))
        let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
        show(
            terminal: "\(bar) \(String(format: "%3.0f%%", clamped * 100)) \(text)",
            plain: "\(String(format: "%3.0f%%", clamped * 100)) \(text)", final: clamped >= 1)
    }

    /// Just a line of text (work whose length is not known up front).
    func update(_ text: String) {
        show(terminal: text, plain: text, final: false)
    }

    private func show(terminal: String, plain: String, final: Bool) {
        lock.lock()
        defer { lock.unlock() }
        if isTerminal {
            FileHandle.standardError.write(Data("\r\u{1B}[K\(terminal)".utf8))
            shown = true
        } else if Date().timeIntervalSince(lastPlain) >= 5 || final {
            lastPlain = Date()
            FileHandle.standardError.write(Data("\(plain)\n".utf8))
        }
    }

    /// A line that stays above the bar.
    func log(_ text: String) {
        lock.lock()
        defer { lock.unlock() }
        if isTerminal && shown { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        FileHandle.standardError.write(Data("\(text)\n".utf8))
    }

    func finish() {
        lock.lock()
        defer { lock.unlock() }
        if isTerminal && shown { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        shown = false
    }
}

func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "--:--" }
    let s = Int(seconds.rounded())
    return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, (s / 60) % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
}
