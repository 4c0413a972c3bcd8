//! A StatefulSet named by the object: healthy once its rolling update is complete.

use k8s_openapi::api::apps::v1::StatefulSet;
use tollgate_engine::FieldPath;

use super::Health;
use super::workload::Workload;

pub fn source(name_from: FieldPath) -> Workload<StatefulSet> {
    Workload {
        name_from,
        noun: "StatefulSet",
        judge: stateful_set,
    }
}

/// `kubectl rollout status` for a StatefulSet with the RollingUpdate strategy.
pub fn stateful_set(set: &StatefulSet) -> Health {
    let name = set.metadata.name.as_deref().unwrap_or_default();
    let generation = set.metadata.generation.unwrap_or(0);
    let Some(status) = &set.status else {
        return Health::Progressing(format!("StatefulSet {name} has no status yet"));
    };
    if status.observed_generation.unwrap_or(0) < generation {
        return Health::Progressing(format!(
            "waiting for StatefulSet {name} spec update to be observed"
        ));
    }
    let desired = set.spec.replicas.unwrap_or(1);
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    if ready < desired {
        return Health::Progressing(format!(
            "StatefulSet {name}: {ready} of {desired} replicas ready"
        ));
    }
    let partition = set
        .spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);
    if updated < desired - partition {
        return Health::Progressing(format!(
            "StatefulSet {name}: {updated} of {} replicas updated",
            desired - partition
        ));
    }
    if partition == 0
        && status.update_revision.is_some()
        && status.current_revision != status.update_revision
    {
        return Health::Progressing(format!(
            "StatefulSet {name}: waiting for the update to complete"
        ));
    }
    Health::Healthy(format!(
        "StatefulSet {name}: {ready} of {desired} replicas ready and updated"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn stateful_set_waits_for_ready_and_updated_replicas() {
        let set = |status: Value| -> StatefulSet {
            serde_json::from_value(json!({"metadata": {"name": "db", "generation": 1},
                "spec": {"replicas": 2, "selector": {}, "serviceName": "db", "template": {}}, "status": status}))
            .unwrap_or_default()
        };
        assert!(matches!(
            stateful_set(&set(
                json!({"observedGeneration": 1, "replicas": 2, "readyReplicas": 1})
            )),
            Health::Progressing(_)
        ));
        assert!(matches!(
            stateful_set(&set(
                json!({"observedGeneration": 1, "replicas": 2, "readyReplicas": 2,
                "updatedReplicas": 2, "currentRevision": "a", "updateRevision": "b"})
            )),
            Health::Progressing(_)
        ));
        assert!(matches!(
            stateful_set(&set(
                json!({"observedGeneration": 1, "replicas": 2, "readyReplicas": 2,
                "updatedReplicas": 2, "currentRevision": "b", "updateRevision": "b"})
            )),
            Health::Healthy(_)
        ));
    }
}
