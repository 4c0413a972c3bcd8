//! The in-cluster installation for a Service target: namespace, the policy files as a ConfigMap,
//! the webhook server (no API access, a highly available Deployment behind a Service) and the
//! reconciler and the continuous audit (each with its own ServiceAccount, least-privilege RBAC
//! and a leader-elected Deployment; the audit also with the OpenReports CRDs it writes).

use std::path::Path;

use serde_json::{Map, Value, json};
use tollgate_engine::Store;
use tollgate_engine::rollout::{HealthRule, WorkloadKind};

use super::{APP_LABEL, ManifestError, Options, labels};

pub fn in_cluster(
    store: &Store,
    options: &Options,
    namespace: &str,
    name: &str,
) -> Result<Vec<Value>, ManifestError> {
    let selector = json!({APP_LABEL: "tollgate"});
    let meta = |object_name: &str| json!({"name": object_name, "namespace": namespace, "labels": labels()});
    let mut docs = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels()}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(name),
               "automountServiceAccountToken": options.webhook.register}),
    ];
    if options.webhook.register {
        docs.extend(registration_rbac(options, namespace, name));
    }
    docs.extend([
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(&format!("{name}-policies")),
               "data": policy_files(&options.policies_dir)?}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": meta(name),
               "spec": {"selector": selector, "ports": [{"name": "https", "port": 443, "targetPort": "https"}]}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(name),
               "spec": deployment_spec(options, namespace, name, &selector)}),
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta(name),
               "spec": {"minAvailable": 1, "selector": {"matchLabels": selector}}}),
    ]);
    if store.policies().iter().any(|p| p.rollout.is_some()) {
        docs.extend(reconciler(store, options, namespace, name));
    }
    if let Some(interval) = &options.audit_interval {
        docs.extend(audit(store, options, interval, namespace, name)?);
    }
    Ok(docs)
}

/// Every policy file by its file name, as the ConfigMap the pods mount.
fn policy_files(dir: &Path) -> Result<Map<String, Value>, ManifestError> {
    let mut files = Map::new();
    let entries = tollgate_engine::policy::policy_files(dir)
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
        files.insert(key, Value::String(text));
    }
    Ok(files)
}

/// A leader-elected controller of tollgate's (the reconciler, the audit): its own ServiceAccount,
/// a ClusterRole of `rules`, a Role for its Lease, and a Deployment running `tollgate ARGS`.
struct Component<'a> {
    /// `reconciler`, `audit`: the account is `NAME-SUFFIX`.
    suffix: &'a str,
    rules: Vec<Value>,
    args: Vec<String>,
    readiness_path: &'a str,
}

/// The component's own identity, permissions and Deployment. The webhook server needs no API
/// access (its pods mount no token); each component reads and writes only what it needs.
fn component(
    component: Component<'_>,
    options: &Options,
    namespace: &str,
    name: &str,
) -> Vec<Value> {
    let account = format!("{name}-{}", component.suffix);
    let selector = json!({APP_LABEL: account});
    let meta = |object_name: &str| json!({"name": object_name, "namespace": namespace, "labels": labels()});
    let mut docs =
        vec![json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(&account)})];
    docs.extend(bound_role(
        RoleScope::Cluster,
        &account,
        namespace,
        &json!(component.rules),
    ));
    // The Lease lives in tollgate's namespace: leader election needs nothing cluster-wide.
    let lease = json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                        "verbs": ["get", "create", "update"]}]);
    docs.extend(bound_role(
        RoleScope::Namespace,
        &account,
        namespace,
        &lease,
    ));
    docs.push(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(&account),
                     "spec": component_deployment_spec(options, name, &account, &selector, &component)}));
    docs
}

#[derive(Clone, Copy)]
enum RoleScope {
    Cluster,
    Namespace,
}

