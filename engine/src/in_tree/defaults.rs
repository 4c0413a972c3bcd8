//! The MutatingAdmissionPolicy's JSON Patch: what `/mutate` inserts — the policy's labels and
//! annotations and the schema's `default`s, each with its own nested defaults filled in — and
//! only where the value is absent (or a `null` the schema does not allow).

use std::collections::BTreeMap;

use serde_json::Value;

use super::Unsupported;
use super::text;
use crate::defaults::Defaulter;
use crate::path::escape_pointer;

/// The CEL expression yielding the patch's operations; `None` when the policy inserts nothing.
pub fn patch_expression(
    schema: Option<&Value>,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    unsupported: &mut Vec<Unsupported>,
) -> Option<String> {
    let mut parts = Vec::new();
    for (field, wanted) in [("labels", labels), ("annotations", annotations)] {
        if let Some(part) = metadata_part(field, wanted) {
            parts.push(part);
        }
    }
    if let Some(schema) = schema {
        walk(
            schema,
            schema,
            "object",
            &[],
            "spec.schema",
            &mut parts,
            unsupported,
        );
    }
    match parts.len() {
        0 => None,
        _ => Some(parts.join(" +\n")),
    }
}

fn add(pointer: &str, value: &Value) -> String {
    format!(
        "[JSONPatch{{op: 'add', path: {}, value: {}}}]",
        text::string(pointer),
        text::literal(value)
    )
}

fn metadata_part(field: &str, wanted: &BTreeMap<String, String>) -> Option<String> {
    if wanted.is_empty() {
        return None;
    }
    let map = format!("object.metadata.{field}");
    let whole: serde_json::Map<String, Value> = wanted
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    let each: Vec<String> = wanted
        .iter()
        .map(|(k, v)| {
            format!(
                "({} in {map} ? [] : {})",
                text::string(k),
                add(
                    &format!("/metadata/{field}/{}", escape_pointer(k)),
                    &Value::from(v.as_str())
                )
            )
        })
        .collect();
    Some(format!(
        "(!has(object.metadata.{field}) || {map} == null ? {} : {})",
        add(&format!("/metadata/{field}"), &Value::Object(whole)),
        each.join(" + ")
    ))
}

/// Defaults under the object `value` (a map wherever this is evaluated) described by `schema`.
fn walk(
    root: &Value,
    schema: &Value,
    value: &str,
    keys: &[&str],
    pointer: &str,
    parts: &mut Vec<String>,
    unsupported: &mut Vec<Unsupported>,
) {
    let Some(node) = schema.as_object() else {
        return;
    };
    for keyword in [
        "items",
        "additionalProperties",
        "allOf",
        "anyOf",
        "oneOf",
        "$ref",
    ] {
        let below_declares = match node.get(keyword) {
            None => false,
            Some(Value::String(_)) => crate::schema::ref_target(root, schema)
                .is_some_and(|target| crate::schema::declares_default(root, target)),
            Some(Value::Array(branches)) => branches
                .iter()
                .any(|b| crate::schema::declares_default(root, b)),
            Some(below) => crate::schema::declares_default(root, below),
        };
        if below_declares {
            unsupported.push(Unsupported {
                at: format!("{pointer}.{keyword}"),
                reason: format!(
                    "defaults under {keyword} are inserted by the webhook (the patch would need one operation per item)"
                ),
            });
        }
    }
    let Some(properties) = node.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, child) in properties {
        let mut at: Vec<&str> = keys.to_vec();
        at.push(name);
        let json_pointer: String = at
            .iter()
            .map(|k| format!("/{}", escape_pointer(k)))
            .collect();
        let member = text::select(value, name);
        let has = text::has(value, name);
        let nullable = child.get("nullable") == Some(&Value::Bool(true));
        if let Some(default) = child.get("default") {
            let mut filled = default.clone();
            Defaulter::from_schema(child).apply(&mut filled);
            let absent = if nullable {
                format!("!{has}")
            } else {
                format!("(!{has} || {member} == null)")
            };
            parts.push(format!("({absent} ? {} : [])", add(&json_pointer, &filled)));
        }
        let mut nested = Vec::new();
        walk(
            root,
            child,
            &member,
            &at,
            &format!("{pointer}.properties.{name}"),
            &mut nested,
            unsupported,
        );
        if !nested.is_empty() {
            parts.push(format!(
                "({has} && type({member}) == map ? {} : [])",
                nested.join(" + ")
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inserts_only_where_absent_with_nested_defaults_filled() {
        let schema = json!({"properties": {"spec": {"type": "object", "properties": {
            "retry": {"type": "object", "default": {}, "properties": {
                "maxAttempts": {"type": "integer", "default": 3}
            }}
        }}}});
        let mut unsupported = Vec::new();
        let expression = patch_expression(
            Some(&schema),
            &BTreeMap::new(),
            &BTreeMap::new(),
            &mut unsupported,
        )
        .unwrap_or_default();
        assert!(unsupported.is_empty());
        assert!(expression.contains(
            "((!has(object.spec.retry) || object.spec.retry == null) ? [JSONPatch{op: 'add', path: '/spec/retry', value: {'maxAttempts': dyn(3)}}] : [])"
        ), "{expression}");
        assert!(expression.starts_with("(has(object.spec) && type(object.spec) == map ?"));
    }

    #[test]
    fn defaults_inside_items_stay_with_the_webhook() {
        let schema = json!({"properties": {"list": {"type": "array", "items": {
            "properties": {"a": {"default": 1}}
        }}}});
        let mut unsupported = Vec::new();
        patch_expression(
            Some(&schema),
            &BTreeMap::new(),
            &BTreeMap::new(),
            &mut unsupported,
        );
        assert_eq!(unsupported.len(), 1);
        assert!(unsupported[0].at.ends_with("properties.list.items"));
    }

    #[test]
    fn defaults_behind_a_ref_stay_with_the_webhook_and_a_field_named_default_is_no_default() {
        let behind_ref = json!({
            "$defs": {"retry": {"type": "object", "properties": {"n": {"default": 3}}}},
            "properties": {"retry": {"$ref": "#/$defs/retry"}}
        });
        let mut unsupported = Vec::new();
        patch_expression(
            Some(&behind_ref),
            &BTreeMap::new(),
            &BTreeMap::new(),
            &mut unsupported,
        );
        assert_eq!(unsupported.len(), 1, "{unsupported:?}");
        assert!(unsupported[0].at.ends_with("properties.retry.$ref"));

        let named_default = json!({"properties": {"list": {"type": "array", "items": {
            "properties": {"default": {"type": "string", "enum": ["default"]}}
        }}}});
        let mut unsupported = Vec::new();
        patch_expression(
            Some(&named_default),
            &BTreeMap::new(),
            &BTreeMap::new(),
            &mut unsupported,
        );
        assert!(unsupported.is_empty(), "{unsupported:?}");
    }
}
