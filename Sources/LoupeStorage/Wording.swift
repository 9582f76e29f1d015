extension String {
    /// The word after its indefinite article: "an agent", "an operator", "an admin", "a manager", "a viewer".
    /// Chosen by the first letter, which is right for every role and noun Loupe's messages put it before.
    public var withIndefiniteArticle: String {
        guard let first = lowercased().first else { return self }
        return ("aeiou".contains(first) ? "an " : "a ") + self
    }
}
