//! Ratcheting, as the apiserver applies it to custom resources on UPDATE (GA in 1.33;
//! k8s.io/apiextensions-apiserver `validation/ratcheting.go` for schema keywords and
//! `schema/cel/validation.go` for rules): a failure raised at a value that did not change is
//! not a denial. "Did not change" is decided at the nearest node on the way from the root to
//! where the failure was raised that correlates with the old object — by field name through
//! objects and maps, by key through `x-kubernetes-list-type: map` lists; items of other lists
//! (and the root's `apiVersion` and `kind`) do not correlate.
//!
//! Besides, tollgate never denies an UPDATE that only lets an object go: one that removes
//! finalizers and changes nothing else, or one that touches only metadata once the object is
//! being deleted. Denying those would leave an object nobody can delete.

use serde_json::Value;

use crate::instance::Instance;
use crate::path::{FieldPath, Segment};

/// Whether a failure raised at `node` of `new` is ratcheted against `old`.
pub fn is_unchanged_at(
    schema: Option<&Value>,
    new: Instance<'_>,
    old: Instance<'_>,
    node: &[Segment],
) -> bool {
    let (mut new_at, mut old_at) = (new, old);
    for (depth, segment) in node.iter().enumerate() {
        let next = match segment {
            Segment::Key(key) if depth == 0 && (key == "apiVersion" || key == "kind") => None,
            Segment::Key(key) => new_at.get(key).zip(old_at.get(key)),
            Segment::Index(index) => {
                let list_schema = schema
                    .and_then(|s| crate::schema::subschema(s, &FieldPath(node[..depth].to_vec())));
                new_at
                    .items()
                    .nth(*index)
                    .and_then(|item| Some((item, correlated_item(list_schema?, item, old_at)?)))
            }
        };
        match next {
            Some((n, o)) => (new_at, old_at) = (n, o),
            None => break,
        }
    }
    new_at == old_at
}

/// The item of `old` (a `map` list) with the same key values as `item`.
fn correlated_item<'o>(
    list_schema: &Value,
    item: Instance<'_>,
    old: Instance<'o>,
) -> Option<Instance<'o>> {
    if list_schema
        .get("x-kubernetes-list-type")
        .and_then(Value::as_str)
        != Some("map")
    {
        return None;
    }
    let keys: Vec<&str> = list_schema
        .get("x-kubernetes-list-map-keys")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    map_list_item(item, old, &keys)
}

/// The item of the map-type list `old` whose `keys` hold the same values as in `item` (a key
/// missing from both counts as equal).
pub(crate) fn map_list_item<'o>(
    item: Instance<'_>,
    old: Instance<'o>,
    keys: &[impl AsRef<str>],
) -> Option<Instance<'o>> {
    old.items().find(|candidate| {
        keys.iter()
            .all(|k| candidate.get(k.as_ref()) == item.get(k.as_ref()))
    })
}

/// An UPDATE tollgate never denies: it removes finalizers (and nothing else changes), or the
/// object is being deleted and only its metadata changes. Compared member by member: no copy
/// of either object.
pub fn only_lets_go(new: Instance<'_>, old: Instance<'_>) -> bool {
    fn metadata<'a>(object: Instance<'a>, field: &str) -> Option<Instance<'a>> {
        object.get("metadata")?.get(field)
    }
    let being_deleted = metadata(new, "deletionTimestamp").is_some_and(|t| !t.is_null());
    if being_deleted && same_members_except(new, old, &["metadata"]) {
        return true;
    }
    let finalizers = |object| {
        metadata(object, "finalizers")
            .into_iter()
            .flat_map(Instance::items)
    };
    let (now, before) = (finalizers(new).count(), finalizers(old).count());
    let removes_only = now < before && finalizers(new).all(|f| finalizers(old).any(|o| o == f));
    removes_only
        && same_members_except(new, old, &["metadata"])
        && match (new.get("metadata"), old.get("metadata")) {
            (Some(new_meta), Some(old_meta)) => same_members_except(
                new_meta,
                old_meta,
                &["finalizers", "resourceVersion", "managedFields"],
            ),
            _ => false,
        }
}

/// Whether objects `a` and `b` have the same members apart from `skipped`.
fn same_members_except(a: Instance<'_>, b: Instance<'_>, skipped: &[&str]) -> bool {
    let kept = |object: Instance<'_>| {
        object
            .members()
            .filter(|(name, _)| !skipped.contains(name))
            .count()
    };
    kept(a) == kept(b)
        && a.members()
            .filter(|(name, _)| !skipped.contains(name))
            .all(|(name, value)| b.get(name) == Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(text: &str) -> Vec<Segment> {
        FieldPath::parse(text).map(|p| p.0).unwrap_or_default()
    }

    #[test]
    fn correlates_by_name_and_by_map_list_keys_only() {
        let schema = json!({"properties": {"spec": {"properties": {
            "ports": {"type": "array", "x-kubernetes-list-type": "map",
                      "x-kubernetes-list-map-keys": ["name"], "items": {"type": "object"}},
            "tags": {"type": "array", "items": {"type": "string"}}
        }}}});
        let old = json!({"spec": {"a": 1, "ports": [{"name": "x", "port": 1}, {"name": "y", "port": 2}],
                                   "tags": ["a", "b"]}});
        let new = json!({"spec": {"a": 2, "ports": [{"name": "y", "port": 2}, {"name": "x", "port": 3}],
                                   "tags": ["a", "c"]}});
        let unchanged = |p| is_unchanged_at(Some(&schema), (&new).into(), (&old).into(), &path(p));
        assert!(!unchanged("spec.a"));
        // Reordered, but the item keyed "y" did not change.
        assert!(unchanged("spec.ports[0].port"));
        assert!(!unchanged("spec.ports[1].port"));
        // Atomic list items do not correlate: the list as a whole changed.
        assert!(!unchanged("spec.tags[0]"));
        let same_tags = json!({"spec": {"tags": ["a", "b"]}});
        let old_tags = json!({"spec": {"tags": ["a", "b"]}});
        assert!(is_unchanged_at(
            Some(&schema),
            (&same_tags).into(),
            (&old_tags).into(),
            &path("spec.tags[1]")
        ));
        // A field the old object lacked is judged at its parent, which changed.
        assert!(!unchanged("spec.added"));
    }

    #[test]
    fn letting_go_is_removing_finalizers_or_touching_metadata_while_deleted() {
        let old = json!({"metadata": {"name": "a", "finalizers": ["x", "y"], "resourceVersion": "1"}, "spec": {"bad": 1}});
        let removed = json!({"metadata": {"name": "a", "finalizers": ["y"], "resourceVersion": "1"}, "spec": {"bad": 1}});
        let also_spec = json!({"metadata": {"name": "a", "finalizers": ["y"]}, "spec": {"bad": 2}});
        let added =
            json!({"metadata": {"name": "a", "finalizers": ["x", "y", "z"]}, "spec": {"bad": 1}});
        assert!(only_lets_go((&removed).into(), (&old).into()));
        assert!(!only_lets_go((&also_spec).into(), (&old).into()));
        assert!(!only_lets_go((&added).into(), (&old).into()));
        let deleting_old = json!({"metadata": {"name": "a", "deletionTimestamp": "2026-01-01T00:00:00Z", "labels": {"a": "1"}}, "spec": {"bad": 1}});
        let deleting_new = json!({"metadata": {"name": "a", "deletionTimestamp": "2026-01-01T00:00:00Z", "labels": {"a": "2"}}, "spec": {"bad": 1}});
        assert!(only_lets_go((&deleting_new).into(), (&deleting_old).into()));
    }
}
