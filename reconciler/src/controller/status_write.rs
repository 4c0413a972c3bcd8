//! tollgate's status fields on the object, written by server-side apply.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DynamicObject;
use serde_json::{Value, json};

use super::{Context, FIELD_MANAGER, ReconcileError, api_err};
use crate::status;

/// How long a status this reconciler applied is taken as written even where the cache does not
/// show it yet: far longer than a watch takes to deliver it, short enough that someone else
/// overwriting tollgate's fields is corrected soon.
const APPLIED_TTL: Duration = Duration::from_secs(30);

/// The status last applied per object (uid). The controller's cache lags its own writes, and a
/// reconcile woken by the event of one write would otherwise apply the same status again: a
/// first sync applied nearly twice what it needed.
/// An entry counts only in the leadership term that wrote it: another leader may have written
/// since.
#[derive(Default)]
pub struct AppliedStatuses(Mutex<Ledger>);

#[derive(Default)]
struct Ledger {
    by_uid: HashMap<String, Applied>,
    /// When entries past their time were last dropped (at most once per `APPLIED_TTL`, so a
    /// sync of thousands of objects does not scan them all on every write).
    pruned: Option<Instant>,
}

struct Applied {
    status: status::DesiredStatus,
    at: Instant,
    term: u64,
}

impl AppliedStatuses {
    /// Whether `desired` is what was applied to `uid` moments ago, in leadership term `term`.
    pub fn just_applied(&self, uid: &str, desired: &status::DesiredStatus, term: u64) -> bool {
        let applied = self.0.lock().unwrap_or_else(|p| p.into_inner());
        applied.by_uid.get(uid).is_some_and(|last| {
            last.status == *desired && last.term == term && last.at.elapsed() < APPLIED_TTL
        })
    }

    pub fn record(&self, uid: &str, desired: &status::DesiredStatus, term: u64) {
        let mut applied = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Entries past their time say nothing: drop them now and then as the map is written.
        if applied.pruned.is_none_or(|at| at.elapsed() > APPLIED_TTL) {
            applied
                .by_uid
                .retain(|_, last| last.at.elapsed() < APPLIED_TTL);
            applied.pruned = Some(Instant::now());
        }
        let entry = Applied {
            status: desired.clone(),
            at: Instant::now(),
            term,
        };
        applied.by_uid.insert(uid.to_string(), entry);
    }

    pub fn forget(&self, uid: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_uid
            .remove(uid);
    }
}

/// Server-side apply of tollgate's status fields; skipped when nothing would change.
pub async fn write_status(
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
    let uid = object.uid().unwrap_or_default();
    let term = ctx.leadership.epoch();
    if unchanged || ctx.applied_statuses.just_applied(&uid, desired, term) {
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
    ctx.applied_statuses.record(&uid, desired, term);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{DesiredStatus, Phase};

    fn desired(phase: Phase) -> DesiredStatus {
        DesiredStatus {
            observed_generation: 1,
            phase,
            current_revision: Some(1),
            last_healthy_revision: None,
            conditions: Vec::new(),
        }
    }

    #[test]
    fn the_same_status_is_not_applied_twice_but_a_new_one_is() {
        let applied = AppliedStatuses::default();
        assert!(!applied.just_applied("u", &desired(Phase::Progressing), 1));
        applied.record("u", &desired(Phase::Progressing), 1);
        assert!(applied.just_applied("u", &desired(Phase::Progressing), 1));
        assert!(!applied.just_applied("u", &desired(Phase::Ready), 1));
        assert!(!applied.just_applied("other", &desired(Phase::Progressing), 1));
        // A later term of leadership: another leader may have written in between.
        assert!(!applied.just_applied("u", &desired(Phase::Progressing), 2));
        applied.forget("u");
        assert!(!applied.just_applied("u", &desired(Phase::Progressing), 1));
    }
}
