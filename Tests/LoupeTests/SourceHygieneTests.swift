import Foundation
import Testing

/// The tree stays readable: lines within the width `.swift-format` sets, and no `try!` outside the tests.
@Suite struct SourceHygieneTests {
    static let width = 140

    /// Every Swift file the project writes (generated protobuf code left out).
    static func sources() throws -> [String] {
        var found: [String] = []
        for top in ["Sources", "Agent", "Manager", "Tests", "Package.swift"] {
            let path = Repository.root + "/" + top
            if top.hasSuffix(".swift") {
                found.append(path)
                continue
            }
            guard let walk = FileManager.default.enumerator(atPath: path) else { continue }
            for case let relative as String in walk where relative.hasSuffix(".swift") && !relative.hasSuffix(".pb.swift") {
                found.append(path + "/" + relative)
            }
        }
        return found
    }

    @Test func noLineIsWiderThanTheFormattersWidth() throws {
        let configuration = try String(contentsOfFile: Repository.root + "/.swift-format", encoding: .utf8)
        #expect(configuration.contains("\"lineLength\": \(Self.width)"), "the formatter's width and this test's agree")
        var wide: [String] = []
        let files = try Self.sources()
        #expect(files.count > 100, "the walk found the tree (\(files.count) files)")
        for file in files {
            let lines = try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
            for (number, line) in lines.enumerated() where line.count > Self.width {
                wide.append("\(file.dropFirst(Repository.root.count + 1)):\(number + 1) (\(line.count))")
            }
        }
        #expect(wide.isEmpty, "lines over \(Self.width) characters (run swift-format format --in-place on them): \(wide.prefix(20))")
    }

    @Test func noTryBangOutsideTheTests() throws {
        var found: [String] = []
        for file in try Self.sources() where !file.contains("/Tests/") {
            let lines = try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
            for (number, line) in lines.enumerated()
            where line.contains("try!") && !line.trimmingCharacters(in: .whitespaces).hasPrefix("//") {
                found.append("\(file.dropFirst(Repository.root.count + 1)):\(number + 1)")
            }
        }
        #expect(found.isEmpty, "try! outside the tests: \(found)")
    }
}
