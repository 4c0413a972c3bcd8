//! Putting a revision's spec back: the patch with its marker, and what a refusal leaves behind.

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::runtime::events::EventType;
use serde_json::{Value, json};

use super::events::{clear_annotation, publish};
use super::revision_store::RevisionStore;
use super::{Context, ROLLBACK_TO_ANNOTATION, ReconcileError, api_err};
use crate::patch::merge_patch_to;
use crate::revisions::{Restore, RevisionRecord};
use tollgate_engine::rollout::RESTORED_ANNOTATION;

/// How a restore ended, as the decision word for the metrics.
pub type Outcome = &'static str;

/// The object being restored, and where its revisions live.
pub struct Restoring<'a> {
    pub ctx: &'a Context,
    pub api: &'a Api<DynamicObject>,
    pub object: &'a DynamicObject,
    /// The spec in force now (the one that failed).
    pub spec: &'a Value,
    pub revisions: &'a RevisionStore<'a>,
}

impl Restoring<'_> {
    /// Puts revision `to`'s spec back with a resourceVersion precondition: `rollback`,
    /// `conflict` (re-read and decide again) or `rollback-refused`. `current` is the failing
    /// revision, where a refusal is remembered so no one retries it.
    pub async fn restore(
        &self,
        to: &RevisionRecord,
        restore: Restore,
        current: Option<RevisionRecord>,
    ) -> Result<Outcome, ReconcileError> {
        let marker =
            serde_json::to_string(&restore).map_err(|e| ReconcileError::Object(e.to_string()))?;
        let patch = json!({
            "metadata": {
                "resourceVersion": self.object.resource_version(),
                "annotations": {RESTORED_ANNOTATION: marker, ROLLBACK_TO_ANNOTATION: null},
            },
            "spec": merge_patch_to(self.spec, &to.spec),
        });
        let name = self.object.name_any();
        match self
            .api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                self.restored(restore, current.as_ref()).await;
                Ok("rollback")
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok("conflict"),
            Err(kube::Error::Api(s)) if matches!(s.code, 400 | 403 | 422) => {
                self.refused(restore, current, s.message).await?;
                Ok("rollback-refused")
            }
            Err(e) => Err(api_err(format!("restore the spec of {name}"))(e)),
        }
    }

    async fn restored(&self, restore: Restore, current: Option<&RevisionRecord>) {
        let how = if restore.manual {
            "manual rollback"
        } else {
            "rolled back"
        };
        let why = current
            .and_then(|c| c.failure.as_ref())
            .map(|f| format!(": {f}"))
            .unwrap_or_default();
        let message = format!(
            "{how} from revision {} to revision {}{why}",
            restore.from, restore.to
        );
        tracing::info!(
            from = restore.from,
            to = restore.to,
            manual = restore.manual,
            "spec restored"
        );
        self.ctx
            .metrics
            .rollbacks
            .get_or_create(&crate::metrics::KindLabels {
                kind: self.ctx.kind.label(),
            })
            .inc();
        publish(
            self.ctx,
            self.object,
            EventType::Normal,
            "RolledBack",
            &message,
            "Rollback",
        )
        .await;
    }

    /// Refused for good (typically policies tightened since that spec was healthy): remembered
    /// on the failing revision so no one retries, and said in an Event.
    async fn refused(
        &self,
        restore: Restore,
        current: Option<RevisionRecord>,
        reason: String,
    ) -> Result<(), ReconcileError> {
        tracing::warn!(%reason, "rollback refused by the apiserver");
        let message = format!(
            "rollback from revision {} to revision {} was refused: {reason}",
            restore.from, restore.to
        );
        if let Some(mut current) = current {
            current.rollback_denied = Some(reason);
            self.revisions.update(&current).await?;
        }
        if restore.manual {
            clear_annotation(self.api, &self.object.name_any(), ROLLBACK_TO_ANNOTATION).await?;
        }
        publish(
            self.ctx,
            self.object,
            EventType::Warning,
            "RollbackFailed",
            &message,
            "Rollback",
        )
        .await;
        Ok(())
    }
}
