//! A condition the object's own operator writes in its status.

use futures_util::future::BoxFuture;
use kube::Client;
use kube::core::DynamicObject;
use kube::runtime::Controller;
use serde_json::Value;

use super::{Health, HealthSource, Related};

pub struct Condition {
    pub type_: String,
    pub failure_types: Vec<String>,
}

impl HealthSource for Condition {
    /// The object's own watch carries its status: nothing more to watch.
    fn watch(
        &self,
        controller: Controller<DynamicObject>,
        _client: &Client,
        _related: Related,
    ) -> Controller<DynamicObject> {
        controller
    }

    fn observe<'a>(
        &'a self,
        _client: &'a Client,
        object: &'a Value,
        _namespace: &'a str,
    ) -> BoxFuture<'a, Result<Health, kube::Error>> {
        Box::pin(async move { Ok(condition(object, &self.type_, &self.failure_types)) })
    }
}

/// The object's own condition `type_` True for its current generation; failed when any of
/// `failure_types` is True for it. A condition written for an older generation (its own
/// `observedGeneration`, else the status's) says nothing about this one: a rollback must not be
/// failed by the Degraded that caused it.
pub fn condition(object: &Value, type_: &str, failure_types: &[String]) -> Health {
    let generation = object
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let status_observed = object
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64);
    let conditions = object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let field = |c: &'_ Value, key: &str| -> String {
        c.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let observed = |c: &Value| {
        c.get("observedGeneration")
            .and_then(Value::as_i64)
            .or(status_observed)
    };
    let current = |c: &Value| observed(c).is_none_or(|g| g >= generation);
    for c in conditions.iter().filter(|c| current(c)) {
        if failure_types.contains(&field(c, "type")) && field(c, "status") == "True" {
            return Health::failed(format!(
                "condition {} is True: {}",
                field(c, "type"),
                field(c, "message")
            ));
        }
    }
    let Some(c) = conditions.iter().find(|c| field(c, "type") == type_) else {
        return Health::Progressing(format!("condition {type_} is not reported yet"));
    };
    if !current(c) {
        return Health::Progressing(format!(
            "condition {type_} was reported for generation {}, not {generation}",
            observed(c).unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

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
            Health::Failed { .. }
        ));
        assert!(matches!(
            condition(&obj(json!([])), "Available", &failures),
            Health::Progressing(_)
        ));
    }

    #[test]
    fn a_failure_reported_for_an_older_generation_does_not_fail_this_one() {
        let failures = ["Degraded".to_string()];
        let stale = json!({"metadata": {"generation": 3}, "status": {"conditions": [
            {"type": "Degraded", "status": "True", "observedGeneration": 2, "message": "x"},
            {"type": "Available", "status": "False", "observedGeneration": 2}]}});
        assert!(matches!(
            condition(&stale, "Available", &failures),
            Health::Progressing(m) if m.contains("generation 2, not 3")
        ));
        // Without its own observedGeneration, a condition is as current as the status says.
        let by_status = |observed: i64| {
            json!({"metadata": {"generation": 3}, "status": {
            "observedGeneration": observed,
            "conditions": [{"type": "Degraded", "status": "True", "message": "x"}]}})
        };
        assert!(matches!(
            condition(&by_status(2), "Available", &failures),
            Health::Progressing(_)
        ));
        assert!(matches!(
            condition(&by_status(3), "Available", &failures),
            Health::Failed { .. }
        ));
    }
}
