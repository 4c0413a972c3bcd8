//! One kube-runtime Controller per managed kind: it watches the custom resources, the
//! ControllerRevisions they own and their health sources, and for each object runs `decide` and
//! carries out what it returns. Only the leader writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::controller::{Action as Requeue, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tollgate_engine::rollout::{HealthRule, WorkloadKind};
use tollgate_engine::selector::{LabelSelector, LabelSelectorSpec};
use tracing::Instrument;

use crate::decide::{self, Action, Input};
use crate::health::{self, Health};
use crate::kinds::ManagedKind;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::patch::merge_patch_to;
use crate::revisions::{self, MANAGED_BY_LABEL, OWNER_UID_LABEL, Restore, RevisionRecord};
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
        Self {
            client,
            kind,
            resource,
            leadership,
            metrics,
            recorder,
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
    let owned_revisions =
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}=tollgate"));
    let controller =
        Controller::new_with(objects, watcher::Config::default(), ctx.resource.clone())
            .with_config(ControllerConfig::default().concurrency(CONCURRENCY))
            .owns_with(
                Api::<ControllerRevision>::all(client.clone()),
                (),
                owned_revisions,
            );
    let related = Related {
        store: controller.store(),
        resource: ctx.resource.clone(),
    };
    let config = watcher::Config::default;
    let controller = match ctx.kind.rollout.health.clone() {
        HealthRule::Workload {
            kind: WorkloadKind::Deployment,
            name_from,
        } => controller.watches(Api::<Deployment>::all(client.clone()), config(), move |d| {
            related.matching(d.namespace(), |o| {
                health::read_str(o, &name_from) == Some(d.name_any().as_str())
            })
        }),
        HealthRule::Workload {
            kind: WorkloadKind::StatefulSet,
            name_from,
        } => controller.watches(
            Api::<StatefulSet>::all(client.clone()),
            config(),
            move |s| {
                related.matching(s.namespace(), |o| {
                    health::read_str(o, &name_from) == Some(s.name_any().as_str())
                })
            },
        ),
        HealthRule::Pods { selector_from, .. } => {
            controller.watches(Api::<Pod>::all(client.clone()), config(), move |p| {
                related.matching(p.namespace(), |o| {
                    selector_from
                        .get(o)
                        .and_then(|s| serde_json::from_value::<LabelSelectorSpec>(s.clone()).ok())
                        .and_then(|spec| LabelSelector::new(spec).ok())
                        .is_some_and(|selector| selector.matches(p.labels()))
                })
            })
        }
        // The object's own status carries the condition: its watch is enough.
        HealthRule::Condition { .. } => controller,
    };
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

/// Finds the managed objects a health source's change concerns, from the controller's cache.
struct Related {
    store: Store<DynamicObject>,
    resource: ApiResource,
}