/// A ClusterRole or a Role (in `namespace`) named `account` with `rules`, and its binding to the
/// ServiceAccount `account` in `namespace`.
fn bound_role(scope: RoleScope, account: &str, namespace: &str, rules: &Value) -> [Value; 2] {
    let (role, binding, metadata) = match scope {
        RoleScope::Cluster => (
            "ClusterRole",
            "ClusterRoleBinding",
            json!({"name": account, "labels": labels()}),
        ),
        RoleScope::Namespace => (
            "Role",
            "RoleBinding",
            json!({"name": account, "namespace": namespace, "labels": labels()}),
        ),
    };
    [
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": role, "metadata": metadata,
               "rules": rules}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": binding, "metadata": metadata,
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role, "name": account},
               "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]}),
    ]
}

fn reconciler(store: &Store, options: &Options, namespace: &str, name: &str) -> Vec<Value> {
    let reconciler = Component {
        suffix: "reconciler",
        rules: reconciler_rules(store),
        args: [
            "reconcile",
            "--policies",
            "/etc/tollgate/policies",
            "--metrics-addr",
            "0.0.0.0:8080",
            "--lease-name",
            &reconciler_account(name),
            "--log-format",
            "json",
        ]
        .map(String::from)
        .to_vec(),
        readiness_path: "/readyz",
    };
    component(reconciler, options, namespace, name)
}

/// The continuous audit: reads every kind the policies judge, writes OpenReports, and brings the
/// OpenReports CRDs it writes.
fn audit(
    store: &Store,
    options: &Options,
    interval: &str,
    namespace: &str,
    name: &str,
) -> Result<Vec<Value>, ManifestError> {
    let mut docs = openreports_crds()?;
    let account = format!("{name}-audit");
    let audit = Component {
        suffix: "audit",
        rules: audit_rules(store),
        args: [
            "audit",
            "--policies",
            "/etc/tollgate/policies",
            "--write-reports",
            "--interval",
            interval,
            "--metrics-addr",
            "0.0.0.0:8080",
            "--lease-name",
            &account,
        ]
        .map(String::from)
        .to_vec(),
        readiness_path: "/healthz",
    };
    docs.extend(component(audit, options, namespace, name));
    Ok(docs)
}

fn openreports_crds() -> Result<Vec<Value>, ManifestError> {
    Ok(
        tollgate_engine::policy::yaml::parse_documents(OPENREPORTS_CRDS)
            .map_err(|e| {
                ManifestError::Usage(format!("deploy/crd-openreports.yaml: {}", e.message))
            })?
            .into_iter()
            .map(|document| document.value)
            .collect(),
    )
}

/// What the audit reads (every kind a policy judges) and writes (its reports).
fn audit_rules(store: &Store) -> Vec<Value> {
    let mut rules: Vec<Value> = store
        .policies()
        .iter()
        .map(|p| json!({"apiGroups": [p.matcher.group], "resources": [p.matcher.resource], "verbs": ["get", "list"]}))
        .collect();
    rules.dedup();
    rules.push(
        json!({"apiGroups": ["openreports.io"], "resources": ["reports", "clusterreports"],
                      "verbs": ["get", "list", "create", "patch", "delete"]}),
    );
    rules
}

/// What a self-registering webhook (`serve --register`) applies, reads and prunes: webhook
/// configurations and CRD conversion stanzas, admission policies in-tree, and the shared
/// certificate Secret when it makes its own.
fn registration_rbac(options: &Options, namespace: &str, name: &str) -> Vec<Value> {
    let registered: Vec<&str> = super::REGISTERED_KINDS
        .iter()
        .filter(|(kind, _)| options.in_tree || kind.ends_with("WebhookConfiguration"))
        .map(|&(_, resource)| resource)
        .collect();
    let rules = json!([
        {"apiGroups": ["admissionregistration.k8s.io"], "resources": registered,
         "verbs": ["get", "list", "create", "patch", "update", "delete"]},
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
         "verbs": ["get", "list", "patch"]},
    ]);
    let mut docs = bound_role(RoleScope::Cluster, name, namespace, &rules).to_vec();
    if makes_own_certificates(options) {
        let secrets = json!([{"apiGroups": [""], "resources": ["secrets"],
                              "resourceNames": [tls_secret_name(options, name)],
                              "verbs": ["get", "update"]},
                             {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}]);
        docs.extend(bound_role(RoleScope::Namespace, name, namespace, &secrets));
    }
    docs
}

