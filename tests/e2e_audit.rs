//! `tollgate audit` against a real kube-apiserver: objects stored without any admission (a CRD
//! whose schema lets everything in, no webhook registered) are judged by the policies as their
//! CREATE would be — found exactly in the table and in JSON lines, per namespace, through pages
//! smaller than the collection — with exit 0 when nothing fails, 1 when anything does and 2 for
//! an unreachable cluster or unusable policies.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed step should fail the test loudly

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::{Client, core::GroupVersionKind};
use serde_json::{Value, json};
use support::cluster::{Cluster, free_port};

const POLICIES: &str = "apiVersion: tollgate.dev/v1alpha1
kind: Policy
metadata:
  name: widget-limits
spec:
  match: {group: audit.tollgate.test, kind: Widget, resource: widgets, versions: [v1]}
  severity: high
  schema:
    type: object
    properties:
      spec:
        type: object
        x-kubernetes-validations:
          - rule: \"self.size <= 5 || self.mode == 'safe'\"
            message: a widget over 5 must be safe
        properties:
          size: {type: integer, maximum: 10}
          mode: {type: string, enum: [fast, safe], default: fast}
          owner: {type: string}
---
apiVersion: tollgate.dev/v1alpha1
kind: Policy
metadata:
  name: widget-owner
spec:
  match: {group: audit.tollgate.test, kind: Widget, resource: widgets, versions: [v1]}
  enforcement: warn
  schema:
    type: object
    properties:
      spec:
        type: object
        required: [owner]
---
apiVersion: tollgate.dev/v1alpha1
kind: Policy
metadata:
  name: gadget-limits
spec:
  match: {group: audit.tollgate.test, kind: Gadget, resource: gadgets, versions: [v1], scope: Cluster}
  schema:
    type: object
    properties:
      spec:
        type: object
        properties:
          size: {type: integer, maximum: 10}
";

fn widgets(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("audit.tollgate.test", "v1", "Widget");
    Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::from_gvk_with_plural(&gvk, "widgets"),
    )
}

async fn install(client: &Client) {
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.audit.tollgate.test"},
        "spec": {
            "group": "audit.tollgate.test",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}],
        },
    }))
    .unwrap();
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .expect("CRD");
    for ns in ["team-a", "team-b", "team-c"] {
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .expect("namespace");
    }
    let stored = [
        ("team-a", "fine", json!({"size": 1, "owner": "ann"})),
        (
            "team-a",
            "too-big",
            json!({"size": 20, "owner": "ann", "mode": "safe"}),
        ),
        ("team-a", "fine-2", json!({"size": 2, "owner": "ann"})),
        // No mode: the default (fast) is in place when the rule judges it.
        ("team-b", "fast-and-big", json!({"size": 7, "owner": "bob"})),
        ("team-b", "ownerless", json!({"size": 1})),
        (
            "team-b",
            "safe-and-big",
            json!({"size": 7, "mode": "safe", "owner": "bob"}),
        ),
        ("team-c", "ownerless-too", json!({"size": 3})),
    ];
    support::until_served(
        "the widget CRD",
        widgets(client, "team-a"),
        Duration::from_secs(30),
    )
    .await;
    let gadgets: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.audit.tollgate.test"},
        "spec": {
            "group": "audit.tollgate.test",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "listKind": "GadgetList"},
            "scope": "Cluster",
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}],
        },
    }))
    .unwrap();
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &gadgets)
        .await
        .expect("CRD");
    let gadget_api = || {
        let gvk = GroupVersionKind::gvk("audit.tollgate.test", "v1", "Gadget");
        Api::<DynamicObject>::all_with(
            client.clone(),
            &ApiResource::from_gvk_with_plural(&gvk, "gadgets"),
        )
    };
    support::until_served("the gadget CRD", gadget_api(), Duration::from_secs(30)).await;
    for (name, size) in [("small-gadget", 1), ("big-gadget", 20)] {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "audit.tollgate.test/v1", "kind": "Gadget",
            "metadata": {"name": name}, "spec": {"size": size},
        }))
        .unwrap();
        gadget_api()
            .create(&PostParams::default(), &object)
            .await
            .expect("store gadget");
    }
    for (ns, name, spec) in stored {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "audit.tollgate.test/v1", "kind": "Widget",
            "metadata": {"name": name, "namespace": ns}, "spec": spec,
        }))
        .unwrap();
        widgets(client, ns)
            .create(&PostParams::default(), &object)
            .await
            .expect("store widget");
    }
}

