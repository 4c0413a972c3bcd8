//! What the audit lists, and how: one resource version per kind and version the policies judge,
//! read in pages (`limit` / `continue`), never the whole collection at once.

use std::collections::BTreeSet;

use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::{Client, Error};
use serde_json::Value;
use tollgate_engine::policy::{OperationName, Scope, Store};

/// One resource version to list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListedKind {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub resource: String,
    pub cluster_scoped: bool,
}

impl ListedKind {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn label(&self) -> String {
        format!("{}.{} {}", self.resource, self.group, self.version)
    }

    fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.clone(),
            version: self.version.clone(),
            api_version: self.api_version(),
            kind: self.kind.clone(),
            plural: self.resource.clone(),
        }
    }
}

/// The resource versions the policies judge on CREATE; with `one_namespace`, cluster-scoped
/// kinds are left out.
pub fn kinds(store: &Store, one_namespace: bool) -> Vec<ListedKind> {
    let kinds: BTreeSet<ListedKind> = store
        .policies()
        .iter()
        .map(|policy| &policy.matcher)
        .filter(|m| m.operations.contains(&OperationName::Create))
        .filter(|m| !(one_namespace && m.scope == Scope::Cluster))
        .flat_map(|m| {
            m.versions.iter().map(|version| ListedKind {
                group: m.group.clone(),
                version: version.clone(),
                kind: m.kind.clone(),
                resource: m.resource.clone(),
                cluster_scoped: m.scope == Scope::Cluster,
            })
        })
        .collect();
    kinds.into_iter().collect()
}

pub enum ListError {
    /// The apiserver does not serve this resource version (its CRD is not installed).
    NotServed,
    /// No answer from the apiserver.
    Unreachable(String),
    /// An answer refusing the list (RBAC, a bad request).
    Refused(String),
}

/// The pages of one resource version's objects.
pub struct Pages {
    api: Api<DynamicObject>,
    page_size: u32,
    /// `None` before the first page; `Some("")` after the last.
    next: Option<String>,
}

impl Pages {
    pub fn new(client: Client, kind: &ListedKind, namespace: Option<&str>) -> Self {
        let resource = kind.api_resource();
        let api = match namespace {
            Some(ns) if !kind.cluster_scoped => Api::namespaced_with(client, ns, &resource),
            _ => Api::all_with(client, &resource),
        };
        Self {
            api,
            page_size: 500,
            next: None,
        }
    }

    pub fn with_page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// The next page's objects as JSON; `None` past the last.
    pub async fn next(&mut self) -> Result<Option<Vec<Value>>, ListError> {
        let mut params = ListParams::default().limit(self.page_size);
        match self.next.as_deref() {
            Some("") => return Ok(None),
            Some(token) => params = params.continue_token(token),
            None => {}
        }
        let list = self.api.list(&params).await.map_err(classify)?;
        self.next = Some(list.metadata.continue_.unwrap_or_default());
        let objects = list
            .items
            .into_iter()
            .filter_map(|object| serde_json::to_value(object).ok())
            .collect();
        Ok(Some(objects))
    }
}

fn classify(error: Error) -> ListError {
    match error {
        Error::Api(status) if status.code == 404 => ListError::NotServed,
        Error::Api(status) => ListError::Refused(status.message),
        other => ListError::Unreachable(other.to_string()),
    }
}
