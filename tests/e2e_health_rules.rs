//! Every health rule drives a rollback against a real kube-apiserver and kube-controller-manager,
//! and the reconciler takes each rule from a policy reload, never a restart: a rollout section
//! added (`condition`), changed (`pods`, then a StatefulSet `workload`), refused when it does not
//! load (the set in force stays), and removed (the kind's objects are released, so they can be
//! deleted).
//!
//! The test plays what a cluster would otherwise need: the Widget operator (its own conditions,
//! and a StatefulSet per widget, the template following the widget's image) and the kubelet (Pods
//! labelled `health: good` become Ready; `health: bad` ones fail, so their controller replaces
//! them).

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed step should fail the test loudly

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::cluster::Cluster;
use support::reconciler::{BadPods, Reconciler, condition, eventually, kubelet};

const NS: &str = "widgets";
const GROUP: &str = "rollout.e2e.example.com";

fn widgets(client: &Client) -> Api<DynamicObject> {
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, "v1", "Widget"), "widgets");
    Api::namespaced_with(client.clone(), NS, &resource)
}

/// The Widget CRD: a spec with what each health rule reads, and a status whose conditions are a
/// map keyed by type, so the operator's conditions and tollgate's live side by side.
async fn install_widget_crd(client: &Client) {
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{GROUP}")},
        "spec": {
            "group": GROUP, "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
            "versions": [{
                "name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "image": {"type": "string"},
                        "replicas": {"type": "integer"},
                        "minReady": {"type": "integer"},
                        "selector": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    }},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
                        "conditions": {
                            "type": "array",
                            "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["type"],
                            "items": {"type": "object", "required": ["type", "status"],
                                      "x-kubernetes-preserve-unknown-fields": true,
                                      "properties": {"type": {"type": "string"}, "status": {"type": "string"}}}
                        }
                    }}
                }}}
            }]
        }
    }))
    .expect("crd");
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .expect("Widget CRD");
    let started = Instant::now();
    while widgets(client).list(&ListParams::default()).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "Widget CRD never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The Widget policy with `rollout` (YAML, indented under `spec`), or none.
fn widget_policy(rollout: &str) -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: Policy
metadata:
  name: widget
spec:
  match:
    group: {GROUP}
    kind: Widget
    resource: widgets
    versions: ["v1"]
    scope: Namespaced
    operations: ["CREATE", "UPDATE"]
  schema:
    type: object
    properties:
      spec:
        type: object
        properties:
          image: {{type: string}}
          replicas: {{type: integer}}
          minReady: {{type: integer}}
          selector: {{type: object}}
{rollout}"#
    )
}

fn rollout(health: &str, deadline: u64) -> String {
    format!(
        "  rollout:\n    health:\n      {health}\n    progressDeadlineSeconds: {deadline}\n    revisionHistoryLimit: 5\n    autoRollback: true\n"
    )
}

/// Writes the widget policy; the directory's fingerprint (mtime and size) must change, so a
/// rewrite within the same second carries a different length.
fn write_policy(policies: &Path, text: &str) {
    std::fs::write(policies.join("widget.yaml"), text).expect("write widget policy");
}

async fn get(client: &Client, name: &str) -> Value {
    support::reconciler::get(&widgets(client), name).await
}

async fn wait_phase(client: &Client, log: &Path, name: &str, wanted: &str) -> Value {
    support::reconciler::wait_phase(&widgets(client), log, name, wanted).await
}

async fn create(client: &Client, name: &str, spec: Value) {
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": format!("{GROUP}/v1"), "kind": "Widget",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec
    }))
    .expect("widget");
    widgets(client)
        .create(&PostParams::default(), &object)
        .await
        .expect("create widget");
}

async fn patch_spec(client: &Client, name: &str, spec: Value) {
    support::reconciler::patch_spec(&widgets(client), name, spec).await
}

