//! One object's revisions as ControllerRevisions: read from the controller's cache when it can be
//! trusted (else from the apiserver), written and deleted through the apiserver.

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::revision_cache::RevisionCache;
use super::{ReconcileError, api_err};
use crate::kinds::ManagedKind;
use crate::revisions::{OWNER_UID_LABEL, RevisionRecord};

/// Where one object's revisions live.
pub struct RevisionStore<'a> {
    api: Api<ControllerRevision>,
    cache: &'a RevisionCache,
    /// The owning object's uid.
    uid: &'a str,
}

impl<'a> RevisionStore<'a> {
    pub fn new(
        client: &Client,
        cache: &'a RevisionCache,
        namespace: Option<&str>,
        uid: &'a str,
    ) -> Self {
        let api = match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            // Cluster-scoped resources keep their revisions in the reconciler's own namespace.
            None => Api::default_namespaced(client.clone()),
        };
        Self { api, cache, uid }
    }

    fn namespace(&self) -> &str {
        self.api.namespace().unwrap_or("default")
    }

    /// The object's revisions, oldest first.
    pub async fn list(&self) -> Result<Vec<RevisionRecord>, ReconcileError> {
        if let Some(records) = self.cache.revisions(self.namespace(), self.uid) {
            return Ok(records);
        }
        let list = self
            .api
            .list(&ListParams::default().labels(&format!("{OWNER_UID_LABEL}={}", self.uid)))
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

    fn written(&self, name: &str, revision: Option<&ControllerRevision>) {
        self.cache.expect(
            self.uid,
            self.namespace(),
            name,
            revision.and_then(|r| r.resource_version()),
        );
    }

    pub async fn create(
        &self,
        record: &RevisionRecord,
        owner: OwnerReference,
    ) -> Result<(), ReconcileError> {
        let revision = record.to_controller_revision(self.namespace(), owner);
        match self.api.create(&PostParams::default(), &revision).await {
            Ok(created) => {
                self.written(&record.name, Some(&created));
                Ok(())
            }
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
        let updated = self
            .api
            .patch(&record.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api_err(format!("update revision {}", record.name)))?;
        self.written(&record.name, Some(&updated));
        Ok(())
    }

    /// Deletes the named revisions; one already gone is not an error.
    pub async fn delete(&self, names: &[String]) -> Result<(), ReconcileError> {
        for name in names {
            match self.api.delete(name, &DeleteParams::default()).await {
                Ok(_) => self.written(name, None),
                Err(kube::Error::Api(s)) if s.code == 404 => self.written(name, None),
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
