import Foundation

/// Columns padded to their widest cell, two spaces apart: the CLI's human output.
enum TextTable {
    static func render(header: [String], rows: [[String]]) -> String {
        let table = [header] + rows
        let widths = header.indices.map { column in table.map { $0[column].count }.max() ?? 0 }
        return table.map { row in
            row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}
