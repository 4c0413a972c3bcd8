//! The Helm chart (deploy/chart) against its source: for each values profile, `helm template`
//! renders document for document what `tollgate manifests --service NAMESPACE/NAME --register`
//! renders with the same settings, so the two cannot drift; `helm lint` passes; and every
//! rendered document passes a server-side dry run on the harness's kube-apiserver.

// The shared harness (support::cluster) fails a test loudly on a broken step.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::cluster::{Cluster, bin_dir};
use support::{create_document, create_namespace, documents, repo_path, tollgate_stdout};

const NAMESPACE: &str = "tollgate-system";
const RELEASE: &str = "tollgate";

/// A values profile: the chart's settings, and the `tollgate manifests` flags that mean the same.
struct Profile {
    name: &'static str,
    helm: &'static [&'static str],
    manifests: &'static [&'static str],
    /// Policies other than the shipped example, passed to both.
    policies: Option<&'static str>,
}

const PROFILES: &[Profile] = &[
    Profile {
        name: "default: certificates made by the replicas",
        helm: &[],
        manifests: &[],
        policies: None,
    },
    Profile {
        name: "in-tree enforcement",
        helm: &["--set", "inTree=true"],
        manifests: &["--in-tree"],
        policies: None,
    },
    Profile {
        name: "cert-manager with its own issuer",
        helm: &["--set", "certificates.source=cert-manager"],
        manifests: &["--cert-manager", "tollgate-ca", "--create-issuer"],
        policies: None,
    },
    Profile {
        name: "cert-manager with an existing issuer",
        helm: &[
            "--set",
            "certificates.source=cert-manager",
            "--set",
            "certificates.certManager.issuer=platform-ca",
            "--set",
            "certificates.certManager.createIssuer=false",
        ],
        manifests: &["--cert-manager", "platform-ca"],
        policies: None,
    },
    Profile {
        name: "a given Secret",
        helm: &[
            "--set",
            "certificates.source=secret",
            "--set",
            "certificates.secretName=webhook-tls",
        ],
        manifests: &["--tls-secret", "webhook-tls"],
        policies: None,
    },
    Profile {
        name: "audit, traces, image, replicas and timeout",
        helm: &[
            "--set",
            "audit.enabled=true",
            "--set",
            "audit.interval=15m",
            "--set",
            "otlpEndpoint=http://otel-collector.observability:4318",
            "--set",
            "image=registry.example/tollgate:0.1.0",
            "--set",
            "replicas=3",
            "--set",
            "timeoutSeconds=5",
        ],
        manifests: &[
            "--audit-interval",
            "15m",
            "--otlp-endpoint",
            "http://otel-collector.observability:4318",
            "--image",
            "registry.example/tollgate:0.1.0",
            "--replicas",
            "3",
            "--timeout-seconds",
            "5",
        ],
        policies: None,
    },
    Profile {
        name: "other policies, through --helm-values",
        helm: &["--set", "audit.enabled=true"],
        manifests: &["--audit-interval", "10m"],
        policies: Some("tests/in_tree/policies"),
    },
];

/// The harness's helm (tests/e2e/build-binaries.sh), or `None` with the reason printed.
fn helm() -> Option<PathBuf> {
    let helm = bin_dir().join("helm");
    if helm.exists() {
        return Some(helm);
    }
    let reason = format!(
        "helm absent: {} not built (run tests/e2e/build-binaries.sh)",
        helm.display()
    );
    if std::env::var("TOLLGATE_E2E_REQUIRED").is_ok_and(|v| v == "1") {
        panic!("{reason}, and TOLLGATE_E2E_REQUIRED=1");
    }
    eprintln!("SKIPPED: {reason}");
    None
}

