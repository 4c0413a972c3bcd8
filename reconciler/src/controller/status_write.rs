//! tollgate's status fields on the object, written by server-side apply.

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DynamicObject;
use serde_json::{Value, json};

use super::{Context, FIELD_MANAGER, ReconcileError, api_err};
use crate::status;

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
