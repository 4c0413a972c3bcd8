//! The type a schema node declares to CEL, with the two figures the apiserver's cost estimate
//! reads from it: how many elements a value may hold (characters, items, properties) and the
//! smallest it can be once serialised. Ported from k8s.io/apiserver `pkg/cel/common/schemas.go`
//! (`SchemaDeclType`) and `pkg/cel/types.go`, as apiextensions-apiserver feeds it a CRD's
//! structural schema.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::super::escape::escape_field_name;

/// `celconfig.MaxRequestSizeBytes`: the largest request the apiserver accepts, which bounds
/// every list, map and string that has no declared maximum.
pub const MAX_REQUEST_SIZE_BYTES: i64 = 3 * 1024 * 1024;

const MAX_DURATION_SIZE_JSON: i64 = 32;
const MAX_DATETIME_SIZE_JSON: i64 = 32;
const MIN_DURATION_SIZE_JSON: i64 = 3;
const JSON_DATE_SIZE: i64 = 12;
const MIN_DATETIME_SIZE_JSON: i64 = 21;
const MIN_STRING_SIZE: i64 = 2;
const MIN_BOOL_SIZE: i64 = 4;
const MIN_NUMBER_SIZE: i64 = 1;
/// `DNS1123SubdomainMaxLength`, the cap the apiserver puts on `metadata.name` at a resource root.
const NAME_MAX_LENGTH: i64 = 253;

#[derive(Debug, Clone)]
pub enum DeclKind {
    Bool,
    Int,
    Double,
    String,
    Bytes,
    Duration,
    Timestamp,
    /// `x-kubernetes-int-or-string`.
    Dyn,
    List(Arc<Decl>),
    /// `additionalProperties` with a schema: string keys.
    Map(Arc<Decl>),
    /// Declared properties, by their CEL (escaped) names.
    Object(BTreeMap<String, Arc<Decl>>),
}

#[derive(Debug, Clone)]
pub struct Decl {
    pub kind: DeclKind,
    /// `MaxElements`: 0 for numbers, booleans and objects, as the apiserver leaves it.
    pub max_elements: i64,
    pub min_serialized_size: i64,
}

impl Decl {
    fn simple(kind: DeclKind, min_serialized_size: i64, max_elements: i64) -> Arc<Self> {
        Arc::new(Self {
            kind,
            max_elements,
            min_serialized_size,
        })
    }

    /// The key type of every map: the apiserver's shared `StringType`, whose `MaxElements` is 0.
    pub fn map_key() -> Arc<Self> {
        Self::simple(DeclKind::String, MIN_STRING_SIZE, 0)
    }

    /// `SchemaDeclType(schema, isResourceRoot)`; `None` where the apiserver has no CEL type
    /// (no `type`, an array without `items`).
    pub fn of(schema: &Value, resource_root: bool) -> Option<Arc<Self>> {
        if flag(schema, "x-kubernetes-int-or-string") {
            let max = match int(schema, "maxLength") {
                Some(max) => max.max(0) * 4,
                None => MAX_REQUEST_SIZE_BYTES - 2,
            };
            return Some(Self::simple(DeclKind::Dyn, 1, max));
        }
        match type_name(schema)? {
            "array" => {
                let items = schema.get("items")?;
                let item = Self::of(items, flag(items, "x-kubernetes-embedded-resource"))?;
                let max = match int(schema, "maxItems") {
                    Some(max) => max.max(0),
                    None => (MAX_REQUEST_SIZE_BYTES - 2) / (item.min_serialized_size + 1),
                };
                Some(Self::simple(DeclKind::List(item), 2, max))
            }
            "object" => Self::object(schema, resource_root),
            "string" => Some(Self::string(schema)),
            "boolean" => Some(Self::simple(DeclKind::Bool, MIN_BOOL_SIZE, 0)),
            "number" => Some(Self::simple(DeclKind::Double, MIN_NUMBER_SIZE, 0)),
            "integer" => Some(Self::simple(DeclKind::Int, MIN_NUMBER_SIZE, 0)),
            _ => None,
        }
    }

