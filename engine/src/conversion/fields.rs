//! Moving values around inside JSON objects by field path.

use serde_json::{Map, Value};

use crate::path::{FieldPath, Segment, pointer_from_keys};

/// A moved field's place: its keys (moves address object keys, never array elements) and its
/// JSON pointer, the annotation's name for it. Prepared once, when the rules compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyPath {
    pub keys: Vec<String>,
    pub pointer: String,
}

impl KeyPath {
    /// `None` for a path through an array element.
    pub fn new(path: &FieldPath) -> Option<Self> {
        let keys = path
            .0
            .iter()
            .map(|s| match s {
                Segment::Key(k) => Some(k.clone()),
                Segment::Index(_) => None,
            })
            .collect::<Option<Vec<_>>>()?;
        let pointer = pointer_from_keys(&keys);
        Some(Self { keys, pointer })
    }
}

/// Removes the value at `keys`; parents left empty by the removal go too, so that moving a
/// field out leaves no husk behind (and moving it back recreates them).
pub(crate) fn take(object: &mut Map<String, Value>, keys: &[String]) -> Option<Value> {
    match keys {
        [] => None,
        [last] => object.remove(last),
        [first, rest @ ..] => {
            let child = object.get_mut(first)?.as_object_mut()?;
            let value = take(child, rest)?;
            if child.is_empty() {
                object.remove(first);
            }
            Some(value)
        }
    }
}

/// Sets `value` at `keys`, creating parent objects. Fails (giving the value back) when a parent
/// exists but is not an object, or the target is already taken.
pub(crate) fn put(
    object: &mut Map<String, Value>,
    keys: &[String],
    value: Value,
) -> Result<(), Value> {
    match keys {
        [] => Err(value),
        [last] => {
            if object.contains_key(last) {
                return Err(value);
            }
            object.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            // Looked up first: `entry` would take an owned key, an allocation per existing parent.
            let child = match object.get_mut(first) {
                Some(child) => child,
                None => object
                    .entry(first.clone())
                    .or_insert_with(|| Value::Object(Map::new())),
            };
            match child.as_object_mut() {
                Some(child) => put(child, rest, value),
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

    fn path(text: &str) -> Vec<String> {
        FieldPath::parse(text)
            .ok()
            .and_then(|p| KeyPath::new(&p))
            .map(|k| k.keys)
            .unwrap_or_default()
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
