//! Registration manifests rendered from the policy files: the webhook configurations, the CRD
//! conversion stanza and, for an in-cluster target, everything needed to run tollgate there.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::policy::format::Scope;
use crate::policy::yaml;
use crate::policy::{CompiledPolicy, Store};

const MANAGED_BY: &str = "tollgate";
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

    fn client_config(&self, path: &str, ca_bundle: Option<&str>) -> Value {
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

pub fn ca_bundle_from(ca_pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes())
}

pub fn render(store: &Store, options: &Options) -> Result<Vec<Value>, ManifestError> {
    let mut docs = Vec::new();
    if let Target::Service { namespace, name } = &options.target {
        docs.extend(in_cluster(store, options, namespace, name)?);
    }
    docs.extend(conversion_documents(store, options)?);
    docs.push(webhook_configuration(
        store,
        options,
        "Validating",
        "/validate",
        "validate",
    ));
    docs.push(webhook_configuration(
        store, options, "Mutating", "/mutate", "mutate",
    ));
    Ok(docs)
}

fn labels() -> Value {
    json!({APP_LABEL: "tollgate", "app.kubernetes.io/managed-by": MANAGED_BY})
}

fn webhook_configuration(
    store: &Store,
    options: &Options,
    flavour: &str,
    path: &str,
    verb: &str,
) -> Value {
    let rules: Vec<Value> = store
        .policies()
        .iter()
        .map(|p| {
            json!({
                "apiGroups": [p.matcher.group],
                "apiVersions": p.matcher.versions,
                "resources": [p.matcher.resource],
                "operations": p.matcher.operations.iter().map(|o| o.as_str()).collect::<BTreeSet<_>>(),
                "scope": match p.matcher.scope { Scope::Namespaced => "Namespaced", Scope::Cluster => "Cluster" },
            })
        })
        .collect();
    let excluded: BTreeSet<&str> = [options.namespace.as_str(), "kube-system"]
        .into_iter()
        .collect();
    let mut webhook = json!({
        "name": format!("{verb}.tollgate.dev"),
        "clientConfig": options.target.client_config(path, options.ca_bundle.as_deref()),
        "rules": rules,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "matchPolicy": "Equivalent",
        "failurePolicy": "Fail",
        "timeoutSeconds": options.timeout_seconds,
        // tollgate must never judge its own namespace (it could not start again) nor kube-system.
        "namespaceSelector": {"matchExpressions": [{
            "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded
        }]},
    });
    if flavour == "Mutating" {
        webhook["reinvocationPolicy"] = json!("Never");
    }
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": format!("{flavour}WebhookConfiguration"),
        "metadata": {"name": "tollgate", "labels": labels()},
        "webhooks": [webhook],
    })
}

fn conversion_stanza(options: &Options) -> Value {
    json!({
        "strategy": "Webhook",
        "webhook": {
            "conversionReviewVersions": ["v1"],
            "clientConfig": options.target.client_config("/convert", options.ca_bundle.as_deref()),
        }
    })
}

/// Each kind with conversion rules gets its CRD completed (when its file was given) or a partial
/// CRD holding only `spec.conversion`, to apply as a merge patch.
fn conversion_documents(store: &Store, options: &Options) -> Result<Vec<Value>, ManifestError> {
    let mut crds = Vec::new();
    for file in &options.crd_files {
        let text = std::fs::read_to_string(file).map_err(|source| ManifestError::Io {
            path: file.clone(),
            source,
        })?;
        let docs = yaml::parse_documents(&text).map_err(|e| ManifestError::Crd {
            path: file.clone(),
            message: format!("line {}: {}", e.line, e.message),
        })?;
        for doc in docs {
            crds.push((file.clone(), doc.value));
        }
    }
    let mut out = Vec::new();
    let mut completed = BTreeSet::new();
    for (file, mut crd) in crds {
        let group = crd
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let kind = crd
            .pointer("/spec/names/kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if let Some(rules) = store.conversion_for(&group, &kind) {
            check_crd_versions(&file, &crd, rules)?;
            if let Some(spec) = crd.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("conversion".into(), conversion_stanza(options));
            }
            completed.insert((group, kind));
        }
        out.push(crd);
    }
    for policy in store.policies() {
        let key = (policy.matcher.group.clone(), policy.matcher.kind.clone());
        if policy.conversion.is_some() && !completed.contains(&key) {
            out.push(partial_crd(policy, options));
        }
    }
    Ok(out)
}

fn partial_crd(policy: &CompiledPolicy, options: &Options) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{}.{}", policy.matcher.resource, policy.matcher.group)},
        "spec": {"conversion": conversion_stanza(options)},
    })
}

/// The CRD must serve only versions the rules know, and store the hub.
fn check_crd_versions(
    file: &Path,
    crd: &Value,
    rules: &crate::conversion::KindConversion,
) -> Result<(), ManifestError> {
    let known = rules.versions();
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for version in &versions {
        let name = version
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let served = version
            .get("served")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let storage = version
            .get("storage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if served && !known.contains(&name) {
            return Err(ManifestError::Crd {
                path: file.to_path_buf(),
                message: format!(
                    "serves version {name:?}, which the conversion rules do not declare ({})",
                    known.join(", ")
                ),
            });
        }
        if storage && name != rules.hub {
            return Err(ManifestError::Crd {
                path: file.to_path_buf(),
                message: format!(
                    "stores version {name:?}, but the conversion hub is {:?}",
                    rules.hub
                ),
            });
        }
    }
    Ok(())
}