    fn object(schema: &Value, resource_root: bool) -> Option<Arc<Self>> {
        if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            let value = Self::of(
                additional,
                flag(additional, "x-kubernetes-embedded-resource"),
            )?;
            let max = match int(schema, "maxProperties") {
                Some(max) => max.max(0),
                None => (MAX_REQUEST_SIZE_BYTES - 2) / (value.min_serialized_size + 6),
            };
            return Some(Self::simple(DeclKind::Map(value), 2, max));
        }
        let mut properties: BTreeMap<&str, &Value> = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.iter().map(|(k, v)| (k.as_str(), v)).collect())
            .unwrap_or_default();
        let resource_meta;
        if resource_root && !has_type_and_object_meta(schema) {
            resource_meta = type_and_object_meta(schema);
            for (name, property) in &resource_meta {
                properties.insert(name, property);
            }
        }
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut fields = BTreeMap::new();
        let mut min_serialized_size = 2;
        for (name, property) in properties {
            let Some(field) = Self::of(property, flag(property, "x-kubernetes-embedded-resource"))
            else {
                continue;
            };
            if required.contains(&name) && property.get("default").is_none() {
                min_serialized_size += name.len() as i64 + field.min_serialized_size + 4;
            }
            if let Some(escaped) = escape_field_name(name) {
                fields.insert(escaped.into_owned(), field);
            }
        }
        Some(Self::simple(
            DeclKind::Object(fields),
            min_serialized_size,
            0,
        ))
    }

    fn string(schema: &Value) -> Arc<Self> {
        let max_length = int(schema, "maxLength");
        match schema.get("format").and_then(Value::as_str) {
            Some("byte") => Self::simple(
                DeclKind::Bytes,
                MIN_STRING_SIZE,
                max_length.map_or(MAX_REQUEST_SIZE_BYTES - 2, |m| m.max(0)),
            ),
            Some("duration") => Self::simple(
                DeclKind::Duration,
                MIN_DURATION_SIZE_JSON,
                MAX_DURATION_SIZE_JSON,
            ),
            Some("date") => Self::simple(DeclKind::Timestamp, JSON_DATE_SIZE, JSON_DATE_SIZE),
            Some("date-time") => Self::simple(
                DeclKind::Timestamp,
                MIN_DATETIME_SIZE_JSON,
                MAX_DATETIME_SIZE_JSON,
            ),
            _ => {
                let enum_max = schema
                    .get("enum")
                    .and_then(Value::as_array)
                    .filter(|e| !e.is_empty())
                    .map(|values| {
                        values
                            .iter()
                            .filter_map(Value::as_str)
                            .map(|s| s.len() as i64)
                            .max()
                            .unwrap_or(0)
                    });
                let max = match (max_length, enum_max) {
                    (Some(max), _) => max.max(0) * 4,
                    (None, Some(longest)) => longest,
                    (None, None) => MAX_REQUEST_SIZE_BYTES - 2,
                };
                Self::simple(DeclKind::String, MIN_STRING_SIZE, max)
            }
        }
    }

    /// The type one step down `path` (`@items`, `@values`, `@keys` or a field's CEL name), as
    /// the apiserver's size estimator walks it.
    pub fn child(&self, step: &str) -> Option<Arc<Decl>> {
        match (&self.kind, step) {
            (DeclKind::List(item), "@items") => Some(item.clone()),
            (DeclKind::Map(value), "@values") => Some(value.clone()),
            (DeclKind::Map(_), "@keys") => Some(Self::map_key()),
            (DeclKind::Object(fields), name) => fields.get(name).cloned(),
            _ => None,
        }
    }
}

/// The schema's `type`; in a JSON Schema list (`[string, "null"]`), the one that is not null.
fn type_name(schema: &Value) -> Option<&str> {
    match schema.get("type")? {
        Value::String(name) => Some(name),
        Value::Array(names) => names
            .iter()
            .filter_map(Value::as_str)
            .find(|name| *name != "null"),
        _ => None,
    }
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name) == Some(&Value::Bool(true))
}

fn int(schema: &Value, name: &str) -> Option<i64> {
    let value = schema.get(name)?;
    value.as_i64().or_else(|| value.as_f64().map(|f| f as i64))
}

