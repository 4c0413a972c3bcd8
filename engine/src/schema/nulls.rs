//! `null`s the apiserver drops from a custom resource before it validates it
//! (k8s.io/apiextensions-apiserver `PruneNonNullableNullsWithoutDefaults`): a member whose
//! schema is not `nullable` and has no `default` (one with a default was defaulted instead).
//! Items of lists are never dropped; a `null` item is judged as it is.

use serde_json::Value;

use crate::instance::Instance;

/// The schema the apiserver gives member `key` of an object at `schema`.
fn member_schema<'s>(schema: &'s Value, key: &str) -> Option<&'s Value> {
    schema
        .get("properties")
        .and_then(|p| p.get(key))
        .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()))
}

fn is_dropped(value: Instance<'_>, schema: &Value) -> bool {
    value.is_null()
        && schema.get("nullable") != Some(&Value::Bool(true))
        && schema.get("default").is_none()
}

/// Whether `value` holds a `null` that `prune` drops (so a copy is made only when it does).
/// Asked of every object judged, and nearly every object holds no `null` at all: that is found
/// by a walk that compares no names, before the schema is consulted.
pub fn any_dropped(schema: &Value, value: Instance<'_>) -> bool {
    holds_null(value) && any_dropped_below(schema, value)
}

fn holds_null(value: Instance<'_>) -> bool {
    value.is_null()
        || value.members().any(|(_, child)| holds_null(child))
        || value.items().any(holds_null)
}

/// `any_dropped` once a `null` is known to be there: the schema is looked up only for members
/// that are `null` or hold others, never for the strings and numbers that make up most of an
/// object.
fn any_dropped_below(schema: &Value, value: Instance<'_>) -> bool {
    if value.array_len().is_some() {
        return schema.get("items").is_some_and(|items| {
            value
                .items()
                .any(|item| holds_members(item) && any_dropped_below(items, item))
        });
    }
    value.members().any(|(key, child)| {
        (child.is_null() || holds_members(child))
            && member_schema(schema, key).is_some_and(|child_schema| {
                is_dropped(child, child_schema) || any_dropped_below(child_schema, child)
            })
    })
}

fn holds_members(value: Instance<'_>) -> bool {
    value.object_len().is_some_and(|n| n > 0) || value.array_len().is_some_and(|n| n > 0)
}

/// Drops from `value` every `null` the apiserver drops.
pub fn prune(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(members) => members.retain(|key, child| {
            let Some(child_schema) = member_schema(schema, key) else {
                return true;
            };
            if is_dropped(Instance::Value(child), child_schema) {
                return false;
            }
            prune(child_schema, child);
            true
        }),
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                items.iter_mut().for_each(|item| prune(item_schema, item));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn drops_members_that_may_not_be_null_and_keeps_the_rest() {
        let schema = json!({"properties": {"spec": {"properties": {
            "a": {"type": "string"},
            "b": {"type": "string", "nullable": true},
            "c": {"type": "string", "default": "x"},
            "list": {"type": "array", "items": {"type": "object", "properties": {"d": {"type": "string"}}}},
            "map": {"type": "object", "additionalProperties": {"type": "string"}}
        }}}});
        let mut object = json!({"spec": {"a": null, "b": null, "c": null, "unknown": null,
            "list": [null, {"d": null}], "map": {"k": null}}});
        assert!(any_dropped(&schema, (&object).into()));
        prune(&schema, &mut object);
        assert_eq!(
            object,
            json!({"spec": {"b": null, "c": null, "unknown": null, "list": [null, {}], "map": {}}})
        );
        assert!(!any_dropped(&schema, (&object).into()));
        // Found however deep it sits, and only where it would be dropped.
        let deep = json!({"spec": {"list": [{"d": "x"}, {"d": null}]}});
        assert!(any_dropped(&schema, (&deep).into()));
        let kept = json!({"spec": {"list": [null], "b": null, "unknown": null}});
        assert!(!any_dropped(&schema, (&kept).into()));
    }
}
