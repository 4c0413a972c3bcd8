//! Health of the current revision, judged from its health source: a workload's rollout, the Pods
//! a selector matches, or a condition the resource's own operator writes.
//!
//! Each rule is a [`HealthSource`] in a file of its own: what the controller watches so a change
//! of the source re-examines the objects it concerns, and how the source reads as a [`Health`].
//! [`source`] is the one place a policy's rule becomes its source, so adding a rule is its
//! variant in the policy format, one file here and one line there.

mod condition;
mod deployment;
mod pods;
mod stateful_set;
mod workload;

use futures_util::future::BoxFuture;
use jiff::Timestamp;
use kube::Client;
use kube::ResourceExt;
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::Controller;
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::Value;
use tollgate_engine::FieldPath;
use tollgate_engine::path::Segment;
use tollgate_engine::rollout::{HealthRule, WorkloadKind};

pub use condition::condition;
pub use deployment::deployment;
pub use pods::{pods, selector_query};
pub use stateful_set::stateful_set;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy(String),
    /// Working towards health (or not yet observed).
    Progressing(String),
    /// The health source does not exist (yet).
    Missing(String),
    /// The health source says this will not become healthy; `since` is when it said so, where
    /// the source records it (a failure reported before the current attempt started belongs to
    /// an earlier one).
    Failed {
        message: String,
        since: Option<Timestamp>,
    },
}

impl Health {
    /// A failure with no time of its own: it concerns whatever attempt reads it.
    pub fn failed(message: String) -> Self {
        Self::Failed {
            message,
            since: None,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Self::Healthy(m)
            | Self::Progressing(m)
            | Self::Missing(m)
            | Self::Failed { message: m, .. } => m,
        }
    }
}

/// Where a rule reads health from.
pub trait HealthSource: Send + Sync {
    /// Adds the watches whose events concern managed objects; `related` finds which.
    fn watch(
        &self,
        controller: Controller<DynamicObject>,
        client: &Client,
        related: Related,
    ) -> Controller<DynamicObject>;

    /// Reads the source for one managed object (`object` as JSON, in `namespace`).
    fn observe<'a>(
        &'a self,
        client: &'a Client,
        object: &'a Value,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Health, kube::Error>>;
}

/// The source a policy's health rule reads.
pub fn source(rule: &HealthRule) -> Box<dyn HealthSource> {
    match rule {
        HealthRule::Workload {
            kind: WorkloadKind::Deployment,
            name_from,
        } => Box::new(deployment::source(name_from.clone())),
        HealthRule::Workload {
            kind: WorkloadKind::StatefulSet,
            name_from,
        } => Box::new(stateful_set::source(name_from.clone())),
        HealthRule::Pods {
            selector_from,
            min_ready_from,
        } => Box::new(pods::Pods {
            selector_from: selector_from.clone(),
            min_ready_from: min_ready_from.clone(),
        }),
        HealthRule::Condition {
            type_,
            failure_types,
        } => Box::new(condition::Condition {
            type_: type_.clone(),
            failure_types: failure_types.clone(),
        }),
    }
}

/// Finds the managed objects a health source's change concerns, from the controller's cache.
pub struct Related {
    pub store: Store<DynamicObject>,
    pub resource: ApiResource,
}

impl Related {
    /// The managed objects in `namespace` whose value at `field` `concerns` the change. Called on
    /// every event of the source, so it reads the cached objects in place: no object is
    /// serialised whole (a `metadata.…` field serialises only that object's metadata).
    pub fn matching(
        &self,
        namespace: Option<String>,
        field: &FieldPath,
        concerns: impl Fn(&Value) -> bool,
    ) -> Vec<ObjectRef<DynamicObject>> {
        let in_metadata = match field.0.split_first() {
            Some((Segment::Key(first), rest)) if first == "metadata" => {
                Some(FieldPath(rest.to_vec()))
            }
            _ => None,
        };
        let value_of = |o: &DynamicObject| match &in_metadata {
            Some(rest) => serde_json::to_value(&o.metadata)
                .ok()
                .and_then(|meta| rest.get(&meta).cloned()),
            None => field.get(&o.data).cloned(),
        };
        self.store
            .state()
            .iter()
            .filter(|o| o.namespace() == namespace)
            .filter(|o| value_of(o).is_some_and(|v| concerns(&v)))
            .map(|o| ObjectRef::from_obj_with(o.as_ref(), self.resource.clone()))
            .collect()
    }
}

/// A value the health rule reads from the object: a name, a replica count.
pub fn read_str<'v>(object: &'v Value, path: &FieldPath) -> Option<&'v str> {
    path.get(object).and_then(Value::as_str)
}

pub fn read_int(object: &Value, path: &FieldPath) -> Option<i64> {
    path.get(object).and_then(Value::as_i64)
}

#[cfg(test)]
pub(crate) fn kind_of(health: &Health) -> &'static str {
    match health {
        Health::Healthy(_) => "Healthy",
        Health::Progressing(_) => "Progressing",
        Health::Missing(_) => "Missing",
        Health::Failed { .. } => "Failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::GroupVersionKind;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;
    use serde_json::json;

    fn related(objects: &[(&str, &str, &str)]) -> Related {
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("e.com", "v1", "Gw"));
        let mut writer = Writer::<DynamicObject>::new(resource.clone());
        for (namespace, name, target) in objects {
            let object = serde_json::from_value(json!({
                "apiVersion": "e.com/v1", "kind": "Gw",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"target": target}
            }))
            .unwrap_or_else(|_| DynamicObject::new(name, &resource));
            writer.apply_watcher_event(&Event::Apply(object));
        }
        Related {
            store: writer.as_reader(),
            resource,
        }
    }

    fn names(refs: Vec<ObjectRef<DynamicObject>>) -> Vec<String> {
        let mut names: Vec<String> = refs.into_iter().map(|r| r.name).collect();
        names.sort();
        names
    }

    #[test]
    fn an_event_concerns_the_objects_whose_field_matches_in_its_namespace() {
        let related = related(&[("a", "gw1", "d1"), ("a", "gw2", "d1"), ("b", "gw3", "d1")]);
        let spec_target = FieldPath::parse("spec.target").unwrap_or_default();
        let matched = related.matching(Some("a".into()), &spec_target, |v| v == "d1");
        assert_eq!(names(matched), ["gw1", "gw2"]);
        let name = FieldPath::parse("metadata.name").unwrap_or_default();
        let matched = related.matching(Some("b".into()), &name, |v| v == "gw3");
        assert_eq!(names(matched), ["gw3"]);
        assert!(
            related
                .matching(Some("a".into()), &name, |v| v == "gw3")
                .is_empty()
        );
    }
}