/// A self-registering webhook with neither a given Secret nor cert-manager makes its own CA and
/// serving pair and shares them through the Secret `NAME-tls`.
fn makes_own_certificates(options: &Options) -> bool {
    options.webhook.register
        && options.webhook.tls_secret.is_none()
        && options.cert_manager.is_none()
}

fn tls_secret_name(options: &Options, name: &str) -> String {
    options
        .webhook
        .tls_secret
        .clone()
        .unwrap_or_else(|| format!("{name}-tls"))
}

/// The chart's policy-derived values (`deploy/chart`): the policy files and the RBAC rules that
/// `tollgate manifests` derives from them, so a Helm install of these policies renders what
/// `tollgate manifests --service NAMESPACE/NAME --register` renders.
/// Everything sits under one key, and the files are a list: Helm merges maps from several values
/// files key by key but replaces lists, so a user's values replace the example policies instead
/// of adding to them.
pub fn helm_values(store: &Store, policies_dir: &Path) -> Result<Value, ManifestError> {
    let files: Vec<Value> = policy_files(policies_dir)?
        .into_iter()
        .map(|(name, content)| json!({"name": name, "content": content}))
        .collect();
    Ok(json!({"fromPolicies": {
        "policyFiles": files,
        "reconciler": store.policies().iter().any(|p| p.rollout.is_some()),
        "reconcilerRules": reconciler_rules(store),
        "auditRules": audit_rules(store),
    }}))
}

/// The OpenReports API the audit writes (`deploy/crd-openreports.yaml`).
const OPENREPORTS_CRDS: &str = include_str!("../../deploy/crd-openreports.yaml");

