//! Registration manifests rendered from the policy files: the webhook configurations
//! (`webhooks`), the CRD conversion stanzas (`crd`) and, for an in-cluster target, everything
//! needed to run tollgate there (`install`), printed as YAML (`output`).

mod cert_manager;
mod crd;
pub mod in_tree;
mod install;
mod output;
mod webhooks;

pub use install::helm_values;
pub use output::to_yaml;

use std::path::PathBuf;

use base64::Engine;
pub use cert_manager::{CertManager, INJECT_ANNOTATION};
use serde_json::{Value, json};
use tollgate_engine::Store;

pub const MANAGED_BY: &str = "tollgate";

/// The admission kinds (and their resources) tollgate registers apart from CRDs, in the order
/// they are applied: policies before their bindings, both before the webhook configurations
/// that may shrink because of them. The admission policies only with `--in-tree`.
pub const REGISTERED_KINDS: &[(&str, &str)] = &[
    ("ValidatingAdmissionPolicy", "validatingadmissionpolicies"),
    (
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
    ),
    ("MutatingAdmissionPolicy", "mutatingadmissionpolicies"),
    (
        "MutatingAdmissionPolicyBinding",
        "mutatingadmissionpolicybindings",
    ),
    (
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
    ),
    (
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
    ),
];
const APP_LABEL: &str = "app.kubernetes.io/name";

/// Where the apiserver sends requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `https://HOST:PORT` — local development, tests against a local apiserver.
    Url(String),
    /// A Service in the cluster.
    Service { namespace: String, name: String },
}

impl Target {
    pub fn parse_service(text: &str) -> Result<Self, ManifestError> {
        match text.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self::Service {
                    namespace: ns.into(),
                    name: name.into(),
                })
            }
            _ => Err(ManifestError::Usage(format!(
                "--service {text:?} must be NAMESPACE/NAME"
            ))),
        }
    }

    pub fn parse_url(text: &str) -> Result<Self, ManifestError> {
        let rest = text.strip_prefix("https://").ok_or_else(|| {
            ManifestError::Usage(format!("--url {text:?} must start with https://"))
        })?;
        if rest.is_empty() || rest.contains('?') || rest.contains('#') {
            return Err(ManifestError::Usage(format!(
                "--url {text:?} must be https://HOST[:PORT]"
            )));
        }
        Ok(Self::Url(text.trim_end_matches('/').to_string()))
    }

    pub(crate) fn client_config(&self, path: &str, ca_bundle: Option<&str>) -> Value {
        let mut config = match self {
            Self::Url(base) => json!({"url": format!("{base}{path}")}),
            Self::Service { namespace, name } => {
                json!({"service": {"namespace": namespace, "name": name, "path": path, "port": 443}})
            }
        };
        if let Some(ca) = ca_bundle {
            config["caBundle"] = json!(ca);
        }
        config
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub target: Target,
    /// Base64 of the CA PEM; `None` renders no caBundle (to be added at install time).
    pub ca_bundle: Option<String>,
    /// tollgate's own namespace, never sent to the webhooks (nor is kube-system).
    pub namespace: String,
    pub timeout_seconds: u8,
    /// Full CRD documents to complete with the conversion stanza.
    pub crd_files: Vec<PathBuf>,
    pub image: String,
    pub replicas: u16,
    /// The policy files, embedded as a ConfigMap for an in-cluster target.
    pub policies_dir: PathBuf,
    /// CA injection by cert-manager instead of an inline `caBundle` (Service targets only).
    pub cert_manager: Option<CertManager>,
    /// Render the continuous audit (its Deployment, RBAC and the OpenReports CRDs), passing
    /// this `--interval`.
    pub audit_interval: Option<String>,
    /// Compile the policies to ValidatingAdmissionPolicies and MutatingAdmissionPolicies; the
    /// webhook configurations keep only what does not compile.
    pub in_tree: bool,
    /// Whose restores the in-tree policies judge on the state they return to.
    pub restorer: Option<String>,
    /// How the in-cluster webhook gets its certificates and whether it registers itself.
    pub webhook: WebhookInstall,
}

