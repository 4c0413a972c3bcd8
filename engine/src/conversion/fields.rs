//! Moving values around inside JSON objects by field path.

use serde_json::{Map, Value};

use crate::path::{FieldPath, Segment};

fn keys(path: &FieldPath) -> Option<Vec<&str>> {
    path.0
        .iter()
        .map(|s| match s {
            Segment::Key(k) => Some(k.as_str()),
            Segment::Index(_) => None,
        })
        .collect()
}

/// Removes the value at `path`; parents left empty by the removal go too, so that moving a
/// field out leaves no husk behind (and moving it back recreates them).
pub(crate) fn take(object: &mut Map<String, Value>, path: &FieldPath) -> Option<Value> {
    take_keys(object, &keys(path)?)
}

fn take_keys(object: &mut Map<String, Value>, keys: &[&str]) -> Option<Value> {
    match keys {
        [] => None,
        [last] => object.remove(*last),
        [first, rest @ ..] => {
            let child = object.get_mut(*first)?.as_object_mut()?;
            let value = take_keys(child, rest)?;
            if child.is_empty() {
                object.remove(*first);
            }
            Some(value)
        }
    }
}

/// Sets `value` at `path`, creating parent objects. Fails (giving the value back) when a parent
/// exists but is not an object, or the target is already taken.
pub(crate) fn put(
    object: &mut Map<String, Value>,
    path: &FieldPath,
    value: Value,
) -> Result<(), Value> {
    let Some(keys) = keys(path) else {
        return Err(value);
    };
    put_keys(object, &keys, value)
}

fn put_keys(object: &mut Map<String, Value>, keys: &[&str], value: Value) -> Result<(), Value> {
    match keys {
        [] => Err(value),
        [last] => {
            if object.contains_key(*last) {
                return Err(value);
            }
            object.insert((*last).to_string(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let child = object
                .entry((*first).to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            match child.as_object_mut() {
                Some(child) => put_keys(child, rest, value),
                None => Err(value),
            }
        }
    }
}

/// Adds what `value` has and the target lacks, recursively; present values win.
pub(crate) fn merge_absent(object: &mut Map<String, Value>, pointer_keys: &[String], value: Value) {
    match pointer_keys {
        [] => {}
        [last] => match (object.get_mut(last), value) {
            (None, value) => {
                object.insert(last.clone(), value);
            }
            (Some(Value::Object(existing)), Value::Object(incoming)) => {
                for (k, v) in incoming {
                    merge_absent(existing, std::slice::from_ref(&k), v);
                }
            }
            _ => {}
        },
        [first, rest @ ..] => {
            let child = object
                .entry(first.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(child) = child.as_object_mut() {
                merge_absent(child, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::keys_from_pointer;
    use serde_json::json;

    fn path(text: &str) -> FieldPath {
        FieldPath::parse(text).unwrap_or_default()
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn take_prunes_parents_it_emptied_but_not_ones_already_empty() {
        let mut o = obj(json!({"spec": {"retry": {"max": 3}, "empty": {}}}));
        assert_eq!(take(&mut o, &path("spec.retry.max")), Some(json!(3)));
        assert_eq!(Value::Object(o.clone()), json!({"spec": {"empty": {}}}));
        assert_eq!(take(&mut o, &path("spec.empty.x")), None);
        assert_eq!(Value::Object(o), json!({"spec": {"empty": {}}}));
    }

    #[test]
    fn put_creates_parents_and_refuses_to_overwrite() {
        let mut o = obj(json!({"spec": {"a": 1}}));
        assert!(put(&mut o, &path("spec.retry.max"), json!(3)).is_ok());
        assert_eq!(put(&mut o, &path("spec.a"), json!(2)), Err(json!(2)));
        assert_eq!(put(&mut o, &path("spec.a.b"), json!(2)), Err(json!(2)));
        assert_eq!(
            Value::Object(o),
            json!({"spec": {"a": 1, "retry": {"max": 3}}})
        );
    }

    #[test]
    fn merge_keeps_live_values_and_fills_gaps() {
        let mut o = obj(json!({"spec": {"retry": {"max": 3}}}));
        merge_absent(
            &mut o,
            &keys_from_pointer("/spec/retry"),
            json!({"max": 9, "backoff": 1}),
        );
        assert_eq!(
            Value::Object(o),
            json!({"spec": {"retry": {"max": 3, "backoff": 1}}})
        );
    }
}
