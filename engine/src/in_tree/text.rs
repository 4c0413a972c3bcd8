//! CEL source text: literals, field selection and the field paths messages name, written so
//! the apiserver's CEL environment (homogeneous aggregate literals, RE2 regex literals) accepts
//! them as they are.

use serde_json::Value;

use crate::cel::CEL_RESERVED_WORDS as RESERVED;

/// `text` as a CEL string literal.
pub fn string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A JSON value as a CEL literal. Members of lists and maps are wrapped in `dyn()` so that a
/// list or map mixing types is still a valid literal.
pub fn literal(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        Value::String(s) => string(s),
        Value::Array(items) => {
            let items: Vec<String> = items
                .iter()
                .map(|item| format!("dyn({})", literal(item)))
                .collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(members) => {
            let members: Vec<String> = members
                .iter()
                .map(|(k, v)| format!("{}: dyn({})", string(k), literal(v)))
                .collect();
            format!("{{{}}}", members.join(", "))
        }
    }
}

/// A JSON number as CEL reads JSON: integers are `int` (`uint` beyond), the rest `double`.
pub fn number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return format!("{u}u");
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    let text = format!("{f:?}");
    if text.contains(['.', 'e', 'E']) {
        text
    } else {
        format!("{text}.0")
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !RESERVED.contains(&name)
}

/// Member `name` of the map `base`.
pub fn select(base: &str, name: &str) -> String {
    if is_identifier(name) {
        format!("{base}.{name}")
    } else {
        format!("{base}[{}]", string(name))
    }
}

/// Whether the map `base` has member `name`.
pub fn has(base: &str, name: &str) -> String {
    if is_identifier(name) {
        format!("has({base}.{name})")
    } else {
        format!("{} in {base}", string(name))
    }
}

/// Whether CEL reads `value`'s type as JSON Schema type `name`.
pub fn is_type(value: &str, name: &str) -> String {
    match name {
        "string" => format!("type({value}) == string"),
        "boolean" => format!("type({value}) == bool"),
        "object" => format!("type({value}) == map"),
        "array" => format!("type({value}) == list"),
        "null" => format!("{value} == null"),
        // (`type(v) in [int, double]` is refused: a list literal must not mix types.)
        "number" => {
            format!("(type({value}) == int || type({value}) == uint || type({value}) == double)")
        }
        // JSON Schema counts `2.0` as an integer.
        "integer" => format!(
            "(type({value}) == int || type({value}) == uint || (type({value}) == double && {value} >= -9.0e18 && {value} <= 9.0e18 && double(int({value})) == {value}))"
        ),
        _ => "false".into(),
    }
}

/// One step of a field path as messages write it (`crate::path::FieldPath`'s display).
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    /// A list index held in a CEL variable.
    Index(String),
    /// A map key held in a CEL variable.
    MapKey(String),
}

/// The field path of a value, as a CEL string expression once the variables of the
/// comprehensions around it are bound.
#[derive(Debug, Clone, Default)]
pub struct Path(Vec<Step>);

impl Path {
    pub fn key(&self, name: &str) -> Self {
        self.with(Step::Key(name.to_string()))
    }

    pub fn index(&self, variable: &str) -> Self {
        self.with(Step::Index(variable.to_string()))
    }

    pub fn map_key(&self, variable: &str) -> Self {
        self.with(Step::MapKey(variable.to_string()))
    }

    /// Appends a rule's `fieldPath` (already parsed).
    pub fn extend(&self, path: &crate::path::FieldPath) -> Self {
        let mut out = self.clone();
        for segment in &path.0 {
            out.0.push(match segment {
                crate::path::Segment::Key(k) => Step::Key(k.clone()),
                crate::path::Segment::Index(i) => Step::Index(i.to_string()),
            });
        }
        out
    }

    fn with(&self, step: Step) -> Self {
        let mut out = self.clone();
        out.0.push(step);
        out
    }

    /// `"<path>: <message>"` as a CEL string expression.
    pub fn message(&self, message: &str) -> String {
        self.message_with(&string(&format!(": {message}")))
    }

