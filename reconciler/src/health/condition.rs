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
            Health::Failed(_)
        ));
        assert!(matches!(
            condition(&obj(json!([])), "Available", &failures),
            Health::Progressing(_)
        ));
    }
}