/// The in-cluster webhook's own settings (`--service` targets).
#[derive(Debug, Clone, Default)]
pub struct WebhookInstall {
    /// The webhook registers itself (`serve --register`), so the webhook configurations,
    /// conversion stanzas and admission policies are not rendered; the RBAC to apply them is.
    /// Without `tls_secret` or cert-manager, the replicas also make and share their own CA and
    /// serving certificate through the Secret `NAME-tls` (`serve --cert-secret`).
    pub register: bool,
    /// An existing `kubernetes.io/tls` Secret (with `ca.crt`) to serve with, instead of `NAME-tls`.
    pub tls_secret: Option<String>,
    /// `serve --otlp-endpoint`.
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A flag value is not usable.
    #[error("{0}")]
    Usage(String),
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A CRD file does not fit the conversion rules.
    #[error("{}: {message}", path.display())]
    Crd { path: PathBuf, message: String },
    #[error("cannot write YAML: {0}")]
    Emit(String),
}

/// The username of the reconciler rendered for the Service `namespace/name`.
pub fn reconciler_username(namespace: &str, name: &str) -> String {
    install::restorer(namespace, name)
}

pub fn ca_bundle_from(ca_pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes())
}

pub fn render(store: &Store, options: &Options) -> Result<Vec<Value>, ManifestError> {
    let mut docs = Vec::new();
    match &options.target {
        Target::Service { namespace, name } => {
            docs.extend(install::in_cluster(store, options, namespace, name)?);
        }
        Target::Url(_) if options.webhook.register => {
            return Err(ManifestError::Usage(
                "--register renders an in-cluster install; it needs --service".into(),
            ));
        }
        Target::Url(_) => {}
    }
    // A webhook that registers itself applies these documents at run time.
    if !options.webhook.register {
        docs.extend(registration(store, options)?);
    }
    match (&options.cert_manager, &options.target) {
        (None, _) => {}
        (Some(_), _) if options.webhook.tls_secret.is_some() => {
            return Err(ManifestError::Usage(
                "--cert-manager and --tls-secret are two sources of one certificate; pick one"
                    .into(),
            ));
        }
        (Some(cert_manager), Target::Service { namespace, name }) => {
            if options.ca_bundle.is_some() {
                return Err(ManifestError::Usage(
                    "with cert-manager the caBundle is injected; render without one".into(),
                ));
            }
            cert_manager::annotate(&mut docs, namespace, name);
            docs.extend(cert_manager::documents(cert_manager, namespace, name));
        }
        (Some(_), Target::Url(_)) => {
            return Err(ManifestError::Usage(
                "--cert-manager needs --service: cert-manager issues for an in-cluster Service"
                    .into(),
            ));
        }
    }
    Ok(docs)
}

/// What registers tollgate with the apiserver: the CRD conversion stanzas and both webhook
/// configurations. `tollgate manifests` prints these; `serve --register` applies exactly them.
/// With `in_tree`, the admission policies come first and the webhook configurations list only
/// the policies (and parts) that stay with the webhook; one with nothing left is not rendered.
pub fn registration(store: &Store, options: &Options) -> Result<Vec<Value>, ManifestError> {
    let mut docs = crd::conversion_documents(store, options)?;
    if !options.in_tree {
        for flavour in [webhooks::Flavour::Validating, webhooks::Flavour::Mutating] {
            docs.extend(webhooks::configuration(store, options, flavour, |_| true));
        }
        return Ok(docs);
    }
    let compiled = in_tree::compile_all(store, options);
    docs.extend(in_tree::documents(store, &compiled, options));
    let stays = |flavour: webhooks::Flavour, idx: usize| {
        compiled.get(idx).is_none_or(|c| match flavour {
            webhooks::Flavour::Validating => c.validating.stays_with_webhook(),
            webhooks::Flavour::Mutating => c.mutating.stays_with_webhook(),
        })
    };
    for flavour in [webhooks::Flavour::Validating, webhooks::Flavour::Mutating] {
        docs.extend(webhooks::configuration(store, options, flavour, |idx| {
            stays(flavour, idx)
        }));
    }
    Ok(docs)
}

fn labels() -> Value {
    json!({APP_LABEL: "tollgate", "app.kubernetes.io/managed-by": MANAGED_BY})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_strictly() {
        assert!(Target::parse_service("ns/name").is_ok());
        assert!(Target::parse_service("name").is_err());
        assert!(Target::parse_url("https://127.0.0.1:8443").is_ok());
        assert!(Target::parse_url("http://127.0.0.1:8443").is_err());
    }
}