    /// The path followed by the CEL string expression `rest`.
    pub fn message_with(&self, rest: &str) -> String {
        let mut parts = Pieces::default();
        if self.0.is_empty() {
            parts.text("(object)");
        }
        for (idx, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(k) if is_plain_key(k) => {
                    if idx > 0 {
                        parts.text(".");
                    }
                    parts.text(k);
                }
                Step::Key(k) => parts.text(&format!("[{}]", Value::String(k.clone()))),
                Step::Index(variable) => {
                    parts.text("[");
                    parts.expression(format!("string({variable})"));
                    parts.text("]");
                }
                Step::MapKey(variable) => {
                    let dot = if idx > 0 { "'.' + " } else { "" };
                    parts.expression(format!(
                        "({variable}.matches('^[A-Za-z0-9_$-]+$') ? {dot}{variable} : '[' + strings.quote({variable}) + ']')"
                    ));
                }
            }
        }
        parts.expression(rest.to_string());
        parts.finish()
    }
}

/// The display rule of `crate::path`: plain keys are dotted, others quoted in brackets.
fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
}

/// A string concatenation, constant runs merged.
#[derive(Default)]
struct Pieces {
    parts: Vec<String>,
    pending: String,
}

impl Pieces {
    fn text(&mut self, text: &str) {
        self.pending.push_str(text);
    }

    fn expression(&mut self, expression: String) {
        self.flush();
        self.parts.push(expression);
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            let text = std::mem::take(&mut self.pending);
            self.parts.push(string(&text));
        }
    }

    fn finish(mut self) -> String {
        self.flush();
        // Adjacent constants: a path that ends in a key followed by a constant message.
        let mut merged: Vec<String> = Vec::new();
        for part in self.parts {
            match merged.last_mut() {
                Some(last) if is_constant(last) && is_constant(&part) => {
                    let joined = format!(
                        "{}{}",
                        unquote(last).unwrap_or_default(),
                        unquote(&part).unwrap_or_default()
                    );
                    *last = string(&joined);
                }
                _ => merged.push(part),
            }
        }
        merged.join(" + ")
    }
}

fn is_constant(part: &str) -> bool {
    unquote(part).is_some()
}

/// The text of a literal `string` wrote, if `part` is exactly one.
fn unquote(part: &str) -> Option<String> {
    let inner = part.strip_prefix('\'')?.strip_suffix('\'')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                '\\' => out.push('\\'),
                '\'' => out.push('\''),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                _ => return None,
            },
            '\'' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn literals_escape_and_mix_types() {
        assert_eq!(string("a'b\\c\n"), r"'a\'b\\c\n'");
        assert_eq!(
            literal(&json!({"a": [1, "x"], "b": null})),
            "{'a': dyn([dyn(1), dyn('x')]), 'b': dyn(null)}"
        );
        assert_eq!(literal(&json!(1.5)), "1.5");
        assert_eq!(literal(&json!(1e300)), "1e300");
        assert_eq!(literal(&json!(u64::MAX)), "18446744073709551615u");
    }

    #[test]
    fn names_that_are_not_identifiers_are_indexed() {
        assert_eq!(select("object", "spec"), "object.spec");
        assert_eq!(
            select("object.metadata", "namespace"),
            "object.metadata['namespace']"
        );
        assert_eq!(select("v", "a-b"), "v['a-b']");
        assert_eq!(has("v", "a.b"), "'a.b' in v");
        assert_eq!(has("v", "spec"), "has(v.spec)");
    }

    #[test]
    fn paths_read_as_the_webhook_writes_them() {
        let path = Path::default().key("spec").key("currencies").index("i0");
        assert_eq!(
            path.message("must not be empty"),
            "'spec.currencies[' + string(i0) + ']: must not be empty'"
        );
        assert_eq!(Path::default().message("x"), "'(object): x'");
        assert_eq!(
            Path::default()
                .key("spec")
                .key("a.b")
                .message("is required"),
            r#"'spec["a.b"]: is required'"#
        );
        let keyed = Path::default().key("spec").map_key("k1");
        assert!(keyed.message("x").contains("strings.quote(k1)"));
    }
}
