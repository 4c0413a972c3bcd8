//! The structural checks of the CRD dialect that no JSON Schema keyword expresses, made as the
//! apiserver makes them after schema validation:
//!
//! - `x-kubernetes-list-type: set`: no item repeats an earlier one (k8s.io/apiextensions-apiserver
//!   `listtype.ValidateListSetsAndMaps`), reported at the first repeat of each value;
//! - `x-kubernetes-list-type: map`: items are objects and no two share their
//!   `x-kubernetes-list-map-keys` values (a missing key counts as a value of its own);
//! - `x-kubernetes-embedded-resource`: `apiVersion` and `kind` are non-empty strings, the
//!   `apiVersion` a `group/version` and the `kind` a DNS-1035 label in any case
//!   (`objectmeta.validateEmbeddedResource`; `dialect` makes both required).
//!
//! Like the apiserver, the walk follows `properties`, `additionalProperties` and `items`.

use std::collections::HashMap;

use serde_json::Value;

use crate::instance::Instance;
use crate::path::{FieldPath, Segment};
use crate::violation::Violation;

/// Every structural violation of `object` against `schema` (the schema as written): those of
/// `set` and `map` lists, then those of embedded resources (judged apart on UPDATE).
pub fn violations(schema: &Value, object: Instance<'_>) -> Found {
    let mut found = Found::default();
    walk(schema, object, &mut Vec::new(), &mut found, 0);
    found
}

#[derive(Debug, Default)]
pub struct Found {
    pub lists: Vec<Violation>,
    pub embedded: Vec<Violation>,
}

/// `x-kubernetes-list-map-keys` of a schema node, `None` where it has none.
pub(crate) fn map_keys(node: &serde_json::Map<String, Value>) -> Option<Vec<String>> {
    node.get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .map(|keys| {
            keys.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
}

/// Whether `schema` uses anything this module checks (asked once, at load).
pub fn is_needed(schema: &Value) -> bool {
    let Some(node) = schema.as_object() else {
        return false;
    };
    node.contains_key("x-kubernetes-list-type")
        || node.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true))
        || node
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(|properties| properties.values().any(is_needed))
        || ["additionalProperties", "items"]
            .iter()
            .filter_map(|slot| node.get(*slot))
            .any(is_needed)
}

fn walk(
    schema: &Value,
    value: Instance<'_>,
    path: &mut Vec<Segment>,
    found: &mut Found,
    depth: usize,
) {
    // Deeper than any object the apiserver accepts (its decoder stops at 10,000 levels, but
    // schemas are far shallower); a cycle cannot occur since the walk follows the object.
    if depth > 256 {
        return;
    }
    let Some(node) = schema.as_object() else {
        return;
    };
    if value.array_len().is_some() {
        match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => set_duplicates(value, path, &mut found.lists),
            Some("map") => map_duplicates(node, value, path, &mut found.lists),
            _ => {}
        }
        if let Some(items) = node.get("items") {
            for (idx, item) in value.items().enumerate() {
                path.push(Segment::Index(idx));
                walk(items, item, path, found, depth + 1);
                path.pop();
            }
        }
        return;
    }
    if value.object_len().is_none() {
        return;
    }
    if node.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true)) {
        embedded_resource(value, path, &mut found.embedded);
    }
    let properties = node.get("properties").and_then(Value::as_object);
    let additional = node.get("additionalProperties").filter(|a| a.is_object());
    for (key, child) in value.members() {
        let child_schema = properties.and_then(|p| p.get(key)).or(additional);
        if let Some(child_schema) = child_schema {
            path.push(Segment::Key(key.to_string()));
            walk(child_schema, child, path, found, depth + 1);
            path.pop();
        }
    }
}

fn at(path: &[Segment], last: Option<Segment>, message: String) -> Violation {
    let mut full = path.to_vec();
    full.extend(last);
    Violation {
        path: FieldPath(full),
        message,
    }
}

/// The index of the first repeat of each value that repeats. Values are told apart by their
/// JSON text, as the apiserver tells compound items apart (`json.Marshal`; object members come
/// out sorted, and `1` and `1.0` stay different, as Go's int64 and float64 do): one pass, so a
/// long list costs no more than reading it.
fn first_repeats(keys: &[Value]) -> Vec<usize> {
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(keys.len());
    let mut repeats = Vec::new();
    for (idx, key) in keys.iter().enumerate() {
        let times = seen.entry(key.to_string()).or_default();
        *times += 1;
        if *times == 2 {
            repeats.push(idx);
        }
    }
    repeats
}

fn set_duplicates(list: Instance<'_>, path: &[Segment], found: &mut Vec<Violation>) {
    let items: Vec<Value> = list.items().map(|i| i.to_value().into_owned()).collect();
    for idx in first_repeats(&items) {
        found.push(at(
            path,
            Some(Segment::Index(idx)),
            "must not repeat an earlier item (x-kubernetes-list-type: set)".into(),
        ));
    }
}

