//! One kube-runtime Controller per managed kind: it watches the custom resources, the
//! ControllerRevisions they own and their health sources, and for each object runs `decide` and
//! carries out what it returns. Only the leader writes.

mod events;
mod finalizer;
mod reconcile;
mod restore;
mod revision_cache;
mod revision_store;
mod status_write;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::api::Api;
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::controller::{Action as Requeue, Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{reflector, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tracing::Instrument;

pub use finalizer::remove_finalizer;

use crate::health::{self, HealthSource, Related};
use crate::kinds::ManagedKind;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::revisions::MANAGED_BY_LABEL;
use crate::status;

pub const FIELD_MANAGER: &str = "tollgate";
pub const FINALIZER: &str = "tollgate.dev/revisions";
pub const AUTO_ROLLBACK_ANNOTATION: &str = "tollgate.dev/auto-rollback";
pub const ROLLBACK_TO_ANNOTATION: &str = "tollgate.dev/rollback-to";
pub use tollgate_engine::rollout::RESTORED_ANNOTATION;
/// How often a steady object is looked at again even without events.
const RESYNC: Duration = Duration::from_secs(300);
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Objects reconciled at once per kind. Unbounded, a first sync of 1000 objects opened ~1000
/// connections to the apiserver at the same moment (HTTP/1.1 cannot multiplex).
const CONCURRENCY: u16 = 16;
const BACKOFF_CAP: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// A call to the apiserver failed.
    #[error("{action}: {source}")]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
    /// The object is not shaped as a managed custom resource must be.
    #[error("{0}")]
    Object(String),
    /// A condition could not be expressed as a metav1.Condition.
    #[error(transparent)]
    Condition(#[from] status::ConditionError),
}

fn api_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> ReconcileError {
    let action = action.into();
    move |source| ReconcileError::Api { action, source }
}

pub struct Context {
    pub client: Client,
    pub kind: ManagedKind,
    pub resource: ApiResource,
    pub leadership: Arc<Leadership>,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Where the kind's health rule reads health from.
    pub health: Box<dyn HealthSource>,
    /// The status each object was last given, so a lagging cache does not cause it again.
    applied_statuses: status_write::AppliedStatuses,
    /// The kind's revisions as the controller's watch sees them.
    revision_cache: revision_cache::RevisionCache,
    /// Failures in a row per object, for its own exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The clock (`Timestamp::now` in production).
    pub now: fn() -> Timestamp,
}

impl Context {
    pub fn new(
        client: Client,
        kind: ManagedKind,
        resource: ApiResource,
        leadership: Arc<Leadership>,
        metrics: Arc<Metrics>,
        identity: &str,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "tollgate".into(),
                instance: Some(identity.to_string()),
            },
        );
        let health = health::source(&kind.rollout.health);
        Self {
            client,
            kind,
            resource,
            leadership,
            metrics,
            recorder,
            health,
            revision_cache: revision_cache::RevisionCache::default(),
            applied_statuses: status_write::AppliedStatuses::default(),
            failures: Mutex::default(),
            now: Timestamp::now,
        }
    }

    fn objects(&self, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) if self.kind.namespaced => {
                Api::namespaced_with(self.client.clone(), ns, &self.resource)
            }
            _ => Api::all_with(self.client.clone(), &self.resource),
        }
    }
}

pub fn gvk(kind: &ManagedKind) -> GroupVersionKind {
    GroupVersionKind::gvk(&kind.group, &kind.version, &kind.kind)
}

/// Runs the controller for one kind until `shutdown`.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let objects: Api<DynamicObject> = Api::all_with(client.clone(), &ctx.resource);
    // The caches hold every object of the kind and every revision: without their managedFields
    // (never read here) they take about half the memory.
    let objects_writer = Writer::<DynamicObject>::new(ctx.resource.clone());
    let objects_store = objects_writer.as_reader();
    let objects = reflector(
        objects_writer,
        watcher(objects, watcher::Config::default()).modify(drop_managed_fields),
    )
    .applied_objects();
    let mut controller = Controller::for_stream_with(objects, objects_store, ctx.resource.clone())
        .with_config(ControllerConfig::default().concurrency(CONCURRENCY));
    let owned_revisions =
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}=tollgate"));
    // The revisions feed the cache reconciles read, and wake their owner when they change.
    let cache = Arc::clone(&ctx);
    let revisions = watcher(
        Api::<ControllerRevision>::all(client.clone()),
        owned_revisions,
    )
    .map_ok(move |event| {
        cache.revision_cache.apply(&event);
        event
    })
    .touched_objects();
    controller = controller.owns_stream(revisions);
    let related = Related {
        store: controller.store(),
        resource: ctx.resource.clone(),
    };
    let controller = ctx.health.watch(controller, &client, related);
    // A new leader looks at every object at once instead of waiting for events or the resync.
    let epochs = ctx.leadership.epochs();
    let trigger = futures_util::stream::unfold(epochs, |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    });
    let label = ctx.kind.label();
    controller
        .reconcile_all_on(trigger)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, Arc::clone(&ctx))
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(kind = %label, error = %e, "controller event");
            }
            futures_util::future::ready(())
        })
        .await;
}

fn drop_managed_fields<K: kube::Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

fn error_policy(object: Arc<DynamicObject>, error: &ReconcileError, ctx: Arc<Context>) -> Requeue {
    let key = key_of(&object);
    let failures = {
        let mut map = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    ctx.metrics
        .errors
        .get_or_create(&crate::metrics::KindLabels {
            kind: ctx.kind.label(),
        })
        .inc();
    let delay = backoff(failures);
    tracing::warn!(kind = %ctx.kind.label(), object = %key, error = %error, retry_in = ?delay, "reconcile failed");
    Requeue::requeue(delay)
}

/// 1 s, 2 s, 4 s, ... capped at 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_CAP)
}

fn key_of(object: &DynamicObject) -> String {
    match object.namespace() {
        Some(ns) => format!("{ns}/{}", object.name_any()),
        None => object.name_any(),
    }
}

async fn reconcile(
    object: Arc<DynamicObject>,
    ctx: Arc<Context>,
) -> Result<Requeue, ReconcileError> {
    let span = tracing::info_span!(
        "reconcile",
        kind = %ctx.kind.label(),
        object = %key_of(&object),
        generation = object.metadata.generation.unwrap_or(0),
        decision = tracing::field::Empty,
    );
    let result = reconcile::reconcile_object(&object, &ctx)
        .instrument(span.clone())
        .await;
    let decision = match &result {
        Ok((_, decision)) => *decision,
        Err(_) => "error",
    };
    span.record("decision", decision);
    ctx.metrics
        .reconciles
        .get_or_create(&crate::metrics::ResultLabels {
            kind: ctx.kind.label(),
            decision: decision.to_string(),
        })
        .inc();
    if result.is_ok() {
        ctx.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key_of(&object));
    }
    result.map(|(requeue, _)| requeue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(40), BACKOFF_CAP);
    }
}
