//! The Pods a label selector in the object matches: healthy once enough of them are Ready.

use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::core::DynamicObject;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;
use tollgate_engine::FieldPath;
use tollgate_engine::selector::{LabelSelector, LabelSelectorSpec};

use super::{Health, HealthSource, Related, read_int};

pub struct Pods {
    pub selector_from: FieldPath,
    pub min_ready_from: Option<FieldPath>,
}

impl HealthSource for Pods {
    fn watch(
        &self,
        controller: Controller<DynamicObject>,
        client: &Client,
        related: Related,
    ) -> Controller<DynamicObject> {
        let selector_from = self.selector_from.clone();
        controller.watches(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default(),
            move |pod| {
                related.matching(pod.namespace(), &selector_from, |s| {
                    serde_json::from_value::<LabelSelectorSpec>(s.clone())
                        .ok()
                        .and_then(|spec| LabelSelector::new(spec).ok())
                        .is_some_and(|selector| selector.matches(pod.labels()))
                })
            },
        )
    }

    fn observe<'a>(
        &'a self,
        client: &'a Client,
        object: &'a Value,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Health, kube::Error>> {
        Box::pin(async move {
            let Some(query) = self.selector_from.get(object).and_then(selector_query) else {
                return Ok(Health::Missing(format!(
                    "{} is not a usable label selector",
                    self.selector_from
                )));
            };
            let min_ready = self
                .min_ready_from
                .as_ref()
                .and_then(|p| read_int(object, p))
                .unwrap_or(1);
            let listed = Api::<Pod>::namespaced(client.clone(), namespace)
                .list(&ListParams::default().labels(&query))
                .await?;
            Ok(pods(&listed.items, min_ready))
        })
    }
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
