//! JSON to CEL values, as the apiserver presents objects to CRD validation rules: field names
//! escaped (`foo-bar` is `foo__dash__bar`) except in maps, `date-time`, `duration` and `byte`
//! strings typed by their schema format, embedded resources completed. Only the projected part
//! of a value is converted.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use kube_cel::cel::Value as CelValue;
use kube_cel::cel::objects::{Key, Map};
use serde_json::Value;

use crate::instance::Instance;

use super::projection::Projection;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Format {
    #[default]
    Plain,
    DateTime,
    Duration,
    Bytes,
}

/// What value conversion needs to know about one schema node.
#[derive(Debug, Default)]
pub struct ValueSchema {
    format: Format,
    /// `additionalProperties` is a schema or `true`: keys are data and are not escaped.
    is_map: bool,
    embedded_resource: bool,
    /// Sorted by length, then bytes: looked up for every field a rule reads, and a binary search
    /// that mostly compares lengths costs less than hashing the key (SipHash showed in the
    /// profile of every `/validate`) or a B-tree comparing every name it passes byte-wise.
    properties: Vec<(String, Arc<ValueSchema>)>,
    items: Option<Arc<ValueSchema>>,
    additional: Option<Arc<ValueSchema>>,
}

impl ValueSchema {
    pub fn new(schema: &Value) -> Self {
        let format = match schema.get("format").and_then(Value::as_str) {
            _ if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) => {
                Format::Plain
            }
            Some("date-time") => Format::DateTime,
            Some("duration") => Format::Duration,
            Some("byte") => Format::Bytes,
            _ => Format::Plain,
        };
        let additional = schema.get("additionalProperties");
        Self {
            format,
            is_map: !matches!(additional, None | Some(Value::Bool(false))),
            embedded_resource: schema.get("x-kubernetes-embedded-resource")
                == Some(&Value::Bool(true)),
            properties: schema
                .get("properties")
                .and_then(Value::as_object)
                .map(|props| {
                    let mut properties: Vec<_> = props
                        .iter()
                        .map(|(name, child)| (name.clone(), Arc::new(Self::new(child))))
                        .collect();
                    properties.sort_by(|(a, _), (b, _)| by_length_then_bytes(a, b));
                    properties
                })
                .unwrap_or_default(),
            items: schema
                .get("items")
                .filter(|i| i.is_object())
                .map(|i| Arc::new(Self::new(i))),
            additional: additional
                .filter(|a| a.is_object())
                .map(|a| Arc::new(Self::new(a))),
        }
    }

    pub fn child(&self, key: &str) -> Option<&ValueSchema> {
        self.shared_child(key).map(|child| &**child)
    }

    /// `child`, shared.
    pub fn shared_child(&self, key: &str) -> Option<&Arc<ValueSchema>> {
        self.properties
            .binary_search_by(|(name, _)| by_length_then_bytes(name, key))
            .ok()
            .and_then(|at| self.properties.get(at))
            .map(|(_, child)| child)
            .or(self.additional.as_ref())
    }
}

fn by_length_then_bytes(a: &str, b: &str) -> std::cmp::Ordering {
    (a.len(), a.as_bytes()).cmp(&(b.len(), b.as_bytes()))
}

/// How object keys become CEL field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// CRD validation rules: property names are escaped (maps' keys are not).
    Escaped,
    /// Admission-policy expressions: keys as they are.
    AsIs,
}

/// `value` as CEL sees it at `schema`, restricted to `projection` (read where it is: a
/// document is converted as directly as a `Value`).
pub fn convert(
    value: Instance<'_>,
    schema: Option<&ValueSchema>,
    projection: &Projection,
    keys: Keys,
) -> CelValue {
    if value.is_null() {
        return CelValue::Null;
    }
    if let Some(b) = value.as_bool() {
        return CelValue::Bool(b);
    }
    if let Some(n) = value.as_number() {
        return number(n);
    }
    if let Some(s) = value.as_str() {
        return string(s, schema.map_or(Format::Plain, |s| s.format));
    }
    if value.array_len().is_some() {
        // Lists are observed element by element only through whole-value operations.
        let item_schema = schema.and_then(|s| s.items.as_deref());
        return CelValue::List(Arc::new(
            value
                .items()
                .map(|item| convert(item, item_schema, &Projection::Whole, keys))
                .collect(),
        ));
    }
    let escape_keys = keys == Keys::Escaped && !schema.is_some_and(|s| s.is_map);
    let mut map = HashMap::new();
    for (key, child) in value.members() {
        let name = if escape_keys {
            // A property CEL cannot name is not part of `self`.
            let Some(name) = escape_field_name(key) else {
                continue;
            };
            name
        } else {
            Cow::Borrowed(key)
        };
        let Some(below) = projection.field(&name) else {
            continue;
        };
        let child_schema = schema.and_then(|s| s.child(key));
        map.insert(
            Key::String(Arc::new(name.into_owned())),
            convert(child, child_schema, below, keys),
        );
    }
    if schema.is_some_and(|s| s.embedded_resource) {
        for (field, empty) in [
            ("apiVersion", CelValue::String(Arc::new(String::new()))),
            ("kind", CelValue::String(Arc::new(String::new()))),
            (
                "metadata",
                CelValue::Map(Map {
                    map: Arc::new(HashMap::new()),
                }),
            ),
        ] {
            if projection.field(field).is_some() {
                map.entry(Key::String(Arc::new(field.to_string())))
                    .or_insert(empty);
            }
        }
    }
    CelValue::Map(Map { map: Arc::new(map) })
}

