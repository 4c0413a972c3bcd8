//! The CRD schema dialect (OpenAPI v3 as `openAPIV3Schema` writes it) rewritten into the JSON
//! Schema 2020-12 that jsonschema validates, keyword by keyword as the apiserver reads it
//! (k8s.io/apiextensions-apiserver `ConvertJSONSchemaPropsWithPostProcess` and kube-openapi's
//! validators):
//!
//! - `nullable: true` lets `null` pass the `type` check (an `enum` still has to list it);
//! - `x-kubernetes-int-or-string: true` is `type: [integer, string]`;
//! - OpenAPI's boolean `exclusiveMinimum` / `exclusiveMaximum` turn their `minimum` /
//!   `maximum` exclusive;
//! - `x-kubernetes-embedded-resource: true` requires `apiVersion` and `kind`;
//! - `format` is one of the apiserver's formats (checked by `formats`) or is dropped, as the
//!   apiserver drops the formats it does not know.
//!
//! Plain JSON Schema (a policy that never uses these keywords) passes through unchanged, apart
//! from `format`.

use serde_json::{Map, Value};

use super::formats;

/// Keywords whose value is a map of names to schemas.
const SCHEMA_MAPS: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];
/// Keywords whose value is one schema (or, for `items` and `additionalProperties`, a boolean).
const SCHEMA_SLOTS: &[&str] = &[
    "additionalProperties",
    "items",
    "additionalItems",
    "not",
    "contains",
    "propertyNames",
    "if",
    "then",
    "else",
    "unevaluatedProperties",
    "unevaluatedItems",
];
/// Keywords whose value is a list of schemas.
const SCHEMA_LISTS: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];

/// Every subschema one level below the schema node `node`, wherever a keyword holds one.
pub fn subschemas(node: &Map<String, Value>) -> impl Iterator<Item = &Value> {
    let maps = SCHEMA_MAPS
        .iter()
        .filter_map(|k| node.get(*k)?.as_object())
        .flat_map(|m| m.values());
    let slots = SCHEMA_SLOTS
        .iter()
        .filter_map(|k| node.get(*k))
        .flat_map(|slot| match slot {
            Value::Array(items) => items.iter().collect::<Vec<_>>(),
            other => vec![other],
        });
    let lists = SCHEMA_LISTS
        .iter()
        .filter_map(|k| node.get(*k)?.as_array())
        .flatten();
    maps.chain(slots).chain(lists)
}

/// `schema` as jsonschema should validate it.
pub fn to_json_schema(schema: &Value) -> Value {
    let mut out = schema.clone();
    rewrite(&mut out);
    out
}

fn rewrite(node: &mut Value) {
    let Value::Object(map) = node else {
        return;
    };
    for keyword in SCHEMA_MAPS {
        if let Some(Value::Object(children)) = map.get_mut(*keyword) {
            children.values_mut().for_each(rewrite);
        }
    }
    for keyword in SCHEMA_SLOTS {
        if let Some(child) = map.get_mut(*keyword) {
            match child {
                Value::Array(items) => items.iter_mut().for_each(rewrite),
                other => rewrite(other),
            }
        }
    }
    for keyword in SCHEMA_LISTS {
        if let Some(Value::Array(children)) = map.get_mut(*keyword) {
            children.iter_mut().for_each(rewrite);
        }
    }
    rewrite_node(map);
}

fn rewrite_node(map: &mut Map<String, Value>) {
    if map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        map.insert("type".into(), serde_json::json!(["integer", "string"]));
    }
    rewrite_format(map);
    if map.get("nullable") == Some(&Value::Bool(true)) {
        match map.get_mut("type") {
            Some(Value::String(single)) => {
                let single = std::mem::take(single);
                map.insert("type".into(), serde_json::json!([single, "null"]));
            }
            Some(Value::Array(types)) if !types.contains(&Value::from("null")) => {
                types.push(Value::from("null"));
            }
            _ => {}
        }
    }
    for (flag, bound) in [
        ("exclusiveMinimum", "minimum"),
        ("exclusiveMaximum", "maximum"),
    ] {
        match map.get(flag) {
            Some(Value::Bool(true)) => match map.remove(bound) {
                Some(limit) => {
                    map.insert(flag.into(), limit);
                }
                // `exclusiveMaximum: true` without a `maximum` bounds nothing.
                None => {
                    map.remove(flag);
                }
            },
            Some(Value::Bool(false)) => {
                map.remove(flag);
            }
            _ => {}
        }
    }
    if map.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true)) {
        let required = map
            .entry("required")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(names) = required {
            for field in ["apiVersion", "kind"] {
                if !names.iter().any(|n| n == field) {
                    names.push(Value::from(field));
                }
            }
        }
    }
}

/// `format` as the apiserver keeps it: a string format it knows (spelled with or without
/// dashes, as go-openapi normalises names), else nothing — integer and number formats only
/// name a width and are never checked.
fn rewrite_format(map: &mut Map<String, Value>) {
    let Some(Value::String(format)) = map.get("format") else {
        return;
    };
    let single_type = match map.get("type") {
        None => Some(""),
        Some(Value::String(t)) => Some(t.as_str()),
        Some(_) => None,
    };
    let known = match single_type {
        Some("" | "string") => formats::checked_name(format),
        _ => None,
    };
    match known {
        Some(name) => {
            map.insert("format".into(), Value::from(name));
        }
        None => {
            map.remove("format");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rewrites_the_crd_keywords_at_every_depth() {
        let crd = json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "port": {"x-kubernetes-int-or-string": true},
                        "note": {"type": "string", "nullable": true},
                        "ratio": {"type": "number", "maximum": 1, "exclusiveMaximum": true,
                                  "minimum": 0, "exclusiveMinimum": false},
                        "id": {"type": "string", "format": "uuid"},
                        "when": {"type": "string", "format": "date-time"},
                        "free": {"type": "string", "format": "not-a-k8s-format"},
                        "count": {"type": "integer", "format": "int32"},
                        "items": {"type": "array", "items": {"type": "object",
                                  "x-kubernetes-embedded-resource": true}},
                        "properties": {"type": "string", "nullable": true}
                    }
                }
            }
        });
        let spec = &to_json_schema(&crd)["properties"]["spec"]["properties"];
        assert_eq!(spec["port"]["type"], json!(["integer", "string"]));
        assert_eq!(spec["note"]["type"], json!(["string", "null"]));
        assert_eq!(spec["ratio"]["exclusiveMaximum"], json!(1));
        assert_eq!(spec["ratio"].get("maximum"), None);
        assert_eq!(spec["ratio"]["minimum"], json!(0));
        assert_eq!(spec["ratio"].get("exclusiveMinimum"), None);
        assert_eq!(spec["id"]["format"], json!("k8s-uuid"));
        assert_eq!(spec["when"]["format"], json!("k8s-datetime"));
        assert_eq!(spec["free"].get("format"), None);
        assert_eq!(spec["count"].get("format"), None);
        assert_eq!(
            spec["items"]["items"]["required"],
            json!(["apiVersion", "kind"])
        );
        // A property named like a keyword is a schema, not a keyword.
        assert_eq!(spec["properties"]["type"], json!(["string", "null"]));
    }
}
