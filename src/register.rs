//! Self-registration (`serve --register`): the webhook configurations and CRD conversion stanzas
//! that `tollgate manifests` renders, applied with server-side apply under the field manager
//! `tollgate`, and kept in step with the policy set and the CA.
//!
//! Every replica applies the same content under the same field manager, so replicas that share a
//! CA converge instead of fighting. A CRD whose kind lost its conversion rules is released: an
//! apply without the stanza makes the apiserver drop the fields tollgate owned there.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};
use tollgate_engine::Store;

use crate::manifests::{self, ManifestError, Options, Target};

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
}

pub struct Registrar {
    client: kube::Client,
    config: RegisterConfig,
    /// CRDs whose conversion stanza tollgate owns.
    managed_crds: BTreeSet<String>,
    /// The documents last applied successfully, and when.
    applied: Option<(Vec<Value>, Instant)>,
}

fn resource(api_version: &str, kind: &str) -> ApiResource {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let plural = match kind {
        "CustomResourceDefinition" => "customresourcedefinitions",
        "ValidatingWebhookConfiguration" => "validatingwebhookconfigurations",
        "MutatingWebhookConfiguration" => "mutatingwebhookconfigurations",
        other => return ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, other)),
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
        })
    }

    /// The documents for this policy set and CA bundle (PEM), exactly as `tollgate manifests
    /// --url/--service` renders them.
    pub fn desired(&self, store: &Store, ca_pem: &str) -> Result<Vec<Value>, ManifestError> {
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
        };
        manifests::registration(store, &options)
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
        // Webhook configurations first: a CRD not installed yet must not hold them back.
        let (crd_docs, webhook_docs): (Vec<&Value>, Vec<&Value>) = desired
            .iter()
            .partition(|doc| doc["kind"] == "CustomResourceDefinition");
        for doc in webhook_docs {
            self.apply(doc, &params).await?;
        }
        for doc in crd_docs {
            let (_, name) = identity(doc);
            if !self.crd_exists(&name).await? {
                // Applying would try to create a CRD from the stanza alone.
                tracing::warn!(crd = %name, "CRD not installed; its conversion stanza is applied once it exists");
                complete = false;
                continue;
            }
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

fn identity(doc: &Value) -> (String, String) {
    (
        doc["kind"].as_str().unwrap_or_default().to_string(),
        doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}
