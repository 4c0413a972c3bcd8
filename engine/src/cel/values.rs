//! JSON to CEL values, as the apiserver presents objects to CRD validation rules: field names
//! escaped (`foo-bar` is `foo__dash__bar`) except in maps, `date-time`, `duration` and `byte`
//! strings typed by their schema format, embedded resources completed. Only the projected part
//! of a value is converted.
//!
//! Values are built as the interpreter holds its variables (`Box<dyn Val>`), so binding one is a
//! move. A `cel::Value` bound instead is copied map by map into that form, each map cloned
//! first: on the example's `/validate` that copy was 13 of 99 allocations, and building the
//! values directly measured 9-10 % less CPU per request end to end (BENCHMARKS.md).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use kube_cel::cel::Context;
use kube_cel::cel::common::types::{
    CelBool, CelBytes, CelDouble, CelDuration, CelInt, CelList, CelMap, CelMapKey, CelNull,
    CelString, CelTimestamp, CelUInt,
};
use kube_cel::cel::common::value::Val;
use serde_json::Value;

use crate::instance::Instance;

use super::escape::escape_field_name;
use super::projection::Projection;

/// A value as the interpreter holds it.
pub type CelVal = Box<dyn Val>;

/// Binds `name` to `value` in `ctx` (the scope a rule runs in).
pub fn bind(ctx: &mut Context<'_>, name: &str, value: CelVal) {
    match ctx {
        Context::Root { variables, .. } | Context::Child { variables, .. } => {
            variables.insert(name.to_string(), value);
        }
    }
}

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
) -> CelVal {
    if value.is_null() {
        return Box::new(CelNull);
    }
    if let Some(b) = value.as_bool() {
        return boolean(b);
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
        let items: Vec<CelVal> = value
            .items()
            .map(|item| convert(item, item_schema, &Projection::Whole, keys))
            .collect();
        return list(items);
    }
    let escape_keys = keys == Keys::Escaped && !schema.is_some_and(|s| s.is_map);
    let mut map: HashMap<CelMapKey, CelVal> = HashMap::new();
    match projection {
        // Each observed field looked up where it is: exact when no escaping can lead to it.
        Projection::Fields(fields) if !escape_keys || fields.values().all(|f| f.plain) => {
            map.reserve(fields.len());
            for (name, field) in fields {
                if let Some(child) = value.get(name) {
                    let child_schema = schema.and_then(|s| s.child(name));
                    map.insert(
                        CelMapKey::from(name.as_str()),
                        convert(child, child_schema, &field.below, keys),
                    );
                }
            }
        }
        _ => {
            for (member, child) in value.members() {
                let name = if escape_keys {
                    // A property CEL cannot name is not part of `self`.
                    let Some(name) = escape_field_name(member) else {
                        continue;
                    };
                    name
                } else {
                    Cow::Borrowed(member)
                };
                let below = match projection {
                    Projection::Fields(fields) => match fields.get(name.as_ref()) {
                        Some(field) => &field.below,
                        None => continue,
                    },
                    Projection::Whole => projection,
                    Projection::Unused => continue,
                };
                let child_schema = schema.and_then(|s| s.child(member));
                map.insert(
                    CelMapKey::from(name.into_owned()),
                    convert(child, child_schema, below, keys),
                );
            }
        }
    }
    if schema.is_some_and(|s| s.embedded_resource) {
        for field in ["apiVersion", "kind", "metadata"] {
            if projection.field(field).is_some() {
                map.entry(CelMapKey::from(field)).or_insert_with(|| {
                    if field == "metadata" {
                        Box::new(CelMap::default())
                    } else {
                        text("")
                    }
                });
            }
        }
    }
    Box::new(CelMap::from(map))
}

/// JSON as CEL sees Kubernetes objects: integers are `int`, unsigned only beyond `i64`.
fn number(n: &serde_json::Number) -> CelVal {
    match (n.as_i64(), n.as_u64()) {
        (Some(i), _) => Box::new(CelInt::from(i)),
        (None, Some(u)) => Box::new(CelUInt::from(u)),
        _ => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
    }
}

/// A string typed by its format; one that does not parse stays a string (schema validation
/// reports it).
fn string(s: &str, format: Format) -> CelVal {
    let typed: Option<CelVal> = match format {
        Format::Plain => None,
        Format::DateTime => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| Box::new(CelTimestamp::from(t)) as CelVal),
        Format::Duration => go_duration(s).map(|d| Box::new(CelDuration::from(d)) as CelVal),
        Format::Bytes => base64::engine::general_purpose::STANDARD
            .decode(s)
            .ok()
            .map(|b| Box::new(CelBytes::from(b)) as CelVal),
    };
    typed.unwrap_or_else(|| text(s))
}