fn audit(kubeconfig: &Path, policies: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("audit")
        .arg("--policies")
        .arg(policies)
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// (namespace, name, policy, result, the violated paths) of each JSON line.
fn records(output: &Output) -> BTreeSet<(String, String, String, String, String)> {
    stdout(output)
        .lines()
        .map(|line| {
            let record: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(record["kind"] == "Widget" || record["kind"] == "Gadget");
            let severity = if record["policy"] == "widget-limits" {
                json!("high")
            } else {
                Value::Null
            };
            assert_eq!(record["severity"], severity);
            assert_eq!(record["apiVersion"], "audit.tollgate.test/v1");
            let paths: Vec<&str> = record["violations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| {
                    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
                    v["path"].as_str().unwrap()
                })
                .collect();
            (
                // Cluster-scoped objects have none.
                record["namespace"].as_str().unwrap_or("-").to_string(),
                record["name"].as_str().unwrap().to_string(),
                record["policy"].as_str().unwrap().to_string(),
                record["result"].as_str().unwrap().to_string(),
                paths.join(","),
            )
        })
        .collect()
}

fn record(
    ns: &str,
    name: &str,
    policy: &str,
    result: &str,
    paths: &str,
) -> (String, String, String, String, String) {
    (
        ns.into(),
        name.into(),
        policy.into(),
        result.into(),
        paths.into(),
    )
}

fn report_api(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("openreports.io", "v1alpha1", "Report");
    Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::from_gvk_with_plural(&gvk, "reports"),
    )
}

