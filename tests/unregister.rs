//! `tollgate unregister` against the real kube-apiserver: every webhook configuration and
//! admission policy tollgate registered (its managed-by label) is deleted, anything else stays.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed step should fail the test loudly

mod support;

use std::process::Command;

use kube::api::{Api, DynamicObject, ListParams};
use serde_json::{Value, json};
use support::cluster::Cluster;
use support::{create_document, documents, tollgate_stdout};

const ADMISSION_KINDS: &[(&str, &str)] = &[
    (
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
    ),
    (
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
    ),
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
];

async fn names(client: &kube::Client, kind: &str, plural: &str) -> Vec<String> {
    let resource = kube::core::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind),
        plural,
    );
    Api::<DynamicObject>::all_with(client.clone(), &resource)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregister_deletes_what_tollgate_registered_and_nothing_else() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    // What `serve --register --in-tree` applies: admission policies, bindings and webhook
    // configurations, all labelled managed-by tollgate.
    let registered: Vec<Value> = documents(&tollgate_stdout([
        "manifests",
        "--url",
        "https://127.0.0.1:1",
        "--no-ca-bundle",
        "--in-tree",
        "--policies",
        "tests/in_tree/policies",
    ]))
    .into_iter()
    .filter(|doc| ADMISSION_KINDS.iter().any(|(kind, _)| doc["kind"] == *kind))
    .collect();
    assert!(registered.len() >= 4, "{registered:#?}");
    for doc in &registered {
        create_document(&cluster.client, doc, false).await;
    }
    // Someone else's webhook configuration.
    let foreign = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "someone-else", "labels": {"app.kubernetes.io/managed-by": "other"}},
        "webhooks": []
    });
    create_document(&cluster.client, &foreign, false).await;

    let output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["unregister", "--settle", "0"])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .output()
        .expect("tollgate runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("removed {} object(s)", registered.len())),
        "{stdout}"
    );
    for (kind, plural) in ADMISSION_KINDS {
        let left = names(&cluster.client, kind, plural).await;
        let expected: Vec<String> = if *kind == "ValidatingWebhookConfiguration" {
            vec!["someone-else".into()]
        } else {
            Vec::new()
        };
        assert_eq!(left, expected, "{kind} left after unregister");
    }

    // Nothing left to remove: a second run succeeds and removes nothing.
    let again = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["unregister", "--settle", "0"])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .output()
        .expect("tollgate runs");
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("removed 0 object(s)"));

    // With --settle, what a replica still shutting down applies again is deleted too.
    let settling = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["unregister", "--settle", "4"])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("tollgate runs");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let late = &registered[0];
    create_document(&cluster.client, late, false).await;
    let output = settling.wait_with_output().await.expect("unregister ends");
    assert!(output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("removed 1 object(s)"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let (kind, plural) = ADMISSION_KINDS
        .iter()
        .find(|(kind, _)| late["kind"] == *kind)
        .expect("an admission kind");
    assert!(
        !names(&cluster.client, kind, plural)
            .await
            .iter()
            .any(|name| late["metadata"]["name"] == name.as_str()),
        "the {kind} applied again was deleted"
    );
}
