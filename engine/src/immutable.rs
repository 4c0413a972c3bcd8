//! Immutable fields: a field that was set may not change or disappear on UPDATE; setting a field
//! that was absent is allowed (so defaulting and late initialisation keep working).

use crate::instance::Instance;
use crate::path::FieldPath;
use crate::validate::Violation;

pub fn immutable_violations(
    paths: &[FieldPath],
    object: Instance<'_>,
    old_object: Instance<'_>,
) -> Vec<Violation> {
    paths
        .iter()
        .filter_map(|path| {
            let old = path.get_in(old_object)?;
            (path.get_in(object) != Some(old)).then(|| Violation {
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
        let found: Vec<String> = immutable_violations(&paths, (&new).into(), (&old).into())
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
        assert!(immutable_violations(&paths, (&old).into(), (&old).into()).is_empty());
    }
}
