//! RFC 7386 merge patches that turn one JSON value into another: what a rollback sends to put a
//! recorded spec back, fields the recorded spec lacks included (as `null`).

use serde_json::{Map, Value};

/// The merge patch that makes `current` equal to `target`. Arrays and scalars are replaced
/// whole; object keys missing from `target` become `null` (removed).
pub fn merge_patch_to(current: &Value, target: &Value) -> Value {
    match (current, target) {
        (Value::Object(cur), Value::Object(tgt)) => {
            let mut patch = Map::new();
            for (key, value) in tgt {
                match cur.get(key) {
                    Some(existing) if existing == value => {}
                    Some(existing) => {
                        patch.insert(key.clone(), merge_patch_to(existing, value));
                    }
                    None => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            for key in cur.keys() {
                if !tgt.contains_key(key) {
                    patch.insert(key.clone(), Value::Null);
                }
            }
            Value::Object(patch)
        }
        _ => target.clone(),
    }
}

/// Applies an RFC 7386 merge patch (used to check `merge_patch_to` and by tests).
pub fn apply_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                apply_merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn removes_added_fields_and_restores_changed_ones() {
        let current = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2], "new": true});
        let target = json!({"a": 1, "b": {"c": 5}, "e": [1]});
        let patch = merge_patch_to(&current, &target);
        assert_eq!(
            patch,
            json!({"b": {"c": 5, "d": null}, "e": [1], "new": null})
        );
        let mut applied = current.clone();
        apply_merge_patch(&mut applied, &patch);
        assert_eq!(applied, target);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            "[a-z]{0,3}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[a-c]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn the_patch_always_reaches_the_target(
            current in prop::collection::btree_map("[a-d]", json_value(), 0..4),
            target in prop::collection::btree_map("[a-d]", json_value(), 0..4),
        ) {
            let current = Value::Object(current.into_iter().collect());
            let target = Value::Object(target.into_iter().collect());
            let mut applied = current.clone();
            apply_merge_patch(&mut applied, &merge_patch_to(&current, &target));
            prop_assert_eq!(applied, target);
        }
    }
}
