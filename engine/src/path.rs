//! Field paths as users write and read them (`spec.retry.maxAttempts`, `spec.currencies[1]`,
//! `metadata.labels["app.kubernetes.io/name"]`) and the RFC 6901 JSON pointers that name the
//! same places inside a document. Every conversion between the two lives here.

use std::fmt;

use crate::instance::Instance;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath(pub Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid field path {path:?}: {reason}")]
pub struct PathParseError {
    pub path: String,
    pub reason: &'static str,
}

impl FieldPath {
    pub fn parse(text: &str) -> Result<Self, PathParseError> {
        let fail = |reason| PathParseError {
            path: text.to_string(),
            reason,
        };
        let mut segments = Vec::new();
        let mut chars = text.chars().peekable();
        let mut expect_key = true;
        while let Some(&c) = chars.peek() {
            match c {
                '[' => {
                    chars.next();
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        let mut key = String::new();
                        loop {
                            match chars.next() {
                                Some('\\') => key
                                    .push(chars.next().ok_or_else(|| fail("unterminated escape"))?),
                                Some('"') => break,
                                Some(other) => key.push(other),
                                None => return Err(fail("unterminated quoted key")),
                            }
                        }
                        segments.push(Segment::Key(key));
                    } else {
                        let mut digits = String::new();
                        while let Some(&d) = chars.peek() {
                            if d == ']' {
                                break;
                            }
                            digits.push(d);
                            chars.next();
                        }
                        let index = digits
                            .parse()
                            .map_err(|_| fail("index must be a number or a quoted key"))?;
                        segments.push(Segment::Index(index));
                    }
                    if chars.next() != Some(']') {
                        return Err(fail("missing ']'"));
                    }
                    expect_key = false;
                }
                '.' => {
                    chars.next();
                    if expect_key {
                        return Err(fail("empty segment"));
                    }
                    expect_key = true;
                }
                _ => {
                    if !expect_key {
                        return Err(fail("expected '.' or '[' between segments"));
                    }
                    let mut key = String::new();
                    while let Some(&k) = chars.peek() {
                        if k == '.' || k == '[' {
                            break;
                        }
                        key.push(k);
                        chars.next();
                    }
                    segments.push(Segment::Key(key));
                    expect_key = false;
                }
            }
        }
        if segments.is_empty() {
            return Err(fail("path is empty"));
        }
        if expect_key {
            return Err(fail("path ends with '.'"));
        }
        Ok(Self(segments))
    }

    pub fn child(&self, key: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_string()));
        Self(segments)
    }

    pub fn get<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        self.0
            .iter()
            .try_fold(value, |current, segment| match segment {
                Segment::Key(k) => current.as_object()?.get(k),
                Segment::Index(i) => current.as_array()?.get(*i),
            })
    }

    /// `get` on either form of an object under evaluation.
    pub fn get_in<'v>(&self, value: Instance<'v>) -> Option<Instance<'v>> {
        self.0
            .iter()
            .try_fold(value, |current, segment| match segment {
                Segment::Key(k) => current.get(k),
                Segment::Index(i) => current.items().nth(*i),
            })
    }

    /// The first key, e.g. `"spec"` for `spec.replicas`.
    pub fn first_key(&self) -> Option<&str> {
        match self.0.first() {
            Some(Segment::Key(k)) => Some(k),
            _ => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(object)");
        }
        for (idx, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(k) if is_plain_key(k) => {
                    if idx > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Segment::Key(k) => write!(f, "[{}]", serde_json::Value::String(k.clone()))?,
                Segment::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
}

/// RFC 6901 escaping of one pointer segment.
pub fn escape_pointer(segment: &str) -> String {
    let mut escaped = String::with_capacity(segment.len());
    push_escaped(&mut escaped, segment);
    escaped
}

/// Appends `segment` escaped; nearly every key needs no escaping, so it is copied whole.
fn push_escaped(out: &mut String, segment: &str) {
    if !segment.contains(['~', '/']) {
        out.push_str(segment);
        return;
    }
    for c in segment.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
}

/// The RFC 6901 pointer naming the field reached through `keys`.
pub fn pointer_from_keys(keys: &[String]) -> String {
    let mut pointer = String::with_capacity(keys.iter().map(|k| k.len() + 1).sum());
    for key in keys {
        pointer.push('/');
        push_escaped(&mut pointer, key);
    }
    pointer
}

/// The unescaped keys of an RFC 6901 pointer (`""` is the root, with no keys).
pub fn keys_from_pointer(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|s| {
            if s.contains('~') {
                s.replace("~1", "/").replace("~0", "~")
            } else {
                s.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_displays_round_trip() -> Result<(), PathParseError> {
        for text in [
            "spec.provider",
            "spec.currencies[1]",
            "metadata.labels[\"app.kubernetes.io/name\"]",
            "spec.retry.maxAttempts",
        ] {
            assert_eq!(FieldPath::parse(text)?.to_string(), text);
        }
        Ok(())
    }

    #[test]
    fn rejects_malformed_paths() {
        for text in [
            "",
            "spec.",
            ".spec",
            "spec..x",
            "spec[abc]",
            "spec[\"x",
            "spec[1]x",
        ] {
            assert!(FieldPath::parse(text).is_err(), "{text} should be rejected");
        }
    }

    #[test]
    fn escapes_pointer_segments() {
        assert_eq!(escape_pointer("a/b~c"), "a~1b~0c");
        assert_eq!(escape_pointer("~1"), "~01");
        assert_eq!(escape_pointer("plain"), "plain");
    }

    #[test]
    fn pointers_round_trip_odd_keys() {
        let keys = vec![
            "a/b".to_string(),
            "c~d".to_string(),
            String::new(),
            "~1/".to_string(),
            "plain".to_string(),
        ];
        assert_eq!(pointer_from_keys(&keys), "/a~1b/c~0d//~01~1/plain");
        assert_eq!(keys_from_pointer(&pointer_from_keys(&keys)), keys);
    }

    #[test]
    fn looks_up_values() -> Result<(), PathParseError> {
        let doc = json!({"spec": {"list": [1, {"a.b": 2}]}});
        assert_eq!(
            FieldPath::parse("spec.list[1][\"a.b\"]")?.get(&doc),
            Some(&json!(2))
        );
        assert_eq!(FieldPath::parse("spec.missing")?.get(&doc), None);
        Ok(())
    }
}
