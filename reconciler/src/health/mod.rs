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
    pub fn matching(
        &self,
        namespace: Option<String>,
        concerns: impl Fn(&Value) -> bool,
    ) -> Vec<ObjectRef<DynamicObject>> {
        self.store
            .state()
            .iter()
            .filter(|o| o.namespace() == namespace)
            .filter(|o| serde_json::to_value(o.as_ref()).is_ok_and(|v| concerns(&v)))
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