fn go_duration(text: &str) -> Option<chrono::Duration> {
    let seconds = crate::duration::go_duration_seconds(text)?;
    let nanos = seconds * 1e9;
    (nanos.abs() < i64::MAX as f64).then(|| chrono::Duration::nanoseconds(nanos as i64))
}

/// A plain map of string keys, for the values tollgate builds itself (`request`).
pub fn map(entries: Vec<(&str, CelVal)>) -> CelVal {
    let map: HashMap<CelMapKey, CelVal> = entries
        .into_iter()
        .map(|(k, v)| (CelMapKey::from(k), v))
        .collect();
    Box::new(CelMap::from(map))
}

/// A string, for the values tollgate builds itself.
pub fn text(s: &str) -> CelVal {
    Box::new(CelString::from(s))
}

/// A boolean, for the values tollgate builds itself.
pub fn boolean(b: bool) -> CelVal {
    Box::new(CelBool::from(b))
}

/// A list, for the values tollgate builds itself.
pub fn list(items: Vec<CelVal>) -> CelVal {
    Box::new(CelList::from(items))
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

    fn projection(rule: &str) -> Projection {
        let mut wanted = Projection::Unused;
        if let Ok(program) = kube_cel::cel::Program::compile(rule) {
            wanted.add_uses(program.expression(), "self");
        }
        wanted
    }

    /// The map's keys, sorted.
    fn keys_of(converted: &CelVal) -> Vec<String> {
        let Some(map) = converted.downcast_ref::<CelMap>() else {
            return Vec::new();
        };
        let mut names: Vec<String> = map
            .keys()
            .map(|k| match k {
                CelMapKey::String(s) => s.inner().to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        names.sort();
        names
    }

    /// The member `name` of a converted map.
    fn member<'v>(converted: &'v CelVal, name: &str) -> Option<&'v dyn Val> {
        let map = converted.downcast_ref::<CelMap>()?;
        map.get(&CelMapKey::from(name)).map(|v| &**v)
    }

    fn converted_keys(rule: &str, value: &Value, keys: Keys) -> Vec<String> {
        keys_of(&convert(value.into(), None, &projection(rule), keys))
    }

    #[test]
    fn plain_fields_are_read_directly_and_escaped_ones_by_escaping_the_members() {
        let value = json!({"a_b": 1, "a-b": 2, "c": {"d": 3, "e": 4}, "in": 5, "__in__": 6});
        // Only plain names: each looked up by name, the escaped neighbours never reached.
        assert_eq!(
            converted_keys("self.a_b == 1 && self.c.d == 3", &value, Keys::Escaped),
            ["a_b", "c"]
        );
        // An escaped name: found by escaping the members, and the plain ones still found.
        assert_eq!(
            converted_keys(
                "self.a__dash__b == 2 && self.a_b == 1",
                &value,
                Keys::Escaped
            ),
            ["a__dash__b", "a_b"]
        );
        // `__in__` is how CEL names the property `in`, never the property `__in__`.
        assert_eq!(
            converted_keys("self.__in__ == 5", &value, Keys::Escaped),
            ["__in__"]
        );
        let converted = convert(
            (&value).into(),
            None,
            &projection("self.__in__ == 5"),
            Keys::Escaped,
        );
        assert_eq!(
            member(&converted, "__in__").and_then(|v| v.downcast_ref::<CelInt>()),
            Some(&CelInt::from(5))
        );
        // Unescaped keys: every name is looked up as it is.
        assert_eq!(
            converted_keys("self.a_b == 1 && self.c == 2", &value, Keys::AsIs),
            ["a_b", "c"]
        );
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
        let converted = convert((&value).into(), Some(&schema), &wanted, Keys::Escaped);
        assert_eq!(
            keys_of(&converted),
            ["every", "labels", "my__dash__field", "when"]
        );
        assert!(
            member(&converted, "when")
                .and_then(|v| v.downcast_ref::<CelTimestamp>())
                .is_some()
        );
        assert_eq!(
            member(&converted, "every").and_then(|v| v.downcast_ref::<CelDuration>()),
            Some(&CelDuration::from(chrono::Duration::seconds(90)))
        );
    }
}