fn map_duplicates(
    node: &serde_json::Map<String, Value>,
    list: Instance<'_>,
    path: &[Segment],
    found: &mut Vec<Violation>,
) {
    let key_names: Vec<&str> = node
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .map(|keys| keys.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut keys = Vec::new();
    for (idx, item) in list.items().enumerate() {
        if item.is_null() {
            keys.push(Value::Object(serde_json::Map::new()));
            continue;
        }
        if item.object_len().is_none() {
            // The apiserver stops at the first such item.
            found.push(at(
                path,
                Some(Segment::Index(idx)),
                "must be an object (x-kubernetes-list-type: map)".into(),
            ));
            return;
        }
        // A missing key is a value of its own, equal only to another missing key.
        let key: serde_json::Map<String, Value> = key_names
            .iter()
            .filter_map(|name| Some((name.to_string(), item.get(name)?.to_value().into_owned())))
            .collect();
        keys.push(Value::Object(key));
    }
    let names = key_names.join(", ");
    for idx in first_repeats(&keys) {
        found.push(at(
            path,
            Some(Segment::Index(idx)),
            format!("must not repeat the keys ({names}) of an earlier item (x-kubernetes-list-type: map)"),
        ));
    }
}

fn embedded_resource(object: Instance<'_>, path: &[Segment], found: &mut Vec<Violation>) {
    if let Some(api_version) = object.get("apiVersion") {
        let problem = match api_version.as_str() {
            None => Some("must be a string"),
            Some("") => Some("must not be empty"),
            Some(text) if text.matches('/').count() > 1 || text.starts_with('/') => {
                Some("must be a version or group/version")
            }
            Some(_) => None,
        };
        if let Some(problem) = problem {
            found.push(at(
                path,
                Some(Segment::Key("apiVersion".into())),
                problem.into(),
            ));
        }
    }
    if let Some(kind) = object.get("kind") {
        let problem = match kind.as_str() {
            None => Some("must be a string"),
            Some("") => Some("must not be empty"),
            Some(text) if !is_dns1035_label(&text.to_ascii_lowercase()) => Some(
                "may have mixed case, but should otherwise be a DNS-1035 label (a letter, then letters, digits or '-', at most 63)",
            ),
            Some(_) => None,
        };
        if let Some(problem) = problem {
            found.push(at(path, Some(Segment::Key("kind".into())), problem.into()));
        }
    }
}

fn is_dns1035_label(text: &str) -> bool {
    text.len() <= 63
        && text.starts_with(|c: char| c.is_ascii_lowercase())
        && !text.ends_with('-')
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(schema: &Value, object: &Value) -> Vec<String> {
        let found = violations(schema, object.into());
        found
            .lists
            .into_iter()
            .chain(found.embedded)
            .map(|v| v.path.to_string())
            .collect()
    }

    #[test]
    fn reports_the_first_repeat_of_each_set_value() {
        let schema = json!({"properties": {"tags": {
            "type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}}});
        assert!(is_needed(&schema));
        assert_eq!(
            paths(&schema, &json!({"tags": ["a", "b", "a", "a", "b", "c"]})),
            ["tags[2]", "tags[4]"]
        );
        assert!(paths(&schema, &json!({"tags": ["a", "b"]})).is_empty());
        // Objects are the same item whatever the order of their members.
        let objects = json!({"properties": {"o": {"x-kubernetes-list-type": "set"}}});
        assert_eq!(
            paths(
                &objects,
                &json!({"o": [{"a": 1, "b": 2}, {"b": 2, "a": 1}]})
            ),
            ["o[1]"]
        );
        // 1 and 1.0 are different values to the apiserver (int64 and float64).
        let numbers = json!({"properties": {"n": {"x-kubernetes-list-type": "set"}}});
        assert!(paths(&numbers, &json!({"n": [1, 1.0]})).is_empty());
    }

    #[test]
    fn map_lists_compare_their_keys_and_need_objects() {
        let schema = json!({"properties": {"ports": {
            "type": "array", "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name", "protocol"],
            "items": {"type": "object"}}}});
        let object = json!({"ports": [
            {"name": "http", "protocol": "TCP", "port": 80},
            {"name": "http", "protocol": "UDP", "port": 80},
            {"name": "http", "protocol": "TCP", "port": 81},
            {"port": 1}, {"port": 2}
        ]});
        assert_eq!(paths(&schema, &object), ["ports[2]", "ports[4]"]);
        assert_eq!(
            paths(&schema, &json!({"ports": [{"name": "a"}, 3]})),
            ["ports[1]"]
        );
    }

    #[test]
    fn embedded_resources_need_a_version_and_a_kind() {
        let schema = json!({"properties": {"template": {
            "type": "object", "x-kubernetes-embedded-resource": true}}});
        assert!(
            paths(
                &schema,
                &json!({"template": {"apiVersion": "apps/v1", "kind": "Deployment"}})
            )
            .is_empty()
        );
        assert_eq!(
            paths(
                &schema,
                &json!({"template": {"apiVersion": "", "kind": "not_dns"}})
            ),
            ["template.apiVersion", "template.kind"]
        );
        assert_eq!(
            paths(
                &schema,
                &json!({"template": {"apiVersion": "a/b/c", "kind": 3}})
            ),
            ["template.apiVersion", "template.kind"]
        );
    }

    #[test]
    fn follows_maps_and_nested_items() {
        let schema = json!({"additionalProperties": {"type": "array", "items": {
            "type": "array", "x-kubernetes-list-type": "set"}}});
        assert_eq!(paths(&schema, &json!({"x": [[1, 1], [2]]})), ["x[0][1]"]);
        assert!(!is_needed(
            &json!({"properties": {"a": {"type": "string"}}})
        ));
    }
}