fn in_cluster(
    store: &Store,
    options: &Options,
    namespace: &str,
    name: &str,
) -> Result<Vec<Value>, ManifestError> {
    let selector = json!({APP_LABEL: "tollgate"});
    let meta = |object_name: &str| json!({"name": object_name, "namespace": namespace, "labels": labels()});
    let mut policy_files = Map::new();
    let entries = crate::policy::loader::policy_files(&options.policies_dir)
        .map_err(|e| ManifestError::Usage(e.to_string()))?;
    for path in entries {
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Io {
            path: path.clone(),
            source,
        })?;
        let key = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("policy.yaml")
            .to_string();
        policy_files.insert(key, Value::String(text));
    }
    let status_rules: Vec<Value> = store
        .policies()
        .iter()
        .map(|p| {
            json!({"apiGroups": [p.matcher.group], "resources": [format!("{}/status", p.matcher.resource)], "verbs": ["get", "patch", "update"]})
        })
        .chain(store.policies().iter().map(|p| {
            json!({"apiGroups": [p.matcher.group], "resources": [p.matcher.resource], "verbs": ["get", "list", "watch", "patch", "update"]})
        }))
        .collect();
    Ok(vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels()}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(name), "automountServiceAccountToken": false}),
        // The webhook server needs no API access (its pods mount no token). This role is for the
        // reconciler: only the managed custom resources and their status.
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": format!("{name}-reconciler"), "labels": labels()}, "rules": status_rules}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": format!("{name}-reconciler"), "labels": labels()},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("{name}-reconciler")},
               "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(&format!("{name}-policies")), "data": policy_files}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": meta(name),
               "spec": {"selector": selector, "ports": [{"name": "https", "port": 443, "targetPort": "https"}]}}),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(name),
            "spec": {
                "replicas": options.replicas.max(2),
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": labels()},
                    "spec": {
                        "serviceAccountName": name,
                        "automountServiceAccountToken": false,
                        "terminationGracePeriodSeconds": 40,
                        "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                                            "seccompProfile": {"type": "RuntimeDefault"}},
                        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": selector}}],
                        "containers": [{
                            "name": "tollgate",
                            "image": options.image,
                            "args": ["serve", "--policies", "/etc/tollgate/policies", "--cert-dir", "/etc/tollgate/certs",
                                     "--addr", "0.0.0.0:8443", "--log-format", "json"],
                            "ports": [{"name": "https", "containerPort": 8443}],
                            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "https", "scheme": "HTTPS"},
                                               "periodSeconds": 5, "failureThreshold": 2},
                            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "https", "scheme": "HTTPS"},
                                              "periodSeconds": 10, "failureThreshold": 3},
                            // Give endpoints time to drop this pod before SIGTERM starts the drain.
                            "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
                            "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}},
                            "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                                "capabilities": {"drop": ["ALL"]}},
                            "volumeMounts": [
                                {"name": "certs", "mountPath": "/etc/tollgate/certs", "readOnly": true},
                                {"name": "policies", "mountPath": "/etc/tollgate/policies", "readOnly": true}
                            ]
                        }],
                        "volumes": [
                            {"name": "certs", "secret": {"secretName": format!("{name}-tls")}},
                            {"name": "policies", "configMap": {"name": format!("{name}-policies")}}
                        ]
                    }
                }
            }
        }),
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta(name),
               "spec": {"minAvailable": 1, "selector": {"matchLabels": selector}}}),
    ])
}

/// YAML documents separated by `---`.
pub fn to_yaml(docs: &[Value]) -> Result<String, ManifestError> {
    let mut out = String::new();
    for doc in docs {
        let node = to_node(doc);
        let mut text = String::new();
        let mut emitter = saphyr::YamlEmitter::new(&mut text);
        // Embedded policy files stay readable as literal blocks.
        emitter.multiline(true);
        emitter
            .dump(&node)
            .map_err(|e| ManifestError::Emit(e.to_string()))?;
        out.push_str(&text);
        out.push('\n');
    }
    Ok(out)
}

fn to_node(value: &Value) -> saphyr::Yaml<'static> {
    use saphyr::{Scalar, Yaml};
    match value {
        Value::Null => Yaml::Value(Scalar::Null),
        Value::Bool(b) => Yaml::Value(Scalar::Boolean(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Value(Scalar::Integer(i)),
            None => Yaml::Value(Scalar::FloatingPoint(n.as_f64().unwrap_or_default().into())),
        },
        Value::String(s) => Yaml::Value(Scalar::String(s.clone().into())),
        Value::Array(items) => Yaml::Sequence(items.iter().map(to_node).collect()),
        Value::Object(map) => Yaml::Mapping(
            map.iter()
                .map(|(k, v)| (Yaml::Value(Scalar::String(k.clone().into())), to_node(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_output_reads_back_identically() -> Result<(), ManifestError> {
        let docs = vec![
            json!({"a": "true", "b": "1", "c": "", "d": "multi\nline", "e": [1, 2.5, null, false], "f": {"x/y": "~"}}),
            json!({"file": "a: 1\n  # indented comment\nb: \"q\"\n", "trailing": "x\n\n", "lead": " space\nx"}),
            json!({"g": "key: value", "h": "- item", "i": "#comment", "j": "yes"}),
        ];
        let text = to_yaml(&docs)?;
        let back = yaml::parse_documents(&text).map_err(|e| ManifestError::Emit(e.message))?;
        let values: Vec<Value> = back.into_iter().map(|d| d.value).collect();
        assert_eq!(values, docs);
        Ok(())
    }

    #[test]
    fn targets_parse_strictly() {
        assert!(Target::parse_service("ns/name").is_ok());
        assert!(Target::parse_service("name").is_err());
        assert!(Target::parse_url("https://127.0.0.1:8443").is_ok());
        assert!(Target::parse_url("http://127.0.0.1:8443").is_err());
    }
}
