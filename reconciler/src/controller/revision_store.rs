//! The object's revisions as ControllerRevisions: read, written and deleted through the apiserver.

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::{ReconcileError, api_err};
use crate::kinds::ManagedKind;
use crate::revisions::{OWNER_UID_LABEL, RevisionRecord};

/// Where one object's revisions live.
pub struct RevisionStore {
    api: Api<ControllerRevision>,
}

impl RevisionStore {
    pub fn new(client: &Client, namespace: Option<&str>) -> Self {
        let api = match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            // Cluster-scoped resources keep their revisions in the reconciler's own namespace.
            None => Api::default_namespaced(client.clone()),
        };
        Self { api }
    }

    /// The object's revisions, oldest first.
    pub async fn list(&self, uid: &str) -> Result<Vec<RevisionRecord>, ReconcileError> {
        let list = self
            .api
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

    pub async fn create(
        &self,
        record: &RevisionRecord,
        namespace: Option<&str>,
        owner: OwnerReference,
    ) -> Result<(), ReconcileError> {
        let namespace = namespace.unwrap_or_else(|| self.api.namespace().unwrap_or("default"));
        let revision = record.to_controller_revision(namespace, owner);
        match self.api.create(&PostParams::default(), &revision).await {
            Ok(_) => Ok(()),
            // Same name means same spec hash: a revision left over (or raced): take it over.
            Err(kube::Error::Api(s)) if s.code == 409 => self.update(record).await,
            Err(e) => Err(api_err(format!("create revision {}", record.name))(e)),
        }
    }

    pub async fn update(&self, record: &RevisionRecord) -> Result<(), ReconcileError> {
        let patch = json!({
            "metadata": {"annotations": record.bookkeeping()},
            "revision": record.number,
        });
        self.api
            .patch(&record.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api_err(format!("update revision {}", record.name)))?;
        Ok(())
    }

    /// Deletes the named revisions; one already gone is not an error.
    pub async fn delete(&self, names: &[String]) -> Result<(), ReconcileError> {
        for name in names {
            match self.api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(api_err(format!("delete revision {name}"))(e)),
            }
        }
        Ok(())
    }
}

/// The object as the controlling owner of its revisions (garbage collection removes them).
pub fn owner_reference(object: &DynamicObject, kind: &ManagedKind, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: kind.api_version(),
        kind: kind.kind.clone(),
        name: object.name_any(),
        uid: uid.to_string(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}
