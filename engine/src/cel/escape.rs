//! How the apiserver names object properties in CEL (k8s.io/apiserver `pkg/cel.Escape`): shared
//! by value conversion, projections, cost estimation and in-tree compilation.

use std::borrow::Cow;

/// CEL's reserved words: never an identifier (a property so named is escaped, and cannot follow
/// a `.` in an expression).
pub(crate) const CEL_RESERVED_WORDS: &[&str] = &[
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// The apiserver's escaping of property names into CEL identifiers (k8s.io/apiserver
/// `pkg/cel.Escape`): reserved words become `__word__`; `__`, `.`, `-` and `/` become
/// `__underscores__`, `__dot__`, `__dash__` and `__slash__`; a single `_` stays as it is.
/// `None` for a name CEL cannot see at all (empty, leading digit, any other character): the
/// apiserver leaves such a property out of `self`.
pub fn escape_field_name(name: &str) -> Option<Cow<'_, str>> {
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    if CEL_RESERVED_WORDS.contains(&name) {
        return Some(Cow::Owned(format!("__{name}__")));
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if name.chars().all(plain) && !name.contains("__") {
        return Some(Cow::Borrowed(name));
    }
    let mut escaped = String::with_capacity(name.len() * 2);
    let mut rest = name;
    while let Some(c) = rest.chars().next() {
        let taken = if rest.starts_with("__") {
            escaped.push_str("__underscores__");
            2
        } else {
            match c {
                '.' => escaped.push_str("__dot__"),
                '-' => escaped.push_str("__dash__"),
                '/' => escaped.push_str("__slash__"),
                c if plain(c) => escaped.push(c),
                _ => return None,
            }
            c.len_utf8()
        };
        rest = rest.get(taken..).unwrap_or_default();
    }
    Some(Cow::Owned(escaped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_the_apiserver() {
        let escaped = |name| escape_field_name(name).map(Cow::into_owned);
        assert_eq!(escaped("replicas").as_deref(), Some("replicas"));
        assert_eq!(escaped("team_name").as_deref(), Some("team_name"));
        assert_eq!(escaped("foo-bar").as_deref(), Some("foo__dash__bar"));
        assert_eq!(escaped("a_b.c/d").as_deref(), Some("a_b__dot__c__slash__d"));
        assert_eq!(escaped("a__b").as_deref(), Some("a__underscores__b"));
        assert_eq!(escaped("a___b").as_deref(), Some("a__underscores___b"));
        assert_eq!(escaped("namespace").as_deref(), Some("__namespace__"));
        assert_eq!(escaped("_x").as_deref(), Some("_x"));
        for hidden in ["", "1st", "a:b", "a b", "é"] {
            assert_eq!(escaped(hidden), None, "{hidden:?}");
        }
    }
}
