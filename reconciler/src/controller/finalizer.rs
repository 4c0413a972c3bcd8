//! tollgate's finalizer: added to every managed object, removed once its revisions are deleted.

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DynamicObject;
use serde_json::json;

use super::revision_store::RevisionStore;
use super::{Context, FINALIZER, ReconcileError, api_err};

/// Adds tollgate's finalizer, so a delete waits until the revisions are gone.
pub async fn ensure_finalizer(
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
pub async fn finalize(
    object: &DynamicObject,
    ctx: &Context,
    api: &Api<DynamicObject>,
    uid: &str,
) -> Result<(), ReconcileError> {
    if !object.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let store = RevisionStore::new(
        &ctx.client,
        &ctx.revision_cache,
        object.namespace().as_deref(),
        uid,
    );
    let names: Vec<String> = store.list().await?.into_iter().map(|r| r.name).collect();
    store.delete(&names).await?;
    remove_finalizer(api, object).await?;
    ctx.revision_cache.forget(uid);
    ctx.applied_statuses.forget(uid);
    Ok(())
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