fn property<'a>(schema: &'a Value, name: &str) -> Option<&'a Value> {
    schema.get("properties")?.get(name)
}

fn has_type(schema: Option<&Value>, name: &str) -> bool {
    schema.and_then(type_name) == Some(name)
}

/// `WithTypeAndObjectMeta`'s test: the resource root already declares these as the apiserver
/// would.
fn has_type_and_object_meta(schema: &Value) -> bool {
    let metadata = property(schema, "metadata");
    has_type(property(schema, "kind"), "string")
        && has_type(property(schema, "apiVersion"), "string")
        && has_type(metadata, "object")
        && has_type(metadata.and_then(|m| property(m, "name")), "string")
        && has_type(metadata.and_then(|m| property(m, "generateName")), "string")
}

/// What a resource root's `kind`, `apiVersion` and `metadata` are to CEL: strings, and a
/// metadata of just `name` and `generateName`, their lengths capped as names are.
fn type_and_object_meta(schema: &Value) -> Vec<(&'static str, Value)> {
    let metadata = property(schema, "metadata");
    let capped = |name: &str, cap: i64| {
        let declared = metadata
            .and_then(|m| property(m, name))
            .and_then(|p| int(p, "maxLength"))
            .unwrap_or(cap);
        serde_json::json!({"type": "string", "maxLength": declared.min(cap)})
    };
    vec![
        ("kind", serde_json::json!({"type": "string"})),
        ("apiVersion", serde_json::json!({"type": "string"})),
        (
            "metadata",
            serde_json::json!({
                "type": "object",
                "properties": {
                    "name": capped("name", NAME_MAX_LENGTH),
                    "generateName": capped("generateName", NAME_MAX_LENGTH - 1),
                },
            }),
        ),
    ]
}

/// `extractMaxElements`: how many of a child's values one value of `schema` can hold, for the
/// cardinality of the rules below it; `None` for unbounded.
pub fn max_children(schema: &Value) -> Option<u64> {
    match type_name(schema) {
        Some("object") if schema.get("additionalProperties").is_some() => {
            int(schema, "maxProperties").map(|m| m.max(0) as u64)
        }
        Some("array") => int(schema, "maxItems").map(|m| m.max(0) as u64),
        _ => Some(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_lists_and_maps_are_bounded_by_their_schema_or_the_request_size() {
        let string = Decl::of(&json!({"type": "string", "maxLength": 10}), false).unwrap();
        assert_eq!(string.max_elements, 40);
        let unbounded = Decl::of(&json!({"type": "string"}), false).unwrap();
        assert_eq!(unbounded.max_elements, MAX_REQUEST_SIZE_BYTES - 2);
        let enumerated = Decl::of(&json!({"type": "string", "enum": ["a", "abcd"]}), false);
        assert_eq!(enumerated.unwrap().max_elements, 4);
        let list = Decl::of(
            &json!({"type": "array", "items": {"type": "integer"}}),
            false,
        );
        assert_eq!(list.unwrap().max_elements, (MAX_REQUEST_SIZE_BYTES - 2) / 2);
        let map = Decl::of(
            &json!({"type": "object", "additionalProperties": {"type": "string"}}),
            false,
        );
        assert_eq!(map.unwrap().max_elements, (MAX_REQUEST_SIZE_BYTES - 2) / 8);
    }

    #[test]
    fn required_fields_without_defaults_make_an_object_larger() {
        let object = Decl::of(
            &json!({
                "type": "object",
                "required": ["name", "port", "mode"],
                "properties": {
                    "name": {"type": "string"},
                    "port": {"type": "integer"},
                    "mode": {"type": "string", "default": "a"},
                },
            }),
            false,
        )
        .unwrap();
        // {"name":"","port":0}: 2 + (4 + 2 + 4) + (4 + 1 + 4).
        assert_eq!(object.min_serialized_size, 21);
    }

    #[test]
    fn a_resource_root_sees_capped_names() {
        let root = Decl::of(&json!({"type": "object", "properties": {}}), true).unwrap();
        let name = root.child("metadata").unwrap().child("name").unwrap();
        assert_eq!(name.max_elements, 253 * 4);
        assert!(root.child("kind").is_some());
    }
}
