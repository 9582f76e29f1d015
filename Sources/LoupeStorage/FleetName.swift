/// The one rule for names that travel through the fleet: camera ids,
/// operator and user names, inspection types, ROI names, group names, model
/// versions and imported file names. 1 to 64 of `A-Z a-z 0-9 . _ -`,
/// starting with a letter or digit (so never `.` or `..`): safe in file
/// names, URLs, log lines and certificate subjects.
public enum FleetName {
    public static let rule = "1–64 letters, digits, '.', '_' or '-', starting with a letter or digit"

    /// What is wrong with `name`, or nil when it follows the rule.
    public static func problem(with name: String) -> String? {
        let scalars = name.unicodeScalars
        guard !scalars.isEmpty, scalars.count <= 64 else { return "must be 1 to 64 characters" }
        guard scalars.allSatisfy({ isAlphanumeric($0) || $0 == "." || $0 == "_" || $0 == "-" }) else {
            return "only letters, digits, '.', '_' and '-' are allowed"
        }
        guard let first = scalars.first, isAlphanumeric(first) else { return "must start with a letter or digit" }
        return nil
    }

    public static func isValid(_ name: String) -> Bool { problem(with: name) == nil }

    /// The refusal for an error message: `inspection type "x/y" must be 1–64 letters, …`.
    public static func refusal(_ what: String, _ name: String) -> String { "\(what) \"\(name.prefix(80))\" must be \(rule)" }

    private static func isAlphanumeric(_ scalar: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar)
    }
}

/// The rule for defect class names, which are free text shown on the page and in reports (unlike fleet names):
/// 1–64 characters each, no two alike. The agent holds its recipe's classes to it, the manager every upload's.
public enum ClassNames {
    public static let rule = "unique, 1–64 characters each"

    /// What is wrong with `names`, or nil when they follow the rule.
    public static func problem(with names: [String]) -> String? {
        guard names.allSatisfy({ !$0.isEmpty && $0.count <= 64 }), Set(names).count == names.count else {
            return "class names must be \(rule)"
        }
        return nil
    }
}
