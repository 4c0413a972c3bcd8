//! Health of the current revision, judged from its health source: a workload's rollout, the Pods
//! a selector matches, or a condition the resource's own operator writes. The judgements are pure
//! functions of the objects read; `observe` does the reading.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use tollgate_engine::FieldPath;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy(String),
    /// Working towards health (or not yet observed).
    Progressing(String),
    /// The health source does not exist (yet).
    Missing(String),
    /// The health source says this will not become healthy.
    Failed(String),
}

impl Health {
    pub fn message(&self) -> &str {
        match self {
            Self::Healthy(m) | Self::Progressing(m) | Self::Missing(m) | Self::Failed(m) => m,
        }
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
    let deadline_exceeded = status.conditions.iter().flatten().any(|c| {
        c.type_.as_deref() == Some("Progressing")
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if deadline_exceeded {
        return Health::Failed(format!("Deployment {name} exceeded its progress deadline"));
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

/// At least `min_ready` of `pods` have the Ready condition True (terminating Pods do not count).
pub fn pods(pods: &[Pod], min_ready: i64) -> Health {
    let ready = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count() as i64;
    let message = format!("{ready} of {min_ready} required Pods ready");
    if ready >= min_ready {
        Health::Healthy(message)
    } else {
        Health::Progressing(message)
    }
}

/// The object's own condition `type_` True for its current generation; failed when any of
/// `failure_types` is True.
pub fn condition(object: &Value, type_: &str, failure_types: &[String]) -> Health {
    let generation = object
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let conditions = object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let field = |c: &Value, key: &str| {
        c.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    for c in &conditions {
        if failure_types.contains(&field(c, "type")) && field(c, "status") == "True" {
            return Health::Failed(format!(
                "condition {} is True: {}",
                field(c, "type"),
                field(c, "message")
            ));
        }
    }
    let Some(c) = conditions.iter().find(|c| field(c, "type") == type_) else {
        return Health::Progressing(format!("condition {type_} is not reported yet"));
    };
    let observed = c.get("observedGeneration").and_then(Value::as_i64);
    if observed.is_some_and(|g| g < generation) {
        return Health::Progressing(format!(
            "condition {type_} was reported for generation {}, not {generation}",
            observed.unwrap_or_default()
        ));
    }
    if field(c, "status") == "True" {
        Health::Healthy(format!("condition {type_} is True"))
    } else {
        Health::Progressing(format!(
            "condition {type_} is {}: {}",
            field(c, "status"),
            field(c, "message")
        ))
    }
}

/// A value the health rule reads from the object: a name, a replica count.
pub fn read_str<'v>(object: &'v Value, path: &FieldPath) -> Option<&'v str> {
    path.get(object).and_then(Value::as_str)
}

pub fn read_int(object: &Value, path: &FieldPath) -> Option<i64> {
    path.get(object).and_then(Value::as_i64)
}

/// A label selector (`matchLabels` / `matchExpressions`) read from the object, in the string
/// form the list API takes.
pub fn selector_query(selector: &Value) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            parts.push(format!("{k}={}", v.as_str()?));
        }
    }
    for expr in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = expr.get("key")?.as_str()?;
        let values: Vec<&str> = expr
            .get("values")
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        parts.push(match expr.get("operator")?.as_str()? {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return None,
        });
    }
    // An empty selector would match every Pod in the namespace: never what a rule means.
    (!parts.is_empty()).then(|| parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        for (status, expected) in cases {
            let health = deployment(&base(status.clone()));
            let kind = match health {
                Health::Healthy(_) => "Healthy",
                Health::Progressing(_) => "Progressing",
                Health::Missing(_) => "Missing",
                Health::Failed(_) => "Failed",
            };
            assert_eq!(kind, expected, "{status}: {health:?}");
        }
    }

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

    #[test]
    fn pods_count_only_ready_live_ones() {
        let pod = |ready: &str, deleting: bool| -> Pod {
            let mut meta = json!({"name": "p"});
            if deleting {
                meta["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            serde_json::from_value(json!({"metadata": meta,
                "status": {"conditions": [{"type": "Ready", "status": ready}]}}))
            .unwrap_or_default()
        };
        let list = [pod("True", false), pod("False", false), pod("True", true)];
        assert!(matches!(pods(&list, 1), Health::Healthy(_)));
        assert!(matches!(pods(&list, 2), Health::Progressing(_)));
    }

    #[test]
    fn condition_rule_respects_generation_and_failure_types() {
        let obj = |conditions: Value| json!({"metadata": {"generation": 3}, "status": {"conditions": conditions}});
        let failures = ["Degraded".to_string()];
        assert!(matches!(
            condition(
                &obj(json!([{"type": "Available", "status": "True", "observedGeneration": 2}])),
                "Available",
                &failures
            ),
            Health::Progressing(_)
        ));
        assert!(matches!(
            condition(
                &obj(json!([{"type": "Available", "status": "True", "observedGeneration": 3}])),
                "Available",
                &failures
            ),
            Health::Healthy(_)
        ));
        assert!(matches!(
            condition(
                &obj(
                    json!([{"type": "Available", "status": "True"}, {"type": "Degraded", "status": "True", "message": "x"}])
                ),
                "Available",
                &failures
            ),
            Health::Failed(_)
        ));
        assert!(matches!(
            condition(&obj(json!([])), "Available", &failures),
            Health::Progressing(_)
        ));
    }

    #[test]
    fn selectors_become_list_queries() {
        assert_eq!(
            selector_query(&json!({"matchLabels": {"app": "gw"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                                     {"key": "canary", "operator": "DoesNotExist"}]})),
            Some("app=gw,tier in (a,b),!canary".to_string())
        );
        assert_eq!(selector_query(&json!({})), None);
        assert_eq!(
            selector_query(&json!({"matchExpressions": [{"key": "a", "operator": "Bogus"}]})),
            None
        );
    }
}