fn run_helm(helm: &PathBuf, args: &[&str]) -> String {
    let output = Command::new(helm)
        .args(args)
        .current_dir(repo_path(""))
        // No user configuration or repositories: the chart stands alone.
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("tollgate-helm-config"),
        )
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("tollgate-helm-cache"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("tollgate-helm-data"),
        )
        .output()
        .unwrap_or_else(|e| panic!("helm runs: {e}"));
    assert!(
        output.status.success(),
        "helm {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The values file `tollgate manifests --helm-values` writes for `policies`.
fn values_file(dir: &tempfile::TempDir, policies: &str) -> PathBuf {
    let path = dir.path().join("values.yaml");
    let text = tollgate_stdout(["manifests", "--helm-values", "--policies", policies]);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("values: {e}"));
    path
}

fn helm_documents(helm: &PathBuf, profile: &Profile, scratch: &tempfile::TempDir) -> Vec<Value> {
    let mut args = vec![
        "template",
        RELEASE,
        "deploy/chart",
        "--namespace",
        NAMESPACE,
    ];
    let values;
    if let Some(policies) = profile.policies {
        values = values_file(scratch, policies);
        args.extend(["--values", values.to_str().unwrap_or_default()]);
    }
    args.extend(profile.helm);
    documents(&run_helm(helm, &args))
}

/// The chart's hooks (the uninstall's unregister Job and its RBAC) are the chart's own: `kubectl
/// apply` has no uninstall step to hang them on.
fn is_hook(doc: &Value) -> bool {
    doc["metadata"]["annotations"].get("helm.sh/hook").is_some()
}

fn without_hooks(docs: Vec<Value>) -> Vec<Value> {
    docs.into_iter().filter(|doc| !is_hook(doc)).collect()
}

fn manifests_documents(profile: &Profile) -> Vec<Value> {
    let service = format!("{NAMESPACE}/{RELEASE}");
    let mut args = vec!["manifests", "--service", &service, "--register"];
    args.extend(["--policies", profile.policies.unwrap_or("policies")]);
    args.extend(profile.manifests);
    documents(&tollgate_stdout(args))
        .into_iter()
        // `helm install --create-namespace` makes the namespace; a chart does not own it.
        .filter(|doc| doc["kind"] != "Namespace")
        .collect()
}

fn by_identity(docs: Vec<Value>) -> BTreeMap<String, Value> {
    let mut keyed = BTreeMap::new();
    for doc in docs {
        let key = format!(
            "{} {}/{}",
            doc["kind"].as_str().unwrap_or_default(),
            doc["metadata"]["namespace"].as_str().unwrap_or("-"),
            doc["metadata"]["name"].as_str().unwrap_or_default()
        );
        assert!(
            keyed.insert(key.clone(), doc).is_none(),
            "{key} rendered twice"
        );
    }
    keyed
}

#[test]
fn each_profile_renders_what_tollgate_manifests_renders() {
    let Some(helm) = helm() else { return };
    for profile in PROFILES {
        let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let from_chart = by_identity(without_hooks(helm_documents(&helm, profile, &scratch)));
        let from_manifests = by_identity(manifests_documents(profile));
        assert_eq!(
            from_chart.keys().collect::<Vec<_>>(),
            from_manifests.keys().collect::<Vec<_>>(),
            "{}: the same objects",
            profile.name
        );
        for (key, expected) in &from_manifests {
            assert_eq!(
                from_chart.get(key),
                Some(expected),
                "{}: {key} differs from `tollgate manifests`",
                profile.name
            );
        }
    }
}

#[test]
fn the_chart_lints_in_every_profile() {
    let Some(helm) = helm() else { return };
    for profile in PROFILES {
        let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut args = vec!["lint", "deploy/chart", "--strict", "--namespace", NAMESPACE];
        let values;
        if let Some(policies) = profile.policies {
            values = values_file(&scratch, policies);
            args.extend(["--values", values.to_str().unwrap_or_default()]);
        }
        args.extend(profile.helm);
        run_helm(&helm, &args);
    }
}

