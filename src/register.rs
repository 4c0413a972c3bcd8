//! Self-registration (`serve --register`): the webhook configurations and CRD conversion stanzas
//! that `tollgate manifests` renders, applied with server-side apply under the field manager
//! `tollgate`, and kept in step with the policy set and the CA.
//!
//! Every replica applies the same content under the same field manager, so replicas that share a
//! CA converge instead of fighting. A CRD whose kind lost its conversion rules is released: an
//! apply without the stanza makes the apiserver drop the fields tollgate owned there.
//!
//! With `--in-tree`, the admission policies and bindings `manifests --in-tree` renders are
//! applied too, and the webhook configurations keep only what does not compile. Whatever
//! tollgate registered before and no longer wants (an admission policy of a policy that
//! changed or went, a webhook configuration with nothing left in it) is deleted once what
//! replaces it is in place.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};
use tollgate_engine::Store;

use crate::manifests::{self, ManifestError, Options, REGISTERED_KINDS, Target};

pub const FIELD_MANAGER: &str = "tollgate";

/// Applied again even when nothing changed, to undo hand edits.
const RESYNC: Duration = Duration::from_secs(300);

/// Where the apiserver should call tollgate, as `tollgate manifests` takes it.
#[derive(Debug, Clone)]
pub struct RegisterConfig {
    pub target: Target,
    /// tollgate's own namespace, excluded from the webhooks.
    pub namespace: String,
    pub timeout_seconds: u8,
    /// Enforce in-tree where policies compile (`manifests --in-tree`).
    pub in_tree: bool,
    /// Whose restores the in-tree policies judge on the state they return to.
    pub restorer: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("no usable kube config (KUBECONFIG, ~/.kube/config or in-cluster): {0}")]
    Config(#[source] kube::Error),
    #[error(transparent)]
    Render(#[from] ManifestError),
    #[error("cannot apply {kind} {name}: {source}")]
    Apply {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot list CustomResourceDefinitions: {0}")]
    List(#[source] kube::Error),
    #[error("cannot remove {kind} {name}: {source}")]
    Remove {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

pub struct Registrar {
    client: kube::Client,
    config: RegisterConfig,
    /// CRDs whose conversion stanza tollgate owns.
    managed_crds: BTreeSet<String>,
    /// The documents last applied successfully, and when.
    applied: Option<(Vec<Value>, Instant)>,
    /// The documents last rendered, by the policy set's digest and the CA: asked every reload
    /// tick, and compiling policies in-tree is not free.
    rendered: std::sync::Mutex<Option<Rendered>>,
}

/// Documents rendered for (policy-set digest, CA PEM).
type Rendered = ((String, String), Vec<Value>);

/// Deletes the admission objects that carry tollgate's `managed-by` label and are not `wanted`
/// (kind, name), policies' bindings before policies; returns how many it deleted. A kind the
/// apiserver does not serve holds nothing to delete.
async fn remove_registered(
    client: &kube::Client,
    wanted: &BTreeSet<(String, String)>,
) -> Result<usize, RegisterError> {
    let selector = ListParams::default().labels(&format!(
        "app.kubernetes.io/managed-by={}",
        manifests::MANAGED_BY
    ));
    let mut removed = 0;
    for &(kind, _) in REGISTERED_KINDS.iter().rev() {
        let api: Api<DynamicObject> = Api::all_with(
            client.clone(),
            &resource("admissionregistration.k8s.io/v1", kind),
        );
        let found = match api.list(&selector).await {
            Ok(found) => found,
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(source) => {
                return Err(RegisterError::Remove {
                    kind: kind.to_string(),
                    name: "(list)".into(),
                    source,
                });
            }
        };
        for object in found.items {
            let name = object.metadata.name.clone().unwrap_or_default();
            if wanted.contains(&(kind.to_string(), name.clone())) {
                continue;
            }
            match api.delete(&name, &Default::default()).await {
                Ok(_) => {
                    removed += 1;
                    tracing::info!(kind = %kind, name = %name, "removed a registration no longer needed");
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(source) => {
                    return Err(RegisterError::Remove {
                        kind: kind.to_string(),
                        name,
                        source,
                    });
                }
            }
        }
    }
    Ok(removed)
}

fn resource(api_version: &str, kind: &str) -> ApiResource {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let registered = REGISTERED_KINDS.iter().find(|(known, _)| *known == kind);
    let plural = match (kind, registered) {
        ("CustomResourceDefinition", _) => "customresourcedefinitions",
        (_, Some(&(_, plural))) => plural,
        (other, None) => {
            return ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, other));
        }
    };
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn crd_api(client: &kube::Client) -> Api<DynamicObject> {
    Api::all_with(
        client.clone(),
        &resource("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
    )
}

impl Registrar {
    /// Connects with the inferred kube config and finds the CRDs tollgate registered before
    /// (by their managed fields), so a restart still releases what is no longer wanted.
    pub async fn connect(config: RegisterConfig) -> Result<Self, RegisterError> {
        let client = kube::Client::try_default()
            .await
            .map_err(RegisterError::Config)?;
        Self::with_client(client, config).await
    }

    pub async fn with_client(
        client: kube::Client,
        config: RegisterConfig,
    ) -> Result<Self, RegisterError> {
        let crds = crd_api(&client)
            .list(&ListParams::default())
            .await
            .map_err(RegisterError::List)?;
        let managed_crds = crds
            .items
            .iter()
            .filter(|crd| {
                crd.metadata.managed_fields.iter().flatten().any(|entry| {
                    entry.manager.as_deref() == Some(FIELD_MANAGER)
                        && entry.operation.as_deref() == Some("Apply")
                })
            })
            .filter_map(|crd| crd.metadata.name.clone())
            .collect();
        Ok(Self {
            client,
            config,
            managed_crds,
            applied: None,
            rendered: std::sync::Mutex::new(None),
        })
    }

    /// The documents for this policy set and CA bundle (PEM), exactly as `tollgate manifests
    /// --url/--service` renders them.
    pub fn desired(&self, store: &Store, ca_pem: &str) -> Result<Vec<Value>, ManifestError> {
        let key = (store.digest().to_string(), ca_pem.to_string());
        if let Ok(rendered) = self.rendered.lock()
            && let Some((at, docs)) = rendered.as_ref()
            && *at == key
        {
            return Ok(docs.clone());
        }
        let options = Options {
            target: self.config.target.clone(),
            ca_bundle: Some(manifests::ca_bundle_from(ca_pem)),
            namespace: self.config.namespace.clone(),
            timeout_seconds: self.config.timeout_seconds,
            crd_files: Vec::new(),
            image: String::new(),
            replicas: 0,
            policies_dir: PathBuf::new(),
            cert_manager: None,
            audit_interval: None,
            in_tree: self.config.in_tree,
            restorer: self.config.restorer.clone(),
            webhook: manifests::WebhookInstall::default(),
        };
        let docs = manifests::registration(store, &options)?;
        if let Ok(mut rendered) = self.rendered.lock() {
            *rendered = Some((key, docs.clone()));
        }
        Ok(docs)
    }

    /// Whether `ca_pem` is what the apiserver was last given as the caBundle.
    pub fn published(&self, store: &Store, ca_pem: &str) -> bool {
        match (&self.applied, self.desired(store, ca_pem)) {
            (Some((docs, _)), Ok(desired)) => *docs == desired,
            _ => false,
        }
    }

    /// Applies what changed (or everything, every few minutes). Returns whether it applied.
    pub async fn sync(&mut self, store: &Store, ca_pem: &str) -> Result<bool, RegisterError> {
        let desired = self.desired(store, ca_pem)?;
        if let Some((docs, at)) = &self.applied
            && *docs == desired
            && at.elapsed() < RESYNC
        {
            return Ok(false);
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut crds = BTreeSet::new();
        let mut complete = true;
        // Admission registration first: a CRD not installed yet must not hold it back.
        let (crd_docs, mut registered): (Vec<&Value>, Vec<&Value>) = desired
            .iter()
            .partition(|doc| doc["kind"] == "CustomResourceDefinition");
        registered.sort_by_key(|doc| {
            REGISTERED_KINDS
                .iter()
                .position(|(kind, _)| doc["kind"] == *kind)
                .unwrap_or(REGISTERED_KINDS.len())
        });
        for doc in &registered {
            self.apply(doc, &params).await?;
        }
        self.remove_unwanted(&registered).await?;
        for doc in crd_docs {
            let (_, name) = identity(doc);
            if !self.crd_exists(&name).await? {
                // Applying would try to create a CRD from the stanza alone.
                tracing::warn!(crd = %name, "CRD not installed; its conversion stanza is applied once it exists");
                complete = false;
                continue;
            }
            self.take_over_conversion(&name, doc).await?;
            self.apply(doc, &params).await?;
            crds.insert(name);
        }
        for gone in self
            .managed_crds
            .difference(&crds)
            .cloned()
            .collect::<Vec<_>>()
        {
            if !self.crd_exists(&gone).await? {
                continue;
            }
            let release = json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": gone},
            });
            self.apply(&release, &params).await?;
            tracing::info!(crd = %gone, "released the conversion stanza of a kind without conversion rules");
        }
        self.managed_crds = crds;
        // Incomplete: look again at the next tick.
        self.applied = complete.then(|| (desired, Instant::now()));
        Ok(true)
    }

    /// Deletes every admission object tollgate registered (`tollgate unregister`), then keeps
    /// deleting what reappears until nothing has for `settle`: a replica still shutting down may
    /// apply once more. Returns how many objects were deleted.
    pub async fn unregister(
        client: kube::Client,
        settle: Duration,
    ) -> Result<usize, RegisterError> {
        let mut removed = 0;
        let mut quiet_since = Instant::now();
        loop {
            let gone = remove_registered(&client, &BTreeSet::new()).await?;
            if gone > 0 {
                removed += gone;
                quiet_since = Instant::now();
            }
            if quiet_since.elapsed() >= settle {
                return Ok(removed);
            }
            tokio::time::sleep(Duration::from_secs(1).min(settle)).await;
        }
    }

    /// Deletes what tollgate registered (its `managed-by` label) and `desired` no longer holds.
    /// A kind the apiserver does not serve holds nothing to delete.
    async fn remove_unwanted(&self, desired: &[&Value]) -> Result<(), RegisterError> {
        let wanted: BTreeSet<(String, String)> = desired.iter().map(|doc| identity(doc)).collect();
        remove_registered(&self.client, &wanted).await.map(|_| ())
    }

    async fn crd_exists(&self, name: &str) -> Result<bool, RegisterError> {
        crd_api(&self.client)
            .get_opt(name)
            .await
            .map(|found| found.is_some())
            .map_err(|source| RegisterError::Apply {
                kind: "CustomResourceDefinition".into(),
                name: name.to_string(),
                source,
            })
    }

    /// Makes the CRD's conversion stanza exactly the one desired when another manager wrote a
    /// different one (a `service` from `kubectl apply`, a stale caBundle): a server-side apply
    /// cannot drop fields another manager owns, and a `clientConfig` holding both a `service`
    /// and a `url` is refused. The whole stanza is replaced, guarded by the resourceVersion it
    /// was read at; the apply that follows then owns it.
    async fn take_over_conversion(&self, name: &str, doc: &Value) -> Result<(), RegisterError> {
        let failed = |source| RegisterError::Apply {
            kind: "CustomResourceDefinition".into(),
            name: name.to_string(),
            source,
        };
        let api = crd_api(&self.client);
        let Some(live) = api.get_opt(name).await.map_err(failed)? else {
            return Ok(());
        };
        let desired = &doc["spec"]["conversion"];
        let current = live.data["spec"].get("conversion");
        if current.is_none_or(|current| conversion_matches(current, desired)) {
            return Ok(());
        }
        let resource_version = live.metadata.resource_version.clone().unwrap_or_default();
        let patch: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
            {"op": "replace", "path": "/spec/conversion", "value": desired},
        ]))
        .map_err(|e| RegisterError::Render(ManifestError::Usage(e.to_string())))?;
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        api.patch(name, &params, &Patch::Json::<()>(patch))
            .await
            .map_err(failed)?;
        tracing::info!(crd = %name, "took over a conversion stanza another manager wrote");
        Ok(())
    }

    async fn apply(&self, doc: &Value, params: &PatchParams) -> Result<(), RegisterError> {
        let (kind, name) = identity(doc);
        let api_version = doc["apiVersion"].as_str().unwrap_or_default();
        let api: Api<DynamicObject> =
            Api::all_with(self.client.clone(), &resource(api_version, &kind));
        api.patch(&name, params, &Patch::Apply(doc))
            .await
            .map(|_| ())
            .map_err(|source| RegisterError::Apply { kind, name, source })
    }
}

/// Whether the live stanza says what the desired one says: everything desired is there (the
/// apiserver may have added defaults, such as a service's port), and the client config names
/// nothing else (no `service` beside a `url`, no caBundle where none is wanted).
fn conversion_matches(live: &Value, desired: &Value) -> bool {
    let config_keys = |stanza: &Value| {
        stanza["webhook"]["clientConfig"]
            .as_object()
            .map(|config| config.keys().cloned().collect::<BTreeSet<_>>())
    };
    contains(live, desired) && config_keys(live) == config_keys(desired)
}

/// `outer` holds everything `inner` holds (objects member by member, other values equal).
fn contains(outer: &Value, inner: &Value) -> bool {
    match (outer, inner) {
        (Value::Object(outer), Value::Object(inner)) => inner
            .iter()
            .all(|(key, value)| outer.get(key).is_some_and(|found| contains(found, value))),
        _ => outer == inner,
    }
}

fn identity(doc: &Value) -> (String, String) {
    (
        doc["kind"].as_str().unwrap_or_default().to_string(),
        doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stanza_matches_with_the_apiservers_defaults_but_not_with_another_managers_fields() {
        let desired = json!({"strategy": "Webhook", "webhook": {
            "clientConfig": {"service": {"namespace": "t", "name": "t", "path": "/convert"}, "caBundle": "Q0E="},
            "conversionReviewVersions": ["v1"]}});
        let mut defaulted = desired.clone();
        defaulted["webhook"]["clientConfig"]["service"]["port"] = json!(443);
        assert!(conversion_matches(&defaulted, &desired));

        let mut with_url = defaulted.clone();
        with_url["webhook"]["clientConfig"]["url"] = json!("https://127.0.0.1:8443/convert");
        assert!(!conversion_matches(&with_url, &desired));
        let mut stale = defaulted.clone();
        stale["webhook"]["clientConfig"]["caBundle"] = json!("T0xE");
        assert!(!conversion_matches(&stale, &desired));
        assert!(!conversion_matches(&json!({"strategy": "None"}), &desired));
    }
}
