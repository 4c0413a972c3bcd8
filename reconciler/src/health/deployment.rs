//! A Deployment named by the object: healthy once its rollout is complete.

use k8s_openapi::api::apps::v1::Deployment;
use tollgate_engine::FieldPath;

use super::Health;
use super::workload::Workload;

pub fn source(name_from: FieldPath) -> Workload<Deployment> {
    Workload {
        name_from,
        noun: "Deployment",
        judge: deployment,
    }
}

/// `kubectl rollout status` for a Deployment: the controller has seen the latest spec, every
/// desired replica is updated and available, no old replica is left; failed once the
/// Deployment's own progress deadline is exceeded.
pub fn deployment(deployment: &Deployment) -> Health {
    let name = deployment.metadata.name.as_deref().unwrap_or_default();
    let generation = deployment.metadata.generation.unwrap_or(0);
    let Some(status) = &deployment.status else {
        return Health::Progressing(format!("Deployment {name} has no status yet"));
    };
    if status.observed_generation.unwrap_or(0) < generation {
        return Health::Progressing(format!(
            "waiting for Deployment {name} spec update to be observed"
        ));
    }
    let deadline_exceeded = status.conditions.iter().flatten().find(|c| {
        c.type_.as_deref() == Some("Progressing")
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if let Some(exceeded) = deadline_exceeded {
        // The condition stays until the template changes again, so it may be older than the
        // attempt reading it (a restore before the operator has rewritten the Deployment).
        return Health::Failed {
            message: format!("Deployment {name} exceeded its progress deadline"),
            since: exceeded
                .last_update_time
                .as_ref()
                .or(exceeded.last_transition_time.as_ref())
                .map(|t| t.0),
        };
    }
    let desired = i64::from(deployment.spec.replicas.unwrap_or(1));
    let updated = i64::from(status.updated_replicas.unwrap_or(0));
    let total = i64::from(status.replicas.unwrap_or(0));
    let available = i64::from(status.available_replicas.unwrap_or(0));
    if updated < desired {
        return Health::Progressing(format!(
            "Deployment {name}: {updated} of {desired} updated replicas"
        ));
    }
    if total > updated {
        return Health::Progressing(format!(
            "Deployment {name}: {} old replicas pending termination",
            total - updated
        ));
    }
    if available < updated {
        return Health::Progressing(format!(
            "Deployment {name}: {available} of {updated} updated replicas available"
        ));
    }
    Health::Healthy(format!(
        "Deployment {name}: {available} of {desired} replicas updated and available"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn deploy(value: Value) -> Deployment {
        serde_json::from_value(value).unwrap_or_default()
    }

    #[test]
    fn deployment_follows_kubectl_rollout_status() {
        let base = |status: Value| {
            deploy(json!({"metadata": {"name": "gw", "generation": 2},
                          "spec": {"replicas": 2, "selector": {}, "template": {}}, "status": status}))
        };
        let cases = [
            (json!({"observedGeneration": 1}), "Progressing"),
            (
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1}),
                "Progressing",
            ),
            (
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}),
                "Progressing",
            ),
            (
                json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}),
                "Progressing",
            ),
            (
                json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
                "Healthy",
            ),
            (
                json!({"observedGeneration": 2, "conditions": [{"type": "Progressing", "status": "False",
                    "reason": "ProgressDeadlineExceeded"}]}),
                "Failed",
            ),
        ];
        let exceeded = deployment(&base(json!({"observedGeneration": 2, "conditions": [{
            "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
            "lastUpdateTime": "2026-12-07T10:00:05Z", "lastTransitionTime": "2026-12-07T10:00:05Z"}]})));
        assert!(
            matches!(&exceeded, Health::Failed { since: Some(t), .. } if t.to_string() == "2026-12-07T10:00:05Z"),
            "{exceeded:?}"
        );
        for (status, expected) in cases {
            let health = deployment(&base(status.clone()));
            assert_eq!(
                super::super::kind_of(&health),
                expected,
                "{status}: {health:?}"
            );
        }
    }
}