impl Related {
    fn matching(
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
    let result = reconcile_object(&object, &ctx)
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

async fn reconcile_object(
    object: &DynamicObject,
    ctx: &Context,
) -> Result<(Requeue, &'static str), ReconcileError> {
    if !ctx.leadership.is_leader() {
        // Followers keep their caches warm and write nothing; a new leader re-examines all.
        return Ok((Requeue::await_change(), "follower"));
    }
    let namespace = object.namespace();
    let api = ctx.objects(namespace.as_deref());
    let name = object.name_any();
    let uid = object
        .uid()
        .ok_or_else(|| ReconcileError::Object(format!("{name} has no uid")))?;
    if object.metadata.deletion_timestamp.is_some() {
        finalize(object, ctx, &api, &uid).await?;
        ctx.metrics
            .set_phase(&ctx.kind.label(), &key_of(object), None);
        return Ok((Requeue::await_change(), "deleted"));
    }
    let object = ensure_finalizer(object, &api).await?;

    let value = serde_json::to_value(&object)
        .map_err(|e| ReconcileError::Object(format!("{name}: {e}")))?;
    let spec = value.get("spec").cloned().unwrap_or(Value::Null);
    let hash = revisions::spec_hash(&spec);
    let revision_api = revision_api(ctx, namespace.as_deref());
    let records = list_revisions(&revision_api, &uid).await?;
    let health = observe_health(ctx, &value, namespace.as_deref()).await;
    let annotations = object.annotations();
    let restore_marker = annotations
        .get(RESTORED_ANNOTATION)
        .and_then(|t| serde_json::from_str::<Restore>(t).ok());
    let now = (ctx.now)();
    let decision = decide::decide(&Input {
        generation: object.metadata.generation.unwrap_or(0),
        spec: &spec,
        spec_hash: &hash,
        new_revision_name: &revisions::revision_name(&name, &hash),
        restore_marker,
        rollback_to: annotations.get(ROLLBACK_TO_ANNOTATION).map(String::as_str),
        auto_rollback_disabled: annotations
            .get(AUTO_ROLLBACK_ANNOTATION)
            .is_some_and(|v| v.eq_ignore_ascii_case("false")),
        revisions: &records,
        health: &health,
        rollout: &ctx.kind.rollout,
        now,
    });

    let owner = owner_reference(&object, ctx, &uid);
    let mut restored = None;
    for action in &decision.actions {
        if !ctx.leadership.is_leader() {
            tracing::info!("lost leadership; stopping before the next write");
            return Ok((Requeue::await_change(), "follower"));
        }
        match action {
            Action::CreateRevision(record) => {
                create_revision(&revision_api, record, namespace.as_deref(), owner.clone()).await?
            }
            Action::UpdateRevision(record) => update_revision(&revision_api, record).await?,
            Action::RestoreSpec { to, restore } => {
                let current = decision_records(&decision.actions)
                    .chain(records.iter())
                    .find(|r| r.hash == hash)
                    .cloned();
                restored = Some(
                    restore_spec(
                        ctx,
                        &api,
                        &object,
                        &spec,
                        to,
                        *restore,
                        current,
                        &revision_api,
                    )
                    .await?,
                );
            }
            Action::ClearRollbackRequest => {
                // Folded into the restore patch when one follows.
                if !decision
                    .actions
                    .iter()
                    .any(|a| matches!(a, Action::RestoreSpec { .. }))
                {
                    clear_annotation(&api, &name, ROLLBACK_TO_ANNOTATION).await?;
                }
            }
            Action::ClearRestoreMarker => {
                clear_annotation(&api, &name, RESTORED_ANNOTATION).await?
            }
            Action::DeleteRevisions(names) => {
                for revision in names {
                    match revision_api
                        .delete(revision, &DeleteParams::default())
                        .await
                    {
                        Ok(_) => {}
                        Err(kube::Error::Api(s)) if s.code == 404 => {}
                        Err(e) => return Err(api_err(format!("delete revision {revision}"))(e)),
                    }
                }
            }
            Action::Warn { reason, message } => {
                publish(
                    ctx,
                    &object,
                    EventType::Warning,
                    reason,
                    message,
                    "Reconcile",
                )
                .await
            }
        }
    }
    if let Some(outcome) = restored {
        // The spec changed (or the attempt was refused): the next round decides afresh.
        return Ok((Requeue::requeue(Duration::from_millis(200)), outcome));
    }
    tracing::debug!(
        decision = decision.summary,
        phase = decision.status.phase.as_str(),
        revision = decision.status.current_revision,
        health = health.message(),
        "decided"
    );
    write_status(ctx, &api, &object, &decision.status, now).await?;
    ctx.metrics.set_phase(
        &ctx.kind.label(),
        &key_of(&object),
        Some(decision.status.phase),
    );
    let requeue = decision
        .requeue_after
        .map_or(Requeue::requeue(RESYNC), |d| {
            Requeue::requeue(d + Duration::from_millis(250))
        });
    Ok((requeue, decision.summary))
}

/// Revisions the decision itself just wrote, so a restore can see the current one's latest state.
fn decision_records(actions: &[Action]) -> impl Iterator<Item = &RevisionRecord> {
    actions.iter().filter_map(|a| match a {
        Action::CreateRevision(r) | Action::UpdateRevision(r) => Some(r),
        _ => None,
    })
}

fn revision_api(ctx: &Context, namespace: Option<&str>) -> Api<ControllerRevision> {
    match namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        // Cluster-scoped resources keep their revisions in the reconciler's own namespace.
        None => Api::default_namespaced(ctx.client.clone()),
    }
}

async fn list_revisions(
    api: &Api<ControllerRevision>,
    uid: &str,
) -> Result<Vec<RevisionRecord>, ReconcileError> {
    let list = api
        .list(&ListParams::default().labels(&format!("{OWNER_UID_LABEL}={uid}")))
        .await
        .map_err(api_err("list revisions"))?;
    let mut records: Vec<RevisionRecord> = list
        .items
        .iter()
        .filter_map(RevisionRecord::from_controller_revision)
        .collect();
    records.sort_by_key(|r| r.number);
    Ok(records)
}

fn owner_reference(object: &DynamicObject, ctx: &Context, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: ctx.kind.api_version(),
        kind: ctx.kind.kind.clone(),
        name: object.name_any(),
        uid: uid.to_string(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

async fn create_revision(
    api: &Api<ControllerRevision>,
    record: &RevisionRecord,
    namespace: Option<&str>,
    owner: OwnerReference,
) -> Result<(), ReconcileError> {
    let namespace = namespace.unwrap_or_else(|| api.namespace().unwrap_or("default"));
    let revision = record.to_controller_revision(namespace, owner);
    match api.create(&PostParams::default(), &revision).await {
        Ok(_) => Ok(()),
        // Same name means same spec hash: a revision left over (or raced): take it over.
        Err(kube::Error::Api(s)) if s.code == 409 => update_revision(api, record).await,
        Err(e) => Err(api_err(format!("create revision {}", record.name))(e)),
    }
}

async fn update_revision(
    api: &Api<ControllerRevision>,
    record: &RevisionRecord,
) -> Result<(), ReconcileError> {
    let patch = json!({
        "metadata": {"annotations": record.bookkeeping()},
        "revision": record.number,
    });
    api.patch(&record.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(api_err(format!("update revision {}", record.name)))?;
    Ok(())
}

/// Puts revision `to`'s spec back with a resourceVersion precondition. Returns the decision word
/// for the metrics: `rollback`, `conflict` (re-read and decide again) or `rollback-refused`.
#[allow(clippy::too_many_arguments)]
async fn restore_spec(
    ctx: &Context,
    api: &Api<DynamicObject>,
    object: &DynamicObject,
    spec: &Value,
    to: &RevisionRecord,
    restore: Restore,
    current: Option<RevisionRecord>,
    revision_api: &Api<ControllerRevision>,
) -> Result<&'static str, ReconcileError> {
    let marker =
        serde_json::to_string(&restore).map_err(|e| ReconcileError::Object(e.to_string()))?;
    let patch = json!({
        "metadata": {
            "resourceVersion": object.resource_version(),
            "annotations": {RESTORED_ANNOTATION: marker, ROLLBACK_TO_ANNOTATION: null},
        },
        "spec": merge_patch_to(spec, &to.spec),
    });
    let name = object.name_any();
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            let how = if restore.manual {
                "manual rollback"
            } else {
                "rolled back"
            };
            let message = format!(
                "{how} from revision {} to revision {}{}",
                restore.from,
                restore.to,
                current
                    .as_ref()
                    .and_then(|c| c.failure.as_ref())
                    .map(|f| format!(": {f}"))
                    .unwrap_or_default()
            );
            tracing::info!(
                from = restore.from,
                to = restore.to,
                manual = restore.manual,
                "spec restored"
            );
            ctx.metrics
                .rollbacks
                .get_or_create(&crate::metrics::KindLabels {
                    kind: ctx.kind.label(),
                })
                .inc();
            publish(
                ctx,
                object,
                EventType::Normal,
                "RolledBack",
                &message,
                "Rollback",
            )
            .await;
            Ok("rollback")
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok("conflict"),
        Err(kube::Error::Api(s)) if matches!(s.code, 400 | 403 | 422) => {
            // Refused for good (typically policies tightened since that spec was healthy):
            // remember it on the failing revision so no one retries, and say why.
            let reason = s.message.clone();
            tracing::warn!(%reason, "rollback refused by the apiserver");
            if let Some(mut current) = current {
                current.rollback_denied = Some(reason.clone());
                update_revision(revision_api, &current).await?;
            }
            if restore.manual {
                clear_annotation(api, &name, ROLLBACK_TO_ANNOTATION).await?;
            }
            let message = format!(
                "rollback from revision {} to revision {} was refused: {reason}",
                restore.from, restore.to
            );
            publish(
                ctx,
                object,
                EventType::Warning,
                "RollbackFailed",
                &message,
                "Rollback",
            )
            .await;
            Ok("rollback-refused")
        }
        Err(e) => Err(api_err(format!("restore the spec of {name}"))(e)),
    }
}

async fn clear_annotation(
    api: &Api<DynamicObject>,
    name: &str,
    key: &str,
) -> Result<(), ReconcileError> {
    let patch = json!({"metadata": {"annotations": {key: null}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(api_err(format!("remove annotation {key}")))?;
    Ok(())
}

async fn publish(
    ctx: &Context,
    object: &DynamicObject,
    type_: EventType,
    reason: &str,
    note: &str,
    action: &str,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note.chars().take(1024).collect()),
        action: action.to_string(),
        secondary: None,
    };
    let reference = object.object_ref(&ctx.resource);
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        tracing::warn!(error = %e, %reason, "could not publish event");
    }
}

async fn ensure_finalizer(
    object: &DynamicObject,
    api: &Api<DynamicObject>,
) -> Result<DynamicObject, ReconcileError> {
    if object.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(object.clone());
    }
    let mut finalizers = object.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    let patch = json!({"metadata": {"resourceVersion": object.resource_version(), "finalizers": finalizers}});
    api.patch(
        &object.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(api_err("add finalizer"))
}

/// On delete: the object's revisions go (garbage collection may not run), then the finalizer.
async fn finalize(
    object: &DynamicObject,
    ctx: &Context,
    api: &Api<DynamicObject>,
    uid: &str,
) -> Result<(), ReconcileError> {
    if !object.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let revision_api = revision_api(ctx, object.namespace().as_deref());
    for record in list_revisions(&revision_api, uid).await? {
        match revision_api
            .delete(&record.name, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(api_err(format!("delete revision {}", record.name))(e)),
        }
    }
    remove_finalizer(api, object).await
}

pub async fn remove_finalizer(
    api: &Api<DynamicObject>,
    object: &DynamicObject,
) -> Result<(), ReconcileError> {
    let finalizers: Vec<&String> = object
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .collect();
    let patch = json!({"metadata": {"resourceVersion": object.resource_version(), "finalizers": finalizers}});
    match api
        .patch(
            &object.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(api_err("remove finalizer")(e)),
    }
}

async fn observe_health(ctx: &Context, object: &Value, namespace: Option<&str>) -> Health {
    match observe(ctx, object, namespace).await {
        Ok(health) => health,
        // Unreadable is not unhealthy: keep waiting (the deadline still runs).
        Err(e) => Health::Progressing(format!("health source unreadable: {e}")),
    }
}

async fn observe(
    ctx: &Context,
    object: &Value,
    namespace: Option<&str>,
) -> Result<Health, kube::Error> {
    let ns = namespace.unwrap_or("default");
    match &ctx.kind.rollout.health {
        HealthRule::Workload { kind, name_from } => {
            let Some(name) = health::read_str(object, name_from) else {
                return Ok(Health::Missing(format!("{name_from} is not set")));
            };
            Ok(match kind {
                WorkloadKind::Deployment => {
                    match Api::<Deployment>::namespaced(ctx.client.clone(), ns)
                        .get_opt(name)
                        .await?
                    {
                        Some(d) => health::deployment(&d),
                        None => Health::Missing(format!("Deployment {name} not found")),
                    }
                }
                WorkloadKind::StatefulSet => {
                    match Api::<StatefulSet>::namespaced(ctx.client.clone(), ns)
                        .get_opt(name)
                        .await?
                    {
                        Some(s) => health::stateful_set(&s),
                        None => Health::Missing(format!("StatefulSet {name} not found")),
                    }
                }
            })
        }
        HealthRule::Pods {
            selector_from,
            min_ready_from,
        } => {
            let Some(query) = selector_from.get(object).and_then(health::selector_query) else {
                return Ok(Health::Missing(format!(
                    "{selector_from} is not a usable label selector"
                )));
            };
            let min_ready = min_ready_from
                .as_ref()
                .and_then(|p| health::read_int(object, p))
                .unwrap_or(1);
            let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns)
                .list(&ListParams::default().labels(&query))
                .await?;
            Ok(health::pods(&pods.items, min_ready))
        }
        HealthRule::Condition {
            type_,
            failure_types,
        } => Ok(health::condition(object, type_, failure_types)),
    }
}

/// Server-side apply of tollgate's status fields; skipped when nothing would change.
async fn write_status(
    ctx: &Context,
    api: &Api<DynamicObject>,
    object: &DynamicObject,
    desired: &status::DesiredStatus,
    now: Timestamp,
) -> Result<(), ReconcileError> {
    let current = serde_json::to_value(object).unwrap_or(Value::Null);
    let existing = status::current_conditions(&current);
    let conditions = status::merge_conditions(
        &existing,
        &desired.conditions,
        desired.observed_generation,
        now,
    )?;
    let mut body = json!({
        "observedGeneration": desired.observed_generation,
        "phase": desired.phase.as_str(),
        "conditions": conditions,
    });
    // Absent rather than null: a structural schema rejects null integers, and leaving a field
    // out of an apply releases it.
    for (field, value) in [
        ("currentRevision", desired.current_revision),
        ("lastHealthyRevision", desired.last_healthy_revision),
    ] {
        if let (Some(v), Some(map)) = (value, body.as_object_mut()) {
            map.insert(field.into(), json!(v));
        }
    }
    let owned = [
        "observedGeneration",
        "phase",
        "conditions",
        "currentRevision",
        "lastHealthyRevision",
    ];
    let unchanged = owned.iter().all(|k| {
        let have = current
            .pointer(&format!("/status/{k}"))
            .unwrap_or(&Value::Null);
        let want = body.get(*k).unwrap_or(&Value::Null);
        if *k == "conditions" {
            // Compare only tollgate's own condition types.
            let mine: Vec<&Value> = have
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| {
                    desired
                        .conditions
                        .iter()
                        .any(|d| c.get("type").and_then(Value::as_str) == Some(d.type_))
                })
                .collect();
            want.as_array()
                .is_some_and(|want| want.iter().collect::<Vec<_>>() == mine)
        } else {
            have == want
        }
    });
    if unchanged {
        return Ok(());
    }
    let apply = json!({
        "apiVersion": ctx.kind.api_version(),
        "kind": ctx.kind.kind,
        "metadata": {"name": object.name_any()},
        "status": body,
    });
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&apply),
    )
    .await
    .map_err(api_err("apply status"))?;
    Ok(())
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