/// JSON as CEL sees Kubernetes objects: integers are `int`, unsigned only beyond `i64`.
fn number(n: &serde_json::Number) -> CelValue {
    match (n.as_i64(), n.as_u64()) {
        (Some(i), _) => CelValue::Int(i),
        (None, Some(u)) => CelValue::UInt(u),
        _ => CelValue::Float(n.as_f64().unwrap_or(f64::NAN)),
    }
}

/// A string typed by its format; one that does not parse stays a string (schema validation
/// reports it).
fn string(s: &str, format: Format) -> CelValue {
    let typed = match format {
        Format::Plain => None,
        Format::DateTime => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(CelValue::Timestamp),
        Format::Duration => go_duration(s).map(CelValue::Duration),
        Format::Bytes => base64::engine::general_purpose::STANDARD
            .decode(s)
            .ok()
            .map(|b| CelValue::Bytes(Arc::new(b))),
    };
    typed.unwrap_or_else(|| CelValue::String(Arc::new(s.to_string())))
}

fn go_duration(text: &str) -> Option<chrono::Duration> {
    let seconds = crate::duration::go_duration_seconds(text)?;
    let nanos = seconds * 1e9;
    (nanos.abs() < i64::MAX as f64).then(|| chrono::Duration::nanoseconds(nanos as i64))
}

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

/// A plain map of string keys, for the values tollgate builds itself (`request`).
pub fn map(entries: Vec<(&str, CelValue)>) -> CelValue {
    CelValue::Map(Map {
        map: Arc::new(
            entries
                .into_iter()
                .map(|(k, v)| (Key::String(Arc::new(k.to_string())), v))
                .collect::<HashMap<_, _>>(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_each_property_and_falls_back_to_additional_properties() {
        // Names of equal and different lengths, in no order, each with its own format.
        let formats = [
            ("b", "date-time"),
            ("a", "duration"),
            ("ab", "byte"),
            ("ba", "date-time"),
            ("retry", "duration"),
            ("zz", "byte"),
            ("timeoutSeconds", "date-time"),
            ("aa", "duration"),
        ];
        let properties: serde_json::Map<String, Value> = formats
            .iter()
            .map(|(name, format)| (name.to_string(), json!({"format": format})))
            .collect();
        let expected = |format: &str| match format {
            "date-time" => Format::DateTime,
            "duration" => Format::Duration,
            _ => Format::Bytes,
        };
        let closed = ValueSchema::new(&json!({"properties": properties}));
        let open = ValueSchema::new(
            &json!({"properties": properties, "additionalProperties": {"format": "byte"}}),
        );
        for (name, format) in formats {
            assert_eq!(
                closed.child(name).map(|c| c.format),
                Some(expected(format)),
                "{name}"
            );
            assert_eq!(
                open.child(name).map(|c| c.format),
                Some(expected(format)),
                "{name}"
            );
        }
        for missing in ["", "c", "abc", "retries", "Retry"] {
            assert!(closed.child(missing).is_none(), "{missing}");
            assert_eq!(open.child(missing).map(|c| c.format), Some(Format::Bytes));
        }
    }

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

    #[test]
    fn converts_only_the_projection_with_schema_formats() {
        let schema = ValueSchema::new(&json!({
            "type": "object",
            "properties": {
                "when": {"type": "string", "format": "date-time"},
                "every": {"type": "string", "format": "duration"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "skipped": {"type": "string"}
            }
        }));
        let value = json!({
            "when": "2026-01-02T03:04:05Z",
            "every": "1m30s",
            "labels": {"a-b": "c"},
            "skipped": "x",
            "my-field": 1
        });
        let mut wanted = Projection::Unused;
        let program = kube_cel::cel::Program::compile(
            "self.when > timestamp('2020-01-01T00:00:00Z') && self.every == duration('90s') \
             && self.labels['a-b'] == 'c' && self.my__dash__field == 1",
        );
        assert!(program.is_ok());
        if let Ok(program) = program {
            wanted.add_uses(program.expression(), "self");
        }
        let CelValue::Map(converted) =
            convert((&value).into(), Some(&schema), &wanted, Keys::Escaped)
        else {
            panic!("not a map");
        };
        let keys: Vec<String> = {
            let mut k: Vec<String> = converted.map.keys().map(|k| format!("{k:?}")).collect();
            k.sort();
            k
        };
        assert_eq!(keys.len(), 4, "{keys:?}");
        assert!(!keys.iter().any(|k| k.contains("skipped")));
        assert!(matches!(
            converted.map.get(&Key::String(Arc::new("when".into()))),
            Some(CelValue::Timestamp(_))
        ));
        assert_eq!(
            converted.map.get(&Key::String(Arc::new("every".into()))),
            Some(&CelValue::Duration(chrono::Duration::seconds(90)))
        );
    }
}
