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
    support::eventually("the widget CRD serves", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            widgets(&client, "team-a")
                .list(&Default::default())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await;
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
            assert_eq!(record["kind"], "Widget");
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
                record["namespace"].as_str().unwrap().to_string(),
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
        summary.contains("audited 7 object(s): 2 fail, 2 warn, 10 pass"),
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
    assert_eq!(lines.len(), 5, "{text}");

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