/// The managed resources and their status, the revisions, Events, and read access to exactly
/// the health sources the policies name.
fn reconciler_rules(store: &Store) -> Vec<Value> {
    let mut rules = Vec::new();
    let mut reads_deployments = false;
    let mut reads_stateful_sets = false;
    let mut reads_pods = false;
    for p in store.policies().iter().filter(|p| p.rollout.is_some()) {
        rules.push(
            json!({"apiGroups": [p.matcher.group], "resources": [p.matcher.resource],
                          "verbs": ["get", "list", "watch", "patch", "update"]}),
        );
        rules.push(json!({"apiGroups": [p.matcher.group], "resources": [format!("{}/status", p.matcher.resource)],
                          "verbs": ["get", "patch", "update"]}));
        match p.rollout.as_ref().map(|r| &r.health) {
            Some(HealthRule::Workload {
                kind: WorkloadKind::Deployment,
                ..
            }) => reads_deployments = true,
            Some(HealthRule::Workload {
                kind: WorkloadKind::StatefulSet,
                ..
            }) => reads_stateful_sets = true,
            Some(HealthRule::Pods { .. }) => reads_pods = true,
            _ => {}
        }
    }
    rules.push(
        json!({"apiGroups": ["apps"], "resources": ["controllerrevisions"],
                      "verbs": ["get", "list", "watch", "create", "patch", "delete"]}),
    );
    rules.push(json!({"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}));
    let read = ["get", "list", "watch"];
    if reads_deployments {
        rules.push(json!({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": read}));
    }
    if reads_stateful_sets {
        rules.push(json!({"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": read}));
    }
    if reads_pods {
        rules.push(json!({"apiGroups": [""], "resources": ["pods"], "verbs": read}));
    }
    rules
}

fn component_deployment_spec(
    options: &Options,
    name: &str,
    account: &str,
    selector: &Value,
    component: &Component<'_>,
) -> Value {
    let mut pod_labels = labels();
    pod_labels[APP_LABEL] = json!(account);
    json!({
        "replicas": 2,
        "selector": {"matchLabels": selector},
        "template": {
            "metadata": {"labels": pod_labels},
            "spec": {
                "serviceAccountName": account,
                "terminationGracePeriodSeconds": 20,
                "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": component.suffix,
                    "image": options.image,
                    "args": component.args,
                    "env": [
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
                    ],
                    "ports": [{"name": "metrics", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": component.readiness_path, "port": "metrics"}, "periodSeconds": 10},
                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 10},
                    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                    "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                        "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [{"name": "policies", "mountPath": "/etc/tollgate/policies", "readOnly": true}]
                }],
                "volumes": [{"name": "policies", "configMap": {"name": format!("{name}-policies")}}]
            }
        }
    })
}

fn deployment_spec(options: &Options, namespace: &str, name: &str, selector: &Value) -> Value {
    json!({
        "replicas": options.replicas.max(2),
        "selector": {"matchLabels": selector},
        "template": {
            "metadata": {"labels": labels()},
            "spec": {
                "serviceAccountName": name,
                "automountServiceAccountToken": options.webhook.register,
                "terminationGracePeriodSeconds": 40,
                "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": selector}}],
                "containers": [webhook_container(options, namespace, name)],
                "volumes": [
                    certs_volume(options, name),
                    {"name": "policies", "configMap": {"name": format!("{name}-policies")}},
                    // The root filesystem is read-only; certificates are checked in scratch
                    // directories before they are adopted.
                    {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}
                ]
            }
        }
    })
}

/// The reconciler's username: the webhook judges its restores on the state they return to.
pub(crate) fn restorer(namespace: &str, name: &str) -> String {
    format!(
        "system:serviceaccount:{namespace}:{}",
        reconciler_account(name)
    )
}

fn reconciler_account(name: &str) -> String {
    format!("{name}-reconciler")
}

/// Where the webhook's certificates come from: a Secret it is given (cert-manager's, the one
/// named by `tls_secret`, or `NAME-tls` made at install time), or, when it makes its own, a
/// scratch directory holding its working copy of the shared Secret.
fn certs_volume(options: &Options, name: &str) -> Value {
    if makes_own_certificates(options) {
        json!({"name": "certs", "emptyDir": {}})
    } else {
        json!({"name": "certs", "secret": {"secretName": tls_secret_name(options, name)}})
    }
}

fn webhook_args(options: &Options, namespace: &str, name: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "serve",
        "--policies",
        "/etc/tollgate/policies",
        "--cert-dir",
        "/etc/tollgate/certs",
        "--addr",
        "0.0.0.0:8443",
        "--log-format",
        "json",
        "--restorer",
        &restorer(namespace, name),
    ]
    .map(String::from)
    .to_vec();
    if let Some(endpoint) = &options.webhook.otlp_endpoint {
        args.extend(["--otlp-endpoint".into(), endpoint.clone()]);
    }
    if options.webhook.register {
        args.extend([
            "--register".into(),
            "--service".into(),
            format!("{namespace}/{name}"),
            "--timeout-seconds".into(),
            options.timeout_seconds.to_string(),
        ]);
        if options.in_tree {
            args.push("--in-tree".into());
        }
    }
    if makes_own_certificates(options) {
        args.extend([
            "--cert-secret".into(),
            format!("{namespace}/{}", tls_secret_name(options, name)),
            "--san".into(),
            format!("{name}.{namespace}.svc"),
        ]);
    }
    args
}

fn webhook_container(options: &Options, namespace: &str, name: &str) -> Value {
    json!({
        "name": "tollgate",
        "image": options.image,
        "args": webhook_args(options, namespace, name),
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
            {"name": "certs", "mountPath": "/etc/tollgate/certs", "readOnly": !makes_own_certificates(options)},
            {"name": "policies", "mountPath": "/etc/tollgate/policies", "readOnly": true},
            {"name": "tmp", "mountPath": "/tmp"}
        ]
    })
}
