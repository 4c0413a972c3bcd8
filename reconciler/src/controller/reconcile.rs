//! One reconcile of one object: read what `decide` needs, let it decide, carry out its actions,
//! then write the status it asks for. Only the leader gets past the first line.

use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;
use kube::core::DynamicObject;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::EventType;
use serde_json::Value;
use tollgate_engine::rollout::RESTORED_ANNOTATION;

use super::events::{clear_annotation, publish};
use super::finalizer::{ensure_finalizer, finalize};
use super::restore::{Outcome, Restoring};
use super::revision_store::{RevisionStore, owner_reference};
use super::status_write::write_status;
use super::{
    AUTO_ROLLBACK_ANNOTATION, Context, RESYNC, ROLLBACK_TO_ANNOTATION, ReconcileError, key_of,
};
use crate::decide::{self, Action, Decision, Input};
use crate::health::Health;
use crate::revisions::{self, Restore, RevisionRecord};

/// The decision word for the metrics, with when to look again.
pub type Reconciled = (Requeue, &'static str);

pub async fn reconcile_object(
    object: &DynamicObject,
    ctx: &Context,
) -> Result<Reconciled, ReconcileError> {
    if !ctx.leadership.is_leader() {
        // Followers keep their caches warm and write nothing; a new leader re-examines all.
        return Ok((Requeue::await_change(), "follower"));
    }
    let namespace = object.namespace();
    let api = ctx.objects(namespace.as_deref());
    let uid = object
        .uid()
        .ok_or_else(|| ReconcileError::Object(format!("{} has no uid", object.name_any())))?;
    if object.metadata.deletion_timestamp.is_some() {
        finalize(object, ctx, &api, &uid).await?;
        ctx.metrics
            .set_phase(&ctx.kind.label(), &key_of(object), None);
        return Ok((Requeue::await_change(), "deleted"));
    }
    let object = ensure_finalizer(object, &api).await?;
    let value = serde_json::to_value(&object)
        .map_err(|e| ReconcileError::Object(format!("{}: {e}", object.name_any())))?;
    let spec = value.get("spec").cloned().unwrap_or(Value::Null);
    let revisions =
        RevisionStore::new(&ctx.client, &ctx.revision_cache, namespace.as_deref(), &uid);
    let records = revisions.list().await?;
    let health = observe_health(ctx, &value, namespace.as_deref()).await;
    let now = (ctx.now)();
    let hash = revisions::spec_hash(&spec);
    let marks = Marks::of(&object);
    let decision = decide::decide(&Input {
        generation: object.metadata.generation.unwrap_or(0),
        spec: &spec,
        spec_hash: &hash,
        new_revision_name: &revisions::revision_name(&object.name_any(), &hash),
        restore_marker: marks.restore_marker,
        rollback_to: marks.rollback_to,
        auto_rollback_disabled: marks.auto_rollback_disabled,
        revisions: &records,
        health: &health,
        rollout: &ctx.kind.rollout,
        now,
    });

    let acting = Acting {
        ctx,
        api: &api,
        object: &object,
        spec: &spec,
        hash: &hash,
        uid: &uid,
        records: &records,
        revisions: &revisions,
    };
    match acting.carry_out(&decision).await? {
        Carried::LostLeadership => return Ok((Requeue::await_change(), "follower")),
        // The spec changed (or the attempt was refused): the next round decides afresh.
        Carried::Restored(outcome) => {
            return Ok((Requeue::requeue(Duration::from_millis(200)), outcome));
        }
        Carried::Done => {}
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

/// What the object's annotations ask of the reconciler.
struct Marks<'a> {
    restore_marker: Option<Restore>,
    rollback_to: Option<&'a str>,
    auto_rollback_disabled: bool,
}

impl<'a> Marks<'a> {
    fn of(object: &'a DynamicObject) -> Self {
        let annotations = object.annotations();
        Self {
            restore_marker: annotations
                .get(RESTORED_ANNOTATION)
                .and_then(|t| serde_json::from_str::<Restore>(t).ok()),
            rollback_to: annotations.get(ROLLBACK_TO_ANNOTATION).map(String::as_str),
            auto_rollback_disabled: annotations
                .get(AUTO_ROLLBACK_ANNOTATION)
                .is_some_and(|v| v.eq_ignore_ascii_case("false")),
        }
    }
}

async fn observe_health(ctx: &Context, object: &Value, namespace: Option<&str>) -> Health {
    match ctx
        .health
        .observe(&ctx.client, object, namespace.unwrap_or("default"))
        .await
    {
        Ok(health) => health,
        // Unreadable is not unhealthy: keep waiting (the deadline still runs).
        Err(e) => Health::Progressing(format!("health source unreadable: {e}")),
    }
}

enum Carried {
    Done,
    LostLeadership,
    Restored(Outcome),
}

/// What carrying out a decision needs to know about the object.
struct Acting<'a> {
    ctx: &'a Context,
    api: &'a Api<DynamicObject>,
    object: &'a DynamicObject,
    spec: &'a Value,
    hash: &'a str,
    uid: &'a str,
    records: &'a [RevisionRecord],
    revisions: &'a RevisionStore<'a>,
}

impl Acting<'_> {
    async fn carry_out(&self, decision: &Decision) -> Result<Carried, ReconcileError> {
        let restoring = decision
            .actions
            .iter()
            .any(|a| matches!(a, Action::RestoreSpec { .. }));
        let mut restored = None;
        for action in &decision.actions {
            if !self.ctx.leadership.is_leader() {
                tracing::info!("lost leadership; stopping before the next write");
                return Ok(Carried::LostLeadership);
            }
            if let Some(outcome) = self.act(action, &decision.actions, restoring).await? {
                restored = Some(outcome);
            }
        }
        Ok(restored.map_or(Carried::Done, Carried::Restored))
    }

    async fn act(
        &self,
        action: &Action,
        all: &[Action],
        restoring: bool,
    ) -> Result<Option<Outcome>, ReconcileError> {
        let name = self.object.name_any();
        match action {
            Action::CreateRevision(record) => {
                let owner = owner_reference(self.object, &self.ctx.kind, self.uid);
                self.revisions.create(record, owner).await?;
            }
            Action::UpdateRevision(record) => self.revisions.update(record).await?,
            Action::RestoreSpec { to, restore } => {
                let current = decision_records(all)
                    .chain(self.records.iter())
                    .find(|r| r.hash == self.hash)
                    .cloned();
                let restoring = Restoring {
                    ctx: self.ctx,
                    api: self.api,
                    object: self.object,
                    spec: self.spec,
                    revisions: self.revisions,
                };
                return Ok(Some(restoring.restore(to, *restore, current).await?));
            }
            // Folded into the restore patch when one follows.
            Action::ClearRollbackRequest if restoring => {}
            Action::ClearRollbackRequest => {
                clear_annotation(self.api, &name, ROLLBACK_TO_ANNOTATION).await?
            }
            Action::ClearRestoreMarker => {
                clear_annotation(self.api, &name, RESTORED_ANNOTATION).await?
            }
            Action::DeleteRevisions(names) => self.revisions.delete(names).await?,
            Action::Warn { reason, message } => {
                publish(
                    self.ctx,
                    self.object,
                    EventType::Warning,
                    reason,
                    message,
                    "Reconcile",
                )
                .await
            }
        }
        Ok(None)
    }
}

/// Revisions the decision itself just wrote, so a restore can see the current one's latest state.
fn decision_records(actions: &[Action]) -> impl Iterator<Item = &RevisionRecord> {
    actions.iter().filter_map(|a| match a {
        Action::CreateRevision(r) | Action::UpdateRevision(r) => Some(r),
        _ => None,
    })
}