/// Waits for RolledBack=True and returns the object and how long it took from `since`.
async fn wait_rolled_back(
    client: &Client,
    log: &Path,
    name: &str,
    since: Instant,
) -> (Value, Duration) {
    let object = eventually(&format!("{name} rolled back"), log, || async {
        let o = get(client, name).await;
        condition(&o, "RolledBack")
            .is_some_and(|c| c["status"] == "True")
            .then_some(o)
    })
    .await;
    (object, since.elapsed())
}

async fn rolled_back_events(client: &Client, name: &str) -> i32 {
    Api::<Event>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter(|e| e.reason.as_deref() == Some("RolledBack"))
        .map(|e| e.series.as_ref().map_or(1, |s| s.count))
        .sum()
}

async fn delete_and_wait_gone(client: &Client, log: &Path, name: &str) {
    widgets(client)
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete widget");
    eventually(&format!("{name} deleted"), log, || async {
        widgets(client)
            .get_opt(name)
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
}

fn bad(image: &str) -> bool {
    image.contains("broken")
}

/// The Widget operator, as the test plays it: it reports `Available` (True unless the image is
/// broken) and `Degraded` (True when it is) for the current generation, and keeps a StatefulSet
/// per widget that asks for replicas, its Pods `bad` while the image is broken.
async fn operate(client: Client) {
    let sets = Api::<StatefulSet>::namespaced(client.clone(), NS);
    let apply = PatchParams::apply("e2e-widget-operator").force();
    loop {
        if let Ok(list) = widgets(&client).list(&ListParams::default()).await {
            for widget in list.items {
                if widget.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let name = widget.name_any();
                let image = widget.data["spec"]["image"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let broken = bad(&image);
                let generation = widget.metadata.generation.unwrap_or(0);
                // Unchanged conditions keep their time, so an unchanged report writes nothing.
                let since = widget
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string());
                let status = json!({
                    "apiVersion": format!("{GROUP}/v1"), "kind": "Widget",
                    "metadata": {"name": name},
                    "status": {"conditions": [
                        {"type": "Available", "status": if broken { "False" } else { "True" },
                         "observedGeneration": generation, "reason": "Observed", "message": image,
                         "lastTransitionTime": since},
                        {"type": "Degraded", "status": if broken { "True" } else { "False" },
                         "observedGeneration": generation, "reason": "Observed",
                         "message": if broken { "the image does not start" } else { "" },
                         "lastTransitionTime": since}]}
                });
                let _ = widgets(&client)
                    .patch_status(&name, &apply, &Patch::Apply(&status))
                    .await;
                let Some(replicas) = widget.data["spec"]["replicas"].as_i64() else {
                    continue;
                };
                let set = json!({
                    "apiVersion": "apps/v1", "kind": "StatefulSet",
                    "metadata": {"name": name, "namespace": NS, "ownerReferences": [{
                        "apiVersion": format!("{GROUP}/v1"), "kind": "Widget",
                        "name": name, "uid": widget.uid(), "controller": true}]},
                    "spec": {
                        "replicas": replicas,
                        "serviceName": name,
                        "podManagementPolicy": "Parallel",
                        "selector": {"matchLabels": {"sts": name}},
                        "template": {
                            "metadata": {
                                "labels": {"sts": name, "health": if broken { "bad" } else { "good" }},
                                "annotations": {"e2e/image": image}
                            },
                            "spec": {"automountServiceAccountToken": false,
                                     "containers": [{"name": "widget", "image": "example.invalid/widget:1"}]}
                        }
                    }
                });
                let _ = sets.patch(&name, &apply, &Patch::Apply(&set)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The policy files: the shipped PaymentGateway policy (its rollout section keeps the reconciler
/// busy from the start) and a Widget policy without one.
fn initial_policies(dir: &Path) -> PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).expect("policies dir");
    std::fs::copy(
        support::repo_path("policies/paymentgateway.yaml"),
        policies.join("paymentgateway.yaml"),
    )
    .expect("copy policy");
    write_policy(&policies, &widget_policy(""));
    policies
}

/// `/readyz` once the reconciler runs exactly `kinds` from a set other than `previous`.
async fn wait_set(reconciler: &Reconciler, previous: &str, kinds: &[&str]) -> Value {
    eventually(
        &format!("the policy set with {kinds:?} in force"),
        &reconciler.log,
        || async {
            let (code, body) = reconciler.probe("/readyz").await?;
            let body: Value = serde_json::from_str(&body).ok()?;
            let in_force = body["policies"]["inForce"].as_str()?;
            let running: Vec<&str> = body["kinds"]
                .as_object()?
                .iter()
                .filter(|(_, s)| s["state"] == "running")
                .map(|(k, _)| k.as_str())
                .collect();
            (code == 200 && in_force != previous && running == kinds).then_some(body)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_health_rule_drives_a_rollback_and_arrives_by_reload() {
    let Some(mut cluster) = Cluster::start().await else {
        return;
    };
    if !cluster.start_controller_manager() {
        return;
    }
    let client = cluster.client.clone();
    support::create_namespace(&client, NS).await;
    let _ = Api::<ServiceAccount>::namespaced(client.clone(), NS)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "default"}})).expect("sa"),
        )
        .await;
    support::install_example_crd(&client, NS).await;
    install_widget_crd(&client).await;
    let policies = initial_policies(cluster.dir.path());
    let reconciler = Reconciler::start(
        &cluster,
        &policies,
        "rules",
        ("tollgate-rules", NS),
        &["--reload-interval", "1"],
    );
    let log = reconciler.log.clone();
    let first = wait_set(&reconciler, "", &["PaymentGateway.payments.example.com"]).await;
    let mut in_force = first["policies"]["inForce"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let operator = tokio::spawn(operate(client.clone()));
    let pods = tokio::spawn(kubelet(
        Api::<Pod>::namespaced(client.clone(), NS),
        BadPods::Fail,
    ));
    let both = [
        "PaymentGateway.payments.example.com",
        "Widget.rollout.e2e.example.com",
    ];

    // Added: a `condition` rule. Degraded=True fails the health check before the deadline.
    write_policy(
        &policies,
        &widget_policy(&rollout(
            "condition: {type: Available, failureTypes: [Degraded]}",
            60,
        )),
    );
    in_force = set_digest(&wait_set(&reconciler, &in_force, &both).await);
    create(&client, "w-cond", json!({"image": "good:1"})).await;
    wait_phase(&client, &log, "w-cond", "Ready").await;
    let changed = Instant::now();
    patch_spec(&client, "w-cond", json!({"image": "broken:2"})).await;
    let (rolled, took) = wait_rolled_back(&client, &log, "w-cond", changed).await;
    assert!(
        took < Duration::from_secs(30),
        "a Degraded condition must not wait for the 60 s deadline ({took:?})"
    );
    assert_eq!(rolled["spec"]["image"], "good:1");
    wait_phase(&client, &log, "w-cond", "Ready").await;
    assert_eq!(rolled_back_events(&client, "w-cond").await, 1);
    delete_and_wait_gone(&client, &log, "w-cond").await;

    // Changed to a `pods` rule: asking for more Ready Pods than there are never becomes healthy
    // and is rolled back once the deadline passes.
    write_policy(
        &policies,
        &widget_policy(&rollout(
            "pods: {selectorFrom: spec.selector, minReadyFrom: spec.minReady}",
            8,
        )),
    );
    in_force = set_digest(&wait_set(&reconciler, &in_force, &both).await);
    for i in 0..2 {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("w-pods-{i}"), "labels": {"widget": "w-pods", "health": "good"}},
            "spec": {"automountServiceAccountToken": false,
                     "containers": [{"name": "widget", "image": "example.invalid/widget:1"}]}
        }))
        .expect("pod");
        Api::<Pod>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
    }
    create(
        &client,
        "w-pods",
        json!({"image": "good:1", "selector": {"matchLabels": {"widget": "w-pods"}}, "minReady": 2}),
    )
    .await;
    let ready = wait_phase(&client, &log, "w-pods", "Ready").await;
    assert!(
        condition(&ready, "Ready")
            .is_some_and(|c| c["message"].as_str().is_some_and(|m| m.contains("2 of 2"))),
        "{ready}"
    );
    let changed = Instant::now();
    patch_spec(&client, "w-pods", json!({"minReady": 3})).await;
    let (rolled, took) = wait_rolled_back(&client, &log, "w-pods", changed).await;
    assert!(
        took >= Duration::from_secs(7),
        "rolled back after {took:?}, before the deadline"
    );
    assert_eq!(rolled["spec"]["minReady"], 2);
    wait_phase(&client, &log, "w-pods", "Ready").await;
    assert_eq!(rolled_back_events(&client, "w-pods").await, 1);
    delete_and_wait_gone(&client, &log, "w-pods").await;

    // A set that does not load is refused whole: the pods rule stays in force, and both the
    // probe and the metrics say so.
    write_policy(
        &policies,
        &widget_policy(&rollout(
            "pods: {selectorFrom: spec.selector}\n      condition: {type: Available}",
            8,
        )),
    );
    let refused = eventually("the broken set refused", &log, || async {
        let (_, body) = reconciler.probe("/readyz").await?;
        let body: Value = serde_json::from_str(&body).ok()?;
        body["policies"]["rejected"].is_string().then_some(body)
    })
    .await;
    assert_eq!(
        refused["policies"]["inForce"],
        in_force.as_str(),
        "{refused}"
    );
    assert!(
        refused["policies"]["rejected"]
            .as_str()
            .is_some_and(|r| r.contains("widget.yaml")
                && r.contains("exactly one of workload, pods or condition")),
        "{refused}"
    );
    let (_, metrics) = reconciler.probe("/metrics").await.expect("metrics");
    assert!(
        metrics.contains(r#"tollgate_reconciler_policy_reloads_total{result="rejected"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            r#"tollgate_reconciler_policy_set_info{{digest="{in_force}"}} 1"#
        )),
        "{metrics}"
    );

    // Changed to a StatefulSet `workload` rule: a broken image's Pods never become Ready, the
    // deadline passes, the image is restored and the StatefulSet comes back.
    write_policy(
        &policies,
        &widget_policy(&rollout(
            "workload: {kind: StatefulSet, nameFrom: metadata.name}",
            8,
        )),
    );
    in_force = set_digest(&wait_set(&reconciler, &in_force, &both).await);
    create(&client, "w-sts", json!({"image": "good:1", "replicas": 2})).await;
    let ready = wait_phase(&client, &log, "w-sts", "Ready").await;
    assert!(
        condition(&ready, "Ready").is_some_and(|c| c["message"]
            .as_str()
            .is_some_and(|m| m.contains("StatefulSet w-sts"))),
        "{ready}"
    );
    let changed = Instant::now();
    patch_spec(&client, "w-sts", json!({"image": "broken:2"})).await;
    let (rolled, took) = wait_rolled_back(&client, &log, "w-sts", changed).await;
    assert!(
        took >= Duration::from_secs(7),
        "rolled back after {took:?}, before the deadline"
    );
    assert_eq!(rolled["spec"]["image"], "good:1");
    wait_phase(&client, &log, "w-sts", "Ready").await;
    assert_eq!(rolled_back_events(&client, "w-sts").await, 1);

    // Removed: the kind is no longer reconciled and its objects lose tollgate's finalizer, so
    // deleting one does not wait for a controller that is gone.
    write_policy(&policies, &widget_policy(""));
    wait_set(
        &reconciler,
        &in_force,
        &["PaymentGateway.payments.example.com"],
    )
    .await;
    eventually("w-sts released", &log, || async {
        let o = get(&client, "w-sts").await;
        (!o["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("tollgate.dev/revisions"))))
        .then_some(())
    })
    .await;
    delete_and_wait_gone(&client, &log, "w-sts").await;
    operator.abort();
    pods.abort();
}

fn set_digest(readyz: &Value) -> String {
    readyz["policies"]["inForce"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
