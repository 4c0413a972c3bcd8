//! The in-cluster installation for a Service target: namespace, identity, RBAC, the policy files
//! as a ConfigMap, and a highly available Deployment behind a Service.

use serde_json::{Map, Value, json};
use tollgate_engine::Store;

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
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(name), "automountServiceAccountToken": false}),
    ];
    docs.extend(reconciler_rbac(store, namespace, name));
    docs.extend([
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(&format!("{name}-policies")),
               "data": policy_files(options)?}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": meta(name),
               "spec": {"selector": selector, "ports": [{"name": "https", "port": 443, "targetPort": "https"}]}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(name),
               "spec": deployment_spec(options, name, &selector)}),
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta(name),
               "spec": {"minAvailable": 1, "selector": {"matchLabels": selector}}}),
    ]);
    Ok(docs)
}

/// Every policy file by its file name, as the ConfigMap the pods mount.
fn policy_files(options: &Options) -> Result<Map<String, Value>, ManifestError> {
    let mut files = Map::new();
    let entries = tollgate_engine::policy::policy_files(&options.policies_dir)
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

/// The webhook server needs no API access (its pods mount no token). This role is for the
/// reconciler: only the managed custom resources and their status.
fn reconciler_rbac(store: &Store, namespace: &str, name: &str) -> [Value; 2] {
    let rules: Vec<Value> = store
        .policies()
        .iter()
        .map(|p| {
            json!({"apiGroups": [p.matcher.group], "resources": [format!("{}/status", p.matcher.resource)], "verbs": ["get", "patch", "update"]})
        })
        .chain(store.policies().iter().map(|p| {
            json!({"apiGroups": [p.matcher.group], "resources": [p.matcher.resource], "verbs": ["get", "list", "watch", "patch", "update"]})
        }))
        .collect();
    let role = format!("{name}-reconciler");
    [
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": role, "labels": labels()}, "rules": rules}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": role, "labels": labels()},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
               "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]}),
    ]
}

fn deployment_spec(options: &Options, name: &str, selector: &Value) -> Value {
    json!({
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
                "containers": [webhook_container(options)],
                "volumes": [
                    {"name": "certs", "secret": {"secretName": format!("{name}-tls")}},
                    {"name": "policies", "configMap": {"name": format!("{name}-policies")}}
                ]
            }
        }
    })
}

fn webhook_container(options: &Options) -> Value {
    json!({
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
    })
}