#[test]
fn the_default_values_are_the_shipped_policies() {
    let chart_values = documents(
        &std::fs::read_to_string(repo_path("deploy/chart/values.yaml"))
            .unwrap_or_else(|e| panic!("values.yaml: {e}")),
    );
    let generated = documents(&tollgate_stdout(["manifests", "--helm-values"]));
    assert_eq!(
        chart_values[0]["fromPolicies"], generated[0]["fromPolicies"],
        "deploy/chart/values.yaml is stale: regenerate its fromPolicies with `tollgate manifests --helm-values`"
    );
    // Helm reads only files inside the chart; its copy of the OpenReports CRDs is the original.
    assert_eq!(
        std::fs::read_to_string(repo_path("deploy/chart/files/crd-openreports.yaml")).ok(),
        std::fs::read_to_string(repo_path("deploy/crd-openreports.yaml")).ok(),
        "deploy/chart/files/crd-openreports.yaml differs from deploy/crd-openreports.yaml"
    );
}

#[test]
fn settings_that_cannot_work_are_refused_by_name() {
    let Some(helm) = helm() else { return };
    for (set, expected) in [
        (
            "certificates.source=vault",
            "certificates.source is \"vault\"",
        ),
        ("certificates.source=secret", "set certificates.secretName"),
        ("replicas=1", "replicas must be at least 2"),
    ] {
        let output = Command::new(&helm)
            .args(["template", RELEASE, "deploy/chart", "--set", set])
            .current_dir(repo_path(""))
            .output()
            .unwrap_or_else(|e| panic!("helm runs: {e}"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(expected),
            "--set {set}: {stderr}"
        );
    }
}

/// cert-manager is not part of the harness: its two kinds are served by stand-in CRDs that keep
/// any field, so the dry run checks the documents' envelope (kind, version, names, namespace).
async fn serve_cert_manager_kinds(client: &kube::Client) {
    for (kind, plural) in [("Issuer", "issuers"), ("Certificate", "certificates")] {
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.cert-manager.io")},
            "spec": {
                "group": "cert-manager.io",
                "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase()},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object",
                        "x-kubernetes-preserve-unknown-fields": true}}}]
            }
        });
        create_document(client, &crd, false).await;
        let resource = kube::api::ApiResource {
            group: "cert-manager.io".into(),
            version: "v1".into(),
            api_version: "cert-manager.io/v1".into(),
            kind: kind.into(),
            plural: plural.into(),
        };
        support::until_served(
            kind,
            kube::Api::all_with(client.clone(), &resource),
            Duration::from_secs(30),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rendered_document_passes_a_server_side_dry_run() {
    let Some(helm) = helm() else { return };
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    create_namespace(&cluster.client, NAMESPACE).await;
    serve_cert_manager_kinds(&cluster.client).await;
    let mut checked = 0;
    for profile in PROFILES {
        let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        for doc in helm_documents(&helm, profile, &scratch) {
            create_document(&cluster.client, &doc, true).await;
            checked += 1;
        }
    }
    assert!(checked > 60, "only {checked} documents were rendered");
}

/// Where the pods run is the cluster's business, not the generator's: the chart's placement and
/// resource settings reach every Deployment's pods, and with them taken out again the documents
/// are exactly what `tollgate manifests` renders.
#[test]
fn placement_and_resources_reach_every_deployment_and_change_nothing_else() {
    let Some(helm) = helm() else { return };
    let profile = Profile {
        name: "placement",
        helm: &[
            "--set",
            "audit.enabled=true",
            "--set",
            "priorityClassName=system-cluster-critical",
            "--set",
            "imagePullSecrets[0].name=regcred",
            "--set",
            "nodeSelector.role=infra",
            "--set",
            "tolerations[0].key=infra",
            "--set",
            "tolerations[0].operator=Exists",
            "--set",
            "affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight=1",
            "--set",
            "resources.webhook.limits.memory=512Mi",
            "--set",
            "resources.reconciler.requests.cpu=100m",
        ],
        manifests: &["--audit-interval", "10m"],
        policies: None,
    };
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut from_chart = by_identity(without_hooks(helm_documents(&helm, &profile, &scratch)));
    let from_manifests = by_identity(manifests_documents(&profile));
    let deployments: Vec<String> = from_chart
        .keys()
        .filter(|k| k.starts_with("Deployment "))
        .cloned()
        .collect();
    assert_eq!(
        deployments.len(),
        3,
        "webhook, reconciler and audit: {deployments:?}"
    );
    for key in &deployments {
        let Some(doc) = from_chart.get_mut(key) else {
            continue;
        };
        let pod = &mut doc["spec"]["template"]["spec"];
        assert_eq!(pod["priorityClassName"], "system-cluster-critical", "{key}");
        assert_eq!(
            pod["imagePullSecrets"],
            json!([{"name": "regcred"}]),
            "{key}"
        );
        assert_eq!(pod["nodeSelector"], json!({"role": "infra"}), "{key}");
        assert_eq!(pod["tolerations"][0]["key"], "infra", "{key}");
        assert_eq!(
            pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
                [0]["weight"],
            1,
            "{key}"
        );
        if let Some(spec) = pod.as_object_mut() {
            for placement in [
                "priorityClassName",
                "imagePullSecrets",
                "nodeSelector",
                "tolerations",
                "affinity",
            ] {
                spec.remove(placement);
            }
        }
    }
    let resources = |key: &str| -> Value {
        from_chart[key]["spec"]["template"]["spec"]["containers"][0]["resources"].clone()
    };
    let webhook = format!("Deployment {NAMESPACE}/{RELEASE}");
    let reconciler = format!("Deployment {NAMESPACE}/{RELEASE}-reconciler");
    assert_eq!(resources(&webhook)["limits"]["memory"], "512Mi");
    assert_eq!(resources(&reconciler)["requests"]["cpu"], "100m");
    for key in [&webhook, &reconciler] {
        let container = "/spec/template/spec/containers/0/resources";
        let generated = from_manifests[key].pointer(container).cloned();
        if let (Some(chart), Some(generated)) = (
            from_chart
                .get_mut(key.as_str())
                .and_then(|doc| doc.pointer_mut(container)),
            generated,
        ) {
            *chart = generated;
        }
    }
    assert_eq!(
        from_chart, from_manifests,
        "nothing else differs from `tollgate manifests`"
    );
}

/// Uninstalling runs `tollgate unregister` once the release's objects are gone (post-delete),
/// with the RBAC to list and delete exactly the admission kinds; it can be turned off.
#[test]
fn uninstalling_unregisters_what_the_webhook_registered() {
    let Some(helm) = helm() else { return };
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let hooks: Vec<Value> = helm_documents(&helm, &PROFILES[0], &scratch)
        .into_iter()
        .filter(is_hook)
        .collect();
    let kinds: Vec<&str> = hooks
        .iter()
        .map(|d| d["kind"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        kinds,
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Job"],
        "{hooks:#?}"
    );
    for hook in &hooks {
        assert_eq!(
            hook["metadata"]["annotations"]["helm.sh/hook"],
            "post-delete"
        );
    }
    let job = &hooks[3];
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"][0], "unregister");
    assert_eq!(
        job["spec"]["template"]["spec"]["securityContext"]["runAsUser"],
        65532
    );
    let rules = &hooks[1]["rules"][0];
    assert_eq!(rules["verbs"], json!(["list", "delete"]));
    assert_eq!(rules["resources"].as_array().map(Vec::len), Some(6));

    let off = Profile {
        name: "no unregister hook",
        helm: &["--set", "unregisterOnUninstall=false"],
        manifests: &[],
        policies: None,
    };
    assert!(
        !helm_documents(&helm, &off, &scratch).iter().any(is_hook),
        "unregisterOnUninstall=false renders no hook"
    );
}
