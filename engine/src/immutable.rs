//! Immutable fields: a field that was set may not change or disappear on UPDATE; setting a field
//! that was absent is allowed (so defaulting and late initialisation keep working).

use crate::instance::Instance;
use crate::path::FieldPath;
use crate::validate::Violation;

/// With `restore`, the object returns to a revision that was admitted before: a field that
/// revision did not have yet may be absent again, but a value it has must still be the old one.
pub fn immutable_violations(
    paths: &[FieldPath],
    object: Instance<'_>,
    old_object: Instance<'_>,
    restore: bool,
) -> Vec<Violation> {
    paths
        .iter()
        .filter_map(|path| {
            let old = path.get_in(old_object)?;
            let new = path.get_in(object);
            if restore && new.is_none() {
                return None;
            }
            (new != Some(old)).then(|| Violation {
                path: path.clone(),
                message: "is immutable and cannot be changed once set".into(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(texts: &[&str]) -> Vec<FieldPath> {
        texts
            .iter()
            .filter_map(|t| FieldPath::parse(t).ok())
            .collect()
    }

    #[test]
    fn changed_or_removed_values_violate_but_newly_set_ones_do_not() {
        let paths = paths(&["spec.provider", "spec.region", "spec.zone"]);
        let old = json!({"spec": {"provider": "a", "region": "eu"}});
        let new = json!({"spec": {"provider": "b", "zone": "z1"}});
        let found: Vec<String> = immutable_violations(&paths, (&new).into(), (&old).into(), false)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            [
                "spec.provider: is immutable and cannot be changed once set",
                "spec.region: is immutable and cannot be changed once set"
            ]
        );
        assert!(immutable_violations(&paths, (&old).into(), (&old).into(), false).is_empty());
    }

    #[test]
    fn a_restore_may_drop_a_field_its_revision_lacked_but_never_change_one() {
        let paths = paths(&["spec.provider", "spec.region"]);
        let old = json!({"spec": {"provider": "a", "region": "eu"}});
        let restored = json!({"spec": {"provider": "a"}});
        assert!(immutable_violations(&paths, (&restored).into(), (&old).into(), true).is_empty());
        assert_eq!(
            immutable_violations(&paths, (&restored).into(), (&old).into(), false).len(),
            1
        );
        let changed = json!({"spec": {"provider": "b"}});
        let found = immutable_violations(&paths, (&changed).into(), (&old).into(), true);
        assert_eq!(
            found.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["spec.provider: is immutable and cannot be changed once set"]
        );
    }
}