/// The report of `namespace`: its summary (pass, fail, warn) and its results' (name, rule).
async fn report(
    client: &Client,
    namespace: &str,
) -> Option<((i64, i64, i64), Vec<(String, String)>, Value)> {
    let report = report_api(client, namespace)
        .get_opt("tollgate-audit")
        .await
        .unwrap()?;
    let report = serde_json::to_value(report).unwrap();
    let summary = &report["summary"];
    let count = |k: &str| summary[k].as_i64().unwrap();
    let results = report["results"]
        .as_array()
        .map(|results| {
            results
                .iter()
                .map(|r| {
                    assert_eq!(r["source"], "tollgate");
                    // The policy's severity, where it declares one.
                    let severity = match r["policy"].as_str() {
                        Some("widget-limits") => json!("high"),
                        _ => Value::Null,
                    };
                    assert_eq!(r["severity"], severity);
                    assert_eq!(r["resources"][0]["namespace"], namespace);
                    assert!(r["resources"][0]["uid"].as_str().is_some());
                    (
                        r["resources"][0]["name"].as_str().unwrap().to_string(),
                        r["rule"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Some((
        (count("pass"), count("fail"), count("warn")),
        results,
        report,
    ))
}

/// OpenReports: refused until their CRDs are installed; then one report per namespace with exact
/// summaries and capped results; a fix and a deletion show on the next pass; the cap holds over
/// a thousand failing objects.
async fn reports(client: &Client, kubeconfig: &Path, policies: &Path) {
    let missing = audit(kubeconfig, policies, &["--write-reports"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("OpenReports CRDs are not installed"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let crds = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/crd-openreports.yaml"),
    )
    .unwrap();
    for document in tollgate_engine::policy::yaml::parse_documents(&crds).unwrap() {
        let crd: CustomResourceDefinition = serde_json::from_value(document.value).unwrap();
        Api::<CustomResourceDefinition>::all(client.clone())
            .create(&PostParams::default(), &crd)
            .await
            .expect("OpenReports CRD");
    }
    support::until_served(
        "the Report CRD",
        report_api(client, "team-a"),
        Duration::from_secs(30),
    )
    .await;

    let first = audit(
        kubeconfig,
        policies,
        &["--write-reports", "--max-results", "1"],
    );
    assert_eq!(
        first.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let (summary, results, whole) = report(client, "team-a").await.expect("team-a report");
    assert_eq!(summary, (5, 1, 0));
    assert_eq!(results, [("too-big".to_string(), "spec.size".to_string())]);
    assert_eq!(whole["configuration"]["limits"]["maxResults"], 1);
    let (summary, results, _) = report(client, "team-b").await.expect("team-b report");
    assert_eq!(
        summary,
        (4, 1, 1),
        "the summary counts what the capped results leave out"
    );
    assert_eq!(results.len(), 1);
    let (summary, _, _) = report(client, "team-c").await.expect("team-c report");
    assert_eq!(summary, (1, 0, 1));
    // Cluster-scoped kinds: one ClusterReport.
    let gvk = GroupVersionKind::gvk("openreports.io", "v1alpha1", "ClusterReport");
    let cluster_reports: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&gvk, "clusterreports"),
    );
    let cluster_report = serde_json::to_value(
        cluster_reports
            .get("tollgate-audit")
            .await
            .expect("ClusterReport"),
    )
    .unwrap();
    assert_eq!(cluster_report["summary"]["pass"], 1);
    assert_eq!(cluster_report["summary"]["fail"], 1);
    let result = &cluster_report["results"][0];
    assert_eq!(result["policy"], "gadget-limits");
    assert_eq!(result["rule"], "spec.size");
    assert_eq!(result["resources"][0]["name"], "big-gadget");
    assert!(result["resources"][0].get("namespace").is_none());

    // Fixed in team-b, gone from team-c: the next pass says so.
    widgets(client, "team-b")
        .patch(
            "fast-and-big",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"mode": "safe"}})),
        )
        .await
        .unwrap();
    widgets(client, "team-c")
        .delete("ownerless-too", &Default::default())
        .await
        .unwrap();
    let second = audit(kubeconfig, policies, &["--write-reports"]);
    assert_eq!(second.status.code(), Some(1));
    let (summary, results, _) = report(client, "team-b").await.expect("team-b report");
    assert_eq!(summary, (5, 0, 1));
    assert_eq!(
        results,
        [("ownerless".to_string(), "spec.owner".to_string())]
    );
    assert!(
        report(client, "team-c").await.is_none(),
        "a namespace with nothing left has no report"
    );
    assert!(String::from_utf8_lossy(&second.stderr).contains("reports: 3 written, 1 deleted"));

    // Over a thousand failing objects: the results stop at the cap, the summary does not.
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team-d"}})).unwrap(),
        )
        .await
        .expect("namespace");
    let many = 1200;
    futures_util::stream::iter(0..many)
        .map(|i| {
            let api = widgets(client, "team-d");
            async move {
                let object: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "audit.tollgate.test/v1", "kind": "Widget",
                    "metadata": {"name": format!("w-{i}"), "namespace": "team-d"},
                    "spec": {"size": 11, "mode": "safe", "owner": "dan"},
                }))
                .unwrap();
                api.create(&PostParams::default(), &object)
                    .await
                    .expect("store widget");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let third = audit(
        kubeconfig,
        policies,
        &[
            "--write-reports",
            "--namespace",
            "team-d",
            "--output",
            "json",
        ],
    );
    assert_eq!(third.status.code(), Some(1));
    assert_eq!(stdout(&third).lines().count(), many);
    let (summary, results, whole) = report(client, "team-d").await.expect("team-d report");
    assert_eq!(summary, (many as i64, many as i64, 0));
    assert_eq!(results.len(), 1000);
    let size = serde_json::to_vec(&whole).unwrap().len();
    assert!(size < 1024 * 1024, "a capped report is {size} bytes");
    println!("a report of 1000 results is {size} bytes");
}

/// A `tollgate audit --interval` replica, killed on drop.
struct Replica {
    child: std::process::Child,
    metrics: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    fn start(kubeconfig: &Path, policies: &Path, identity: &str, log: &Path) -> Self {
        let metrics = format!("127.0.0.1:{}", free_port());
        let out = std::fs::File::create(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["audit", "--write-reports", "--interval", "1h", "--policies"])
            .arg(policies)
            .args(["--metrics-addr", &metrics])
            .args([
                "--lease-name",
                "tollgate-audit",
                "--lease-namespace",
                "default",
            ])
            .args(["--identity", identity])
            .env("KUBECONFIG", kubeconfig)
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Self { child, metrics }
    }

    /// Passes that ended well.
    async fn passes(&self) -> f64 {
        self.metric("tollgate_audit_passes_total{outcome=\"ok\"}")
            .await
            .unwrap_or(0.0)
    }

    /// The value of the metric sample `name` (with its labels, as printed), if present.
    async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest_get(&format!("http://{}/metrics", self.metrics)).await?;
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

/// A plain-HTTP GET on loopback, without a client library: the metrics text, if it answers.
async fn reqwest_get(url: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').map_or((rest, "/"), |(h, p)| (h, p));
    let mut stream = tokio::net::TcpStream::connect(host).await.ok()?;
    let request = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await.ok()?;
    body.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// Two replicas on one lease: one audits. A policy change brings a pass at once (the interval
/// is an hour), its results in the report and the metrics.
async fn continuous(client: &Client, kubeconfig: &Path, policies: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let own = dir.path().join("policies");
    std::fs::create_dir(&own).unwrap();
    std::fs::copy(policies.join("widgets.yaml"), own.join("widgets.yaml")).unwrap();
    let a = Replica::start(kubeconfig, &own, "audit-a", &dir.path().join("a.log"));
    let b = Replica::start(kubeconfig, &own, "audit-b", &dir.path().join("b.log"));
    let log = || {
        format!(
            "a: {}\nb: {}",
            std::fs::read_to_string(dir.path().join("a.log")).unwrap_or_default(),
            std::fs::read_to_string(dir.path().join("b.log")).unwrap_or_default()
        )
    };
    let leader = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(1.0), Some(0.0)) => Some(0),
        (Some(0.0), Some(1.0)) => Some(1),
        _ => None,
    };
    let mut elected = None;
    for _ in 0..120 {
        if let Some(which) = leader(
            a.metric("tollgate_audit_leader").await,
            b.metric("tollgate_audit_leader").await,
        ) {
            let replica = if which == 0 { &a } else { &b };
            if replica.passes().await >= 1.0 {
                elected = Some(which);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let which =
        elected.unwrap_or_else(|| panic!("no replica audited as the one leader\n{}", log()));
    let (leading, following) = if which == 0 { (&a, &b) } else { (&b, &a) };
    assert_eq!(
        following
            .metric("tollgate_audit_passes_total{outcome=\"ok\"}")
            .await,
        None,
        "the follower does not audit"
    );

    // Tightened: fine-2 (size 2) now fails too, in the next pass and not an hour later.
    // Written a second later, so the change shows in the files' modification times.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let text = std::fs::read_to_string(own.join("widgets.yaml")).unwrap();
    std::fs::write(
        own.join("widgets.yaml"),
        text.replace("maximum: 10", "maximum: 1"),
    )
    .unwrap();
    let mut seen = None;
    for _ in 0..120 {
        let (summary, _, _) = report(client, "team-a").await.expect("team-a report");
        if summary.1 == 2 {
            seen = Some(summary);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        seen,
        Some((4, 2, 0)),
        "the change brought a pass\n{}",
        log()
    );
    let judged = leading
        .metric("tollgate_audit_objects_judged_total")
        .await
        .unwrap();
    assert!(judged > 0.0);
    assert!(
        leading
            .metric("tollgate_audit_results{policy=\"widget-limits\",result=\"fail\"}")
            .await
            .is_some_and(|n| n >= 2.0),
        "{}",
        reqwest_get(&format!("http://{}/metrics", leading.metrics))
            .await
            .unwrap_or_default()
    );
}

/// `tollgate manifests --audit-interval`: every document is accepted by the apiserver (dry run;
/// the audit's RBAC for real), and the audit, run with exactly the rights rendered for it
/// (impersonating its ServiceAccount), lists, judges and writes its reports.
async fn rendered_installation_audits_with_its_own_rights(
    client: &Client,
    kubeconfig: &Path,
    policies: &Path,
) {
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "manifests",
            "--service",
            "tollgate-audit/tollgate",
            "--no-ca-bundle",
        ])
        .args(["--audit-interval", "10m", "--policies"])
        .arg(policies)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let documents = tollgate_engine::policy::yaml::parse_documents(&text).unwrap();
    let mut audit_args = None;
    let mut crds = 0;
    for document in documents {
        let value = document.value;
        let kind = value["kind"].as_str().unwrap_or_default().to_string();
        let name = value["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if kind == "CustomResourceDefinition" {
            // The OpenReports CRDs, installed above from deploy/: the same documents.
            assert!(name.ends_with(".openreports.io"), "{name}");
            crds += 1;
            continue;
        }
        if kind == "Deployment" && name == "tollgate-audit" {
            audit_args = Some(value["spec"]["template"]["spec"]["containers"][0]["args"].clone());
        }
        let audit_rights = name == "tollgate-audit"
            && matches!(
                kind.as_str(),
                "ServiceAccount" | "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding"
            );
        support::create_document(client, &value, kind != "Namespace" && !audit_rights).await;
    }
    assert_eq!(crds, 2);
    let args: Vec<String> =
        serde_json::from_value(audit_args.expect("the audit's Deployment")).unwrap();
    assert!(
        args.windows(2).any(|w| w == ["--interval", "10m"]),
        "{args:?}"
    );
    assert!(args.contains(&"--write-reports".to_string()));

    // As the audit's ServiceAccount, with nothing but its rendered rights.
    let mut config: Value =
        serde_json::to_value(kube::config::Kubeconfig::read_from(kubeconfig).unwrap()).unwrap();
    for user in config["users"].as_array_mut().unwrap() {
        user["user"]["as"] = json!("system:serviceaccount:tollgate-audit:tollgate-audit");
    }
    let impersonating = kubeconfig.with_file_name("audit-sa-kubeconfig");
    std::fs::write(&impersonating, serde_json::to_vec(&config).unwrap()).unwrap();
    let audited = audit(&impersonating, policies, &["--write-reports"]);
    let stderr = String::from_utf8_lossy(&audited.stderr);
    assert_eq!(audited.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("reports: 4 written"), "{stderr}");

    // The impersonation holds: an account without those rights is refused.
    for user in config["users"].as_array_mut().unwrap() {
        user["user"]["as"] = json!("system:serviceaccount:tollgate-audit:nobody");
    }
    std::fs::write(&impersonating, serde_json::to_vec(&config).unwrap()).unwrap();
    let refused = audit(&impersonating, policies, &["--write-reports"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_finds_what_was_stored_without_admission() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    install(&cluster.client).await;
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("widgets.yaml"), POLICIES).unwrap();
    let kubeconfig = &cluster.kubeconfig;

    // Everything, as JSON lines, two objects per page.
    let all = audit(
        kubeconfig,
        &policies,
        &["--output", "json", "--page-size", "2"],
    );
    assert_eq!(
        all.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&all.stderr)
    );
    let expected: BTreeSet<_> = [
        record("-", "big-gadget", "gadget-limits", "fail", "spec.size"),
        record("team-a", "too-big", "widget-limits", "fail", "spec.size"),
        record("team-b", "fast-and-big", "widget-limits", "fail", "spec"),
        record("team-b", "ownerless", "widget-owner", "warn", "spec.owner"),
        record(
            "team-c",
            "ownerless-too",
            "widget-owner",
            "warn",
            "spec.owner",
        ),
    ]
    .into();
    assert_eq!(records(&all), expected);
    let summary = String::from_utf8_lossy(&all.stderr);
    assert!(
        summary.contains("audited 9 object(s): 3 fail, 2 warn, 11 pass"),
        "{summary}"
    );

    // The table: one line per finding, with the violated fields.
    let table = audit(kubeconfig, &policies, &[]);
    assert_eq!(table.status.code(), Some(1));
    let text = stdout(&table);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["NAMESPACE", "NAME", "KIND", "POLICY", "RESULT", "FIELDS"]
    );
    assert!(lines.contains(&vec![
        "team-a",
        "too-big",
        "Widget",
        "widget-limits",
        "fail",
        "spec.size"
    ]));
    assert!(lines.contains(&vec![
        "team-b",
        "fast-and-big",
        "Widget",
        "widget-limits",
        "fail",
        "spec"
    ]));
    assert!(lines.contains(&vec![
        "-",
        "big-gadget",
        "Gadget",
        "gadget-limits",
        "fail",
        "spec.size"
    ]));
    assert_eq!(lines.len(), 6, "{text}");

    // One namespace: only its objects; warnings alone do not fail the audit.
    let team_a = audit(
        kubeconfig,
        &policies,
        &["--namespace", "team-a", "--output", "json"],
    );
    assert_eq!(team_a.status.code(), Some(1));
    assert_eq!(
        records(&team_a),
        [record(
            "team-a",
            "too-big",
            "widget-limits",
            "fail",
            "spec.size"
        )]
        .into()
    );
    let team_c = audit(
        kubeconfig,
        &policies,
        &["--namespace", "team-c", "--output", "json"],
    );
    assert_eq!(
        team_c.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&team_c.stderr)
    );
    assert_eq!(
        records(&team_c),
        [record(
            "team-c",
            "ownerless-too",
            "widget-owner",
            "warn",
            "spec.owner"
        )]
        .into()
    );
    let empty = audit(kubeconfig, &policies, &["--namespace", "default"]);
    assert_eq!(empty.status.code(), Some(0));
    assert_eq!(stdout(&empty), "");

    reports(&cluster.client, kubeconfig, &policies).await;
    continuous(&cluster.client, kubeconfig, &policies).await;
    rendered_installation_audits_with_its_own_rights(&cluster.client, kubeconfig, &policies).await;

    // Unusable policies, and a cluster that does not answer: exit 2 with the reason.
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("bad.yaml"), "kind: Policy\nspec: [").unwrap();
    let refused = audit(kubeconfig, &broken, &[]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("bad.yaml"));

    let closed = free_port();
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let server_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("server:"))
        .unwrap();
    let unreachable = dir.path().join("unreachable-kubeconfig");
    std::fs::write(
        &unreachable,
        text.replace(
            server_line,
            &format!("    server: https://127.0.0.1:{closed}"),
        ),
    )
    .unwrap();
    let down = audit(&unreachable, &policies, &[]);
    assert_eq!(down.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("cannot reach the cluster"),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    drop(cluster);
}
