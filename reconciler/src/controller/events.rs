//! Events on managed objects, and the annotations the reconciler clears.

use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::runtime::events::{Event, EventType};
use serde_json::json;

use super::{Context, ReconcileError, api_err};

/// Publishes an Event about `object`; a failure is logged, never fatal.
pub async fn publish(
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

pub async fn clear_annotation(
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
