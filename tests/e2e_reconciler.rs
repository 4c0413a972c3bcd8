//! The reconciler against a real kube-apiserver and kube-controller-manager (built from source,
//! on loopback): status, revisions, automatic and manual rollback, the rules that stop it, the
//! finalizer, and leader election between two `tollgate reconcile` processes.
//!
//! The test plays the two parts a cluster would otherwise need: the PaymentGateway operator (a
//! Deployment per gateway, its template following the gateway's spec) and the kubelet (Pods of
//! a healthy template are marked Ready; Pods of a "broken" one never are).

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed step should fail the test loudly

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::cluster::Cluster;
use support::reconciler::{BadPods, Reconciler, condition, eventually, kubelet, log_tail, phase};

const NS: &str = "gateways";
/// The test policy's progress deadline (the shipped one allows 600 s).
const DEADLINE_SECONDS: u64 = 12;
/// Gateways with this many replicas or more never become healthy (see `operate`).
const SCALE_LIMIT: i64 = 7;
/// Who the harness's kubeconfig authenticates as: the reconciler's identity in these tests.
const ADMIN: &str = "e2e-admin";

fn gateways(client: &Client) -> Api<DynamicObject> {
    support::payment_gateways(client, NS)
}

fn gateway(name: &str, endpoint: &str, annotations: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "payments.example.com/v1",
        "kind": "PaymentGateway",
        "metadata": {"name": name, "namespace": NS, "annotations": annotations},
        "spec": {
            "provider": "stripe",
            "endpoint": endpoint,
            "credentialsSecretRef": {"name": "stripe-keys"},
            "timeoutSeconds": 30,
            "replicas": 2
        }
    }))
    .expect("gateway")
}

async fn get(client: &Client, name: &str) -> Value {
    support::reconciler::get(&gateways(client), name).await
}

async fn wait_phase(client: &Client, log: &Path, name: &str, wanted: &str) -> Value {
    support::reconciler::wait_phase(&gateways(client), log, name, wanted).await
}

async fn revisions(client: &Client, object: &Value) -> Vec<ControllerRevision> {
    let uid = object["metadata"]["uid"].as_str().expect("uid");
    let mut list = Api::<ControllerRevision>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels(&format!("tollgate.dev/owner-uid={uid}")))
        .await
        .expect("list revisions")
        .items;
    list.sort_by_key(|r| r.revision);
    list
}

async fn events(client: &Client, name: &str, reason: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

/// How many times an event happened (the recorder folds repeats into a series).
fn occurrences(events: &[Event]) -> i32 {
    events
        .iter()
        .map(|e| e.series.as_ref().map_or(1, |s| s.count))
        .sum()
}

/// Creates a healthy gateway and waits until the reconciler calls it Ready.
async fn create_ready(client: &Client, log: &Path, object: DynamicObject) -> Value {
    let name = object.name_any();
    gateways(client)
        .create(&PostParams::default(), &object)
        .await
        .expect("create");
    wait_phase(client, log, &name, "Ready").await
}

async fn patch_spec(client: &Client, name: &str, spec: Value) {
    support::reconciler::patch_spec(&gateways(client), name, spec).await
}

async fn annotate(client: &Client, name: &str, annotations: Value) {
    gateways(client)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
        )
        .await
        .expect("annotate");
}

/// Points the gateway at an endpoint whose Pods never become Ready and waits for RolledBack=True.
async fn break_and_wait_for_rollback(client: &Client, log: &Path, name: &str) -> Value {
    patch_spec(
        client,
        name,
        json!({"endpoint": "https://broken.example.com"}),
    )
    .await;
    eventually(&format!("{name} rolled back"), log, || async {
        let o = get(client, name).await;
        (condition(&o, "RolledBack").is_some_and(|c| c["status"] == "True")).then_some(o)
    })
    .await
}

/// The PaymentGateway operator, as the test plays it: one Deployment per gateway, named after
/// it; its Pods are "bad" (never Ready) while the endpoint says `broken`, the gateway carries
/// the `e2e/sick` annotation, or it asks for `SCALE_LIMIT` replicas or more (no capacity).
async fn operate(client: Client) {
    let deployments = Api::<Deployment>::namespaced(client.clone(), NS);
    loop {
        if let Ok(list) = gateways(&client).list(&ListParams::default()).await {
            for gw in list.items {
                if gw.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let value = serde_json::to_value(&gw).unwrap_or_default();
                let name = gw.name_any();
                let annotations = gw.annotations();
                let bad = value
                    .pointer("/spec/endpoint")
                    .and_then(Value::as_str)
                    .is_some_and(|e| e.contains("broken"))
                    || annotations.contains_key("e2e/sick")
                    || value
                        .pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .is_some_and(|r| r >= SCALE_LIMIT);
                let deadline: i64 = annotations
                    .get("e2e/deployment-deadline")
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(600);
                let spec_text = value["spec"].to_string();
                let deployment = json!({
                    "apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": name, "namespace": NS, "ownerReferences": [{
                        "apiVersion": "payments.example.com/v1", "kind": "PaymentGateway",
                        "name": name, "uid": gw.uid(), "controller": true}]},
                    "spec": {
                        "replicas": value.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1),
                        "progressDeadlineSeconds": deadline,
                        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                        "selector": {"matchLabels": {"app": name}},
                        "template": {
                            "metadata": {
                                "labels": {"app": name, "health": if bad { "bad" } else { "good" }},
                                "annotations": {"e2e/spec": spec_text, "e2e/sick": annotations.get("e2e/sick").cloned().unwrap_or_default()}
                            },
                            "spec": {"automountServiceAccountToken": false,
                                     "containers": [{"name": "gateway", "image": "example.invalid/gateway:1"}]}
                        }
                    }
                });
                let _ = deployments
                    .patch(
                        &name,
                        &PatchParams::apply("e2e-operator").force(),
                        &Patch::Apply(&deployment),
                    )
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The shipped policy with a deadline of a few seconds.
fn test_policies(dir: &Path) -> PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).expect("policies dir");
    let text = std::fs::read_to_string(support::repo_path("policies/paymentgateway.yaml"))
        .expect("policy");
    assert!(text.contains("progressDeadlineSeconds: 600"));
    let text = text.replace(
        "progressDeadlineSeconds: 600",
        &format!("progressDeadlineSeconds: {DEADLINE_SECONDS}"),
    );
    std::fs::write(policies.join("paymentgateway.yaml"), text).expect("write policy");
    policies
}

async fn install(client: &Client) {
    support::install_example_crd(client, NS).await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), NS);
    let _ = accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "default"}})).expect("sa"),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciler_keeps_status_and_rolls_back_against_a_real_cluster() {
    let Some(mut cluster) = Cluster::start().await else {
        return;
    };
    if !cluster.start_controller_manager() {
        return;
    }
    let client = cluster.client.clone();
    let policies = test_policies(cluster.dir.path());
    support::create_namespace(&client, NS).await;

    // Started before its CRD exists: reported as not ready, with the reason, and retried.
    let mut single = Reconciler::start(
        &cluster,
        &policies,
        "solo",
        ("tollgate-reconciler", NS),
        &[],
    );
    let log = single.log.clone();
    let (code, body) = eventually("readiness reports the missing CRD", &log, || async {
        single
            .probe("/readyz")
            .await
            .filter(|(_, body)| body.contains("not served"))
    })
    .await;
    assert_eq!(code, 503, "{body}");
    let (_, metrics) = single.probe("/metrics").await.expect("metrics");
    assert!(
        metrics.contains(
            "tollgate_reconciler_kind_missing{kind=\"PaymentGateway.payments.example.com\"} 1"
        ),
        "{metrics}"
    );
    install(&client).await;
    eventually("readiness once the CRD is served", &log, || async {
        single
            .probe("/readyz")
            .await
            .filter(|(code, _)| *code == 200)
    })
    .await;
    let operator = tokio::spawn(operate(client.clone()));
    let pods = tokio::spawn(kubelet(
        Api::<Pod>::namespaced(client.clone(), NS),
        BadPods::StayUnready,
    ));
    let started = Instant::now();
    tokio::join!(
        healthy_create_then_rollback_after_the_deadline(&client, &log),
        failed_health_rolls_back_before_the_deadline(&client, &log),
        manual_rollback_by_annotation(&client, &log),
        auto_rollback_disabled_by_annotation(&client, &log),
        restored_spec_failing_again_is_failed_without_a_loop(&client, &log),
        refused_restore_is_failed_with_the_apiservers_reason(&client, &log),
    );
    eprintln!(
        "single-reconciler scenarios passed in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    single.kill();

    leader_dies_and_the_follower_finishes_the_rollback_once(&cluster, &client, &policies).await;
    serve_with_reconcile_runs_both_in_one_process(&cluster, &client, &policies).await;
    release_finalizers_lets_objects_go_without_a_reconciler(&cluster, &client, &policies).await;
    committed_installation_is_accepted_by_the_apiserver(&client).await;
    the_webhook_admits_the_reconcilers_restore_and_refuses_a_users_drop(
        &cluster, &client, &policies,
    )
    .await;
    operator.abort();
    pods.abort();
}

async fn healthy_create_then_rollback_after_the_deadline(client: &Client, log: &Path) {
    let name = "gw-deadline";
    let ready = create_ready(
        client,
        log,
        gateway(name, "https://pay.example.com", json!({})),
    )
    .await;
    assert_eq!(ready["status"]["currentRevision"], 1);
    assert_eq!(ready["status"]["lastHealthyRevision"], 1);
    assert_eq!(condition(&ready, "Ready").expect("Ready")["status"], "True");
    assert_eq!(
        condition(&ready, "Progressing").expect("Progressing")["reason"],
        "Complete"
    );
    assert_eq!(
        condition(&ready, "RolledBack").expect("RolledBack")["status"],
        "False"
    );
    assert!(
        ready["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("tollgate.dev/revisions")))
    );
    let history = revisions(client, &ready).await;
    assert_eq!(history.len(), 1, "one revision after a healthy create");
    let first = &history[0];
    assert_eq!(first.revision, Some(1));
    assert_eq!(first.data.0, ready["spec"]);
    assert!(
        first
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key("controller-revision-hash"))
    );
    let owner = &first.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("PaymentGateway", Some(true))
    );

    // A change whose Pods never become Ready: rolled back once the deadline passes.
    let changed_at = Instant::now();
    let rolled = break_and_wait_for_rollback(client, log, name).await;
    let waited = changed_at.elapsed();
    assert!(
        waited >= Duration::from_secs(DEADLINE_SECONDS - 1),
        "rolled back after {waited:?}, before the deadline"
    );
    assert_eq!(rolled["spec"]["endpoint"], "https://pay.example.com");
    let message = condition(&rolled, "RolledBack").expect("RolledBack")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("from revision 2 to revision 1"),
        "{message}"
    );
    let ready = wait_phase(client, log, name, "Ready").await;
    assert_eq!(ready["status"]["currentRevision"], 3);
    let history = revisions(client, &ready).await;
    let numbers: Vec<Option<i64>> = history.iter().map(|r| r.revision).collect();
    assert_eq!(
        numbers,
        [Some(2), Some(3)],
        "the restored revision is renumbered, the failed one kept"
    );
    let failed = &history[0];
    assert_eq!(
        failed
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("tollgate.dev/outcome"))
            .map(String::as_str),
        Some("failed")
    );
    assert!(
        !ready["metadata"]["annotations"]
            .as_object()
            .is_some_and(|a| a.contains_key("tollgate.dev/restored"))
    );
    let rolled_back = events(client, name, "RolledBack").await;
    assert_eq!(occurrences(&rolled_back), 1, "{rolled_back:?}");
    let note = rolled_back[0].note.clone().unwrap_or_default();
    assert!(
        note.contains("from revision 2 to revision 1") && note.contains("did not become healthy"),
        "{note}"
    );

    // Deleting the object removes its revisions (the finalizer does it; GC may be absent).
    gateways(client)
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete");
    let uid = ready["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    eventually("gw-deadline and its revisions gone", log, || async {
        let gone = gateways(client).get_opt(name).await.expect("get").is_none();
        let left = Api::<ControllerRevision>::namespaced(client.clone(), NS)
            .list(&ListParams::default().labels(&format!("tollgate.dev/owner-uid={uid}")))
            .await
            .expect("list")
            .items
            .len();
        (gone && left == 0).then_some(())
    })
    .await;
}

async fn failed_health_rolls_back_before_the_deadline(client: &Client, log: &Path) {
    let name = "gw-health";
    create_ready(
        client,
        log,
        gateway(name, "https://pay.example.com", json!({})),
    )
    .await;
    lower_deployment_deadline(client, log, name).await;
    let changed_at = Instant::now();
    let rolled = break_and_wait_for_rollback(client, log, name).await;
    assert!(
        changed_at.elapsed() < Duration::from_secs(DEADLINE_SECONDS),
        "a failed health check must not wait for the deadline ({:?})\n{}",
        changed_at.elapsed(),
        log_tail(log)
    );
    assert_eq!(rolled["spec"]["endpoint"], "https://pay.example.com");
    let history = revisions(client, &rolled).await;
    let failure = history[0]
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("tollgate.dev/failure"))
        .cloned()
        .unwrap_or_default();
    assert!(
        failure.contains("failed its health check") && failure.contains("progress deadline"),
        "{failure}"
    );
}

/// From now on the gateway's Deployment gives up after 2 s without progress: its
/// ProgressDeadlineExceeded is the health check failing.
async fn lower_deployment_deadline(client: &Client, log: &Path, name: &str) {
    annotate(client, name, json!({"e2e/deployment-deadline": "2"})).await;
    eventually("the Deployment's deadline lowered", log, || async {
        let d = Api::<Deployment>::namespaced(client.clone(), NS)
            .get(name)
            .await
            .ok()?;
        (d.spec.progress_deadline_seconds == Some(2)).then_some(())
    })
    .await;
}

async fn manual_rollback_by_annotation(client: &Client, log: &Path) {
    let name = "gw-manual";
    create_ready(
        client,
        log,
        gateway(name, "https://pay.example.com", json!({})),
    )
    .await;
    patch_spec(client, name, json!({"timeoutSeconds": 45})).await;
    let second = eventually("gw-manual revision 2 Ready", log, || async {
        let o = wait_phase(client, log, name, "Ready").await;
        (o["status"]["currentRevision"] == 2).then_some(o)
    })
    .await;
    assert_eq!(second["status"]["lastHealthyRevision"], 2);
    annotate(client, name, json!({"tollgate.dev/rollback-to": "1"})).await;
    let back = eventually("gw-manual rolled back by hand", log, || async {
        let o = get(client, name).await;
        (o["spec"]["timeoutSeconds"] == 30
            && phase(&o) == "Ready"
            && o["status"]["currentRevision"] == 3)
            .then_some(o)
    })
    .await;
    let rolled = condition(&back, "RolledBack").expect("RolledBack");
    assert_eq!(
        (rolled["status"].as_str(), rolled["reason"].as_str()),
        (Some("True"), Some("ManualRollback"))
    );
    assert!(
        !back["metadata"]["annotations"]
            .as_object()
            .is_some_and(|a| a.contains_key("tollgate.dev/rollback-to"))
    );
    assert_eq!(occurrences(&events(client, name, "RolledBack").await), 1);
}

async fn auto_rollback_disabled_by_annotation(client: &Client, log: &Path) {
    let name = "gw-manual-only";
    gateways(client)
        .create(
            &PostParams::default(),
            &gateway(
                name,
                "https://pay.example.com",
                json!({"tollgate.dev/auto-rollback": "false"}),
            ),
        )
        .await
        .expect("create");
    wait_phase(client, log, name, "Ready").await;
    patch_spec(
        client,
        name,
        json!({"endpoint": "https://broken.example.com"}),
    )
    .await;
    let failed = wait_phase(client, log, name, "Failed").await;
    assert_eq!(
        failed["spec"]["endpoint"], "https://broken.example.com",
        "no rollback when disabled"
    );
    let ready = condition(&failed, "Ready").expect("Ready");
    assert_eq!(ready["reason"], "ProgressDeadlineExceeded");
    assert!(
        ready["message"]
            .as_str()
            .is_some_and(|m| m.contains("tollgate.dev/auto-rollback")),
        "{ready}"
    );
    assert!(events(client, name, "RolledBack").await.is_empty());
}

async fn restored_spec_failing_again_is_failed_without_a_loop(client: &Client, log: &Path) {
    let name = "gw-sick";
    create_ready(
        client,
        log,
        gateway(name, "https://pay.example.com", json!({})),
    )
    .await;
    // The environment breaks (every new Pod stays unready) and a change arrives at the same time:
    // the rollback restores the old spec, which cannot become healthy either.
    annotate(client, name, json!({"e2e/sick": "yes"})).await;
    patch_spec(client, name, json!({"timeoutSeconds": 50})).await;
    let failed = wait_phase(client, log, name, "Failed").await;
    assert_eq!(
        failed["spec"]["timeoutSeconds"], 30,
        "the old spec was restored once"
    );
    assert_eq!(
        condition(&failed, "RolledBack").expect("RolledBack")["status"],
        "True"
    );
    let message = condition(&failed, "Ready").expect("Ready")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("does not roll back again"), "{message}");
    // Give a looping reconciler time to misbehave, then check it did not.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = get(client, name).await;
    assert_eq!(
        (phase(&after), &after["spec"]["timeoutSeconds"]),
        ("Failed", &json!(30))
    );
    assert_eq!(occurrences(&events(client, name, "RolledBack").await), 1);
    assert_eq!(revisions(client, &after).await.len(), 2);
}

async fn refused_restore_is_failed_with_the_apiservers_reason(client: &Client, log: &Path) {
    let name = "gw-denied";
    let mut object = gateway(name, "https://pay.example.com", json!({}));
    object.data["spec"]["timeoutSeconds"] = json!(31);
    gateways(client)
        .create(&PostParams::default(), &object)
        .await
        .expect("create");
    wait_phase(client, log, name, "Ready").await;
    // Policies tighten after revision 1 was healthy: its spec may no longer be written.
    let policy: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "e2e-no-31"},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{"apiGroups": ["payments.example.com"], "apiVersions": ["*"],
                                       "operations": ["UPDATE"], "resources": ["paymentgateways"]}]},
                 "validations": [{"expression": "object.metadata.name != 'gw-denied' || object.spec.timeoutSeconds != 31",
                                  "message": "timeoutSeconds 31 is no longer allowed"}]}
    }))
    .expect("policy");
    let binding: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "e2e-no-31"},
        "spec": {"policyName": "e2e-no-31", "validationActions": ["Deny"]}
    }))
    .expect("binding");
    for (object, kind, plural) in [
        (
            policy,
            "ValidatingAdmissionPolicy",
            "validatingadmissionpolicies",
        ),
        (
            binding,
            "ValidatingAdmissionPolicyBinding",
            "validatingadmissionpolicybindings",
        ),
    ] {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind),
            plural,
        );
        Api::<DynamicObject>::all_with(client.clone(), &resource)
            .create(&PostParams::default(), &object)
            .await
            .expect("admission policy");
    }
    // The policy is enforced once the apiserver has compiled it: wait until it refuses.
    eventually("the admission policy enforced", log, || async {
        let attempt = gateways(client)
            .patch(
                name,
                &PatchParams {
                    dry_run: true,
                    ..PatchParams::default()
                },
                &Patch::Merge(json!({"metadata": {"labels": {"probe": "x"}}})),
            )
            .await;
        attempt.is_err().then_some(())
    })
    .await;
    patch_spec(
        client,
        name,
        json!({"timeoutSeconds": 32, "endpoint": "https://broken.example.com"}),
    )
    .await;
    let failed = wait_phase(client, log, name, "Failed").await;
    assert_eq!(
        failed["spec"]["timeoutSeconds"], 32,
        "the refused restore changed nothing"
    );
    let message = condition(&failed, "Ready").expect("Ready")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("the rollback was refused")
            && message.contains("timeoutSeconds 31 is no longer allowed"),
        "{message}"
    );
    assert!(!events(client, name, "RollbackFailed").await.is_empty());
    assert!(events(client, name, "RolledBack").await.is_empty());
}

async fn leader_dies_and_the_follower_finishes_the_rollback_once(
    cluster: &Cluster,
    client: &Client,
    policies: &Path,
) {
    let lease_name = "tollgate-pair";
    let mut first = Reconciler::start(cluster, policies, "first", (lease_name, NS), &[]);
    let holder = || async {
        Api::<Lease>::namespaced(client.clone(), NS)
            .get_opt(lease_name)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
    };
    let first_log = first.log.clone();
    eventually("first reconciler leads", &first_log, || async {
        (holder().await.as_deref() == Some("first")).then_some(())
    })
    .await;
    let mut second = Reconciler::start(cluster, policies, "second", (lease_name, NS), &[]);
    let logs = second.log.clone();

    let name = "gw-leader";
    create_ready(
        client,
        &first_log,
        gateway(name, "https://pay.example.com", json!({})),
    )
    .await;
    patch_spec(
        client,
        name,
        json!({"endpoint": "https://broken.example.com"}),
    )
    .await;
    eventually("revision 2 recorded by the leader", &first_log, || async {
        let o = get(client, name).await;
        (o["status"]["currentRevision"] == 2).then_some(())
    })
    .await;
    // The leader dies mid-rollout, without releasing its lease.
    first.kill();
    let killed_at = Instant::now();
    let rolled = eventually("the follower finishes the rollback", &logs, || async {
        let o = get(client, name).await;
        (phase(&o) == "Ready" && condition(&o, "RolledBack").is_some_and(|c| c["status"] == "True"))
            .then_some(o)
    })
    .await;
    eprintln!(
        "follower took over and rolled back {:.1}s after the leader died",
        killed_at.elapsed().as_secs_f64()
    );
    assert_eq!(holder().await.as_deref(), Some("second"));
    assert_eq!(rolled["spec"]["endpoint"], "https://pay.example.com");
    assert_eq!(
        occurrences(&events(client, name, "RolledBack").await),
        1,
        "exactly one rollback"
    );
    let history = revisions(client, &rolled).await;
    let numbers: Vec<Option<i64>> = history.iter().map(|r| r.revision).collect();
    assert_eq!(numbers, [Some(2), Some(3)]);
    second.kill();
}

/// Every document of deploy/tollgate.yaml (reconciler Deployment, RBAC, webhooks...) passes the
/// apiserver's own validation (server-side dry run; the CRD is already installed).
async fn committed_installation_is_accepted_by_the_apiserver(client: &Client) {
    let text = std::fs::read_to_string(support::repo_path("deploy/tollgate.yaml"))
        .expect("deploy/tollgate.yaml");
    let docs = tollgate_engine::policy::yaml::parse_documents(&text).expect("manifests parse");
    let total = docs.len();
    let mut checked = 0;
    for doc in docs {
        let value = doc.value;
        let kind = value["kind"].as_str().unwrap_or_default().to_string();
        if kind == "CustomResourceDefinition" {
            continue;
        }
        // The namespace is created for real, so the namespaced documents can be dry-run inside it.
        support::create_document(client, &value, kind != "Namespace").await;
        checked += 1;
    }
    assert_eq!(checked, total - 1, "every document but the CRD is checked");
    assert!(checked >= 14, "the installation lost documents: {checked}");
}

/// `tollgate serve --reconcile`: the webhook answers from the start and the reconciler, in the
/// same process, keeps status.
async fn serve_with_reconcile_runs_both_in_one_process(
    cluster: &Cluster,
    client: &Client,
    policies: &Path,
) {
    let log = cluster.dir.path().join("serve-reconcile.log");
    let out = std::fs::File::create(&log).expect("log");
    let port = support::cluster::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "serve",
            "--reconcile",
            "--addr",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--policies")
        .arg(policies)
        .arg("--cert-dir")
        .arg(cluster.dir.path().join("serve-certs"))
        .args([
            "--lease-name",
            "tollgate-serve",
            "--lease-namespace",
            NS,
            "--identity",
            "serve",
        ])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("tollgate serve --reconcile");
    let ca = eventually("serve generated its certificates", &log, || async {
        std::fs::read(cluster.dir.path().join("serve-certs/ca.crt")).ok()
    })
    .await;
    let https =
        support::server::https_client(&ca, format!("127.0.0.1:{port}").parse().expect("addr"))
            .build()
            .expect("client");
    eventually("the webhook answers /readyz", &log, || async {
        let response = https
            .get(format!("https://localhost:{port}/readyz"))
            .send()
            .await
            .ok()?;
        (response.status().as_u16() == 200).then_some(())
    })
    .await;
    let ready = create_ready(
        client,
        &log,
        gateway("gw-serve", "https://pay.example.com", json!({})),
    )
    .await;
    assert_eq!(ready["status"]["currentRevision"], 1);
    let _ = child.kill();
    let _ = child.wait();
}

/// After the reconciler is gone, `tollgate release-finalizers` removes its finalizer from every
/// object, so deleting them does not wait forever.
async fn release_finalizers_lets_objects_go_without_a_reconciler(
    cluster: &Cluster,
    client: &Client,
    policies: &Path,
) {
    let log = cluster.dir.path().join("release.log");
    let held: Vec<String> = gateways(client)
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .filter(|o| o.finalizers().iter().any(|f| f == "tollgate.dev/revisions"))
        .map(|o| o.name_any())
        .collect();
    assert!(
        held.len() >= 3,
        "objects should carry the finalizer: {held:?}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["release-finalizers", "--policies"])
        .arg(policies)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .output()
        .expect("release-finalizers runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("from {} object(s)", held.len())),
        "{stdout}"
    );
    gateways(client)
        .delete("gw-serve", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("gw-serve deleted without a reconciler", &log, || async {
        gateways(client)
            .get_opt("gw-serve")
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
}

/// The harness's client, acting as `user` (the admin may impersonate anyone).
async fn client_as(cluster: &Cluster, user: &str) -> Client {
    let mut kubeconfig =
        kube::config::Kubeconfig::read_from(&cluster.kubeconfig).expect("kubeconfig");
    for auth in &mut kubeconfig.auth_infos {
        if let Some(info) = auth.auth_info.as_mut() {
            info.impersonate = Some(user.to_string());
            info.impersonate_groups = Some(vec!["system:masters".to_string()]);
        }
    }
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

/// `tollgate serve` with `args` as a child process, logging to `<tag>.log`; killed on drop.
struct Served {
    child: std::process::Child,
    log: PathBuf,
}

impl Served {
    fn start(cluster: &Cluster, policies: &Path, tag: &str, args: &[&str]) -> Self {
        let log = cluster.dir.path().join(format!("{tag}.log"));
        let out = std::fs::File::create(&log).expect("log");
        let port = support::cluster::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["serve", "--register", "--restorer", ADMIN])
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .args(["--url", &format!("https://127.0.0.1:{port}")])
            .arg("--policies")
            .arg(policies)
            .arg("--cert-dir")
            .arg(cluster.dir.path().join(format!("{tag}-certs")))
            .args(args)
            .env("KUBECONFIG", &cluster.kubeconfig)
            .env("RUST_LOG", "info,tollgate_reconciler=debug")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("tollgate serve --register");
        Self { child, log }
    }

    /// Waits until the apiserver calls this server: a dry-run create is defaulted by /mutate and
    /// refused by /validate (a registration pointing elsewhere fails or is not there).
    async fn wait_registered(&self, client: &Client) {
        eventually("tollgate's webhooks registered", &self.log, || async {
            let mut probe = gateway("gw-probe", "https://pay.example.com", json!({}));
            let dry_run = PostParams {
                dry_run: true,
                ..PostParams::default()
            };
            let created = gateways(client).create(&dry_run, &probe).await.ok()?;
            let defaulted = created
                .labels()
                .contains_key("app.kubernetes.io/managed-by");
            probe.data["spec"]["provider"] = json!("nope");
            let refused = gateways(client)
                .create(&dry_run, &probe)
                .await
                .is_err_and(|e| e.to_string().contains("spec.provider"));
            (defaulted && refused).then_some(())
        })
        .await;
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Scales `name` from 2 to `SCALE_LIMIT` (never healthy) and waits until it is back at 2 and
/// Ready with `RolledBack`: the restore halves replicas more than the shipped transition rule
/// lets anyone else, so it passes only as the reconciler's restore.
async fn scale_up_and_wait_for_rollback(client: &Client, log: &Path, name: &str) -> Value {
    patch_spec(client, name, json!({"replicas": SCALE_LIMIT})).await;
    let rolled = eventually(
        &format!("{name} rolled back to 2 replicas"),
        log,
        || async {
            let o = get(client, name).await;
            (condition(&o, "RolledBack").is_some_and(|c| c["status"] == "True")).then_some(o)
        },
    )
    .await;
    assert_eq!(rolled["spec"]["replicas"], 2, "{rolled}");
    let ready = wait_phase(client, log, name, "Ready").await;
    assert_eq!(ready["spec"]["replicas"], 2);
    assert!(
        events(client, name, "RollbackFailed").await.is_empty(),
        "{}",
        log_tail(log)
    );
    ready
}

/// tollgate's own webhook registered (`serve --register --reconcile`, the shipped policy, whose
/// transition rule lets replicas at most halve): a scale-up from 2 to 7 that never becomes
/// healthy is rolled back to 2 after the deadline, or before it when the health check fails —
/// the restore comes from the trusted identity with the marker, and is judged on the state it
/// returns to. The same for a manual rollback, and for a new leader finishing the rollback of
/// one that died. The same drop by a user, or by the trusted identity without the marker, or by
/// a user who writes the marker, is refused.
async fn the_webhook_admits_the_reconcilers_restore_and_refuses_a_users_drop(
    cluster: &Cluster,
    client: &Client,
    policies: &Path,
) {
    let served = Served::start(
        cluster,
        policies,
        "serve-coherent",
        &[
            "--reconcile",
            "--lease-name",
            "tollgate-coherent",
            "--lease-namespace",
            NS,
            "--identity",
            "coherent",
        ],
    );
    let log = served.log.clone();
    served.wait_registered(client).await;

    let name = "gw-scale";
    create_ready(
        client,
        &log,
        gateway(name, "https://pay.example.com", json!({})),
    )
    .await;
    scale_up_and_wait_for_rollback(client, &log, name).await;
    assert_eq!(occurrences(&events(client, name, "RolledBack").await), 1);
    // Scaled to 6 (healthy), then rolled back by hand to the 2 of revision 3: the same exemption.
    patch_spec(client, name, json!({"replicas": SCALE_LIMIT - 1})).await;
    eventually("gw-scale at 6 replicas Ready", &log, || async {
        let o = wait_phase(client, &log, name, "Ready").await;
        (o["status"]["currentRevision"] == 4).then_some(())
    })
    .await;
    annotate(client, name, json!({"tollgate.dev/rollback-to": "3"})).await;
    let back = eventually("gw-scale rolled back by hand to 2", &log, || async {
        let o = get(client, name).await;
        (o["spec"]["replicas"] == 2 && phase(&o) == "Ready" && o["status"]["currentRevision"] == 5)
            .then_some(o)
    })
    .await;
    assert_eq!(
        condition(&back, "RolledBack").expect("RolledBack")["status"],
        "True"
    );
    assert!(events(client, name, "RollbackFailed").await.is_empty());

    // The health check fails (the Deployment gives up after 2 s): rolled back before the deadline.
    let name = "gw-scale-health";
    create_ready(
        client,
        &log,
        gateway(name, "https://pay.example.com", json!({})),
    )
    .await;
    lower_deployment_deadline(client, &log, name).await;
    let changed_at = Instant::now();
    let rolled = scale_up_and_wait_for_rollback(client, &log, name).await;
    assert!(
        changed_at.elapsed() < Duration::from_secs(DEADLINE_SECONDS),
        "a failed health check must not wait for the deadline ({:?})",
        changed_at.elapsed(),
    );
    let history = revisions(client, &rolled).await;
    let failed = history
        .iter()
        .filter_map(|r| r.metadata.annotations.as_ref()?.get("tollgate.dev/failure"))
        .collect::<Vec<_>>();
    assert!(
        failed.iter().any(|f| f.contains("failed its health check")),
        "{failed:?}"
    );

    // Never healthy from its creation: nothing to roll back to, so it stays at 8.
    let name = "gw-user";
    let mut big = gateway(name, "https://pay.example.com", json!({}));
    big.data["spec"]["replicas"] = json!(8);
    gateways(client)
        .create(&PostParams::default(), &big)
        .await
        .expect("create");
    let alice = client_as(cluster, "alice").await;
    let marker = json!({"tollgate.dev/restored": "{\"from\":2,\"to\":1,\"manual\":false}"});
    for (who, as_client, annotations) in [
        ("a user", &alice, json!({})),
        ("a user writing the marker", &alice, marker.clone()),
        ("the trusted identity without the marker", client, json!({})),
    ] {
        let refused = gateways(as_client)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": annotations}, "spec": {"replicas": 2}}),
                ),
            )
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            refused.contains("replicas may drop by at most half"),
            "{who}: 8 -> 2 was not refused by the transition rule: {refused:?}\n{}",
            log_tail(&log)
        );
    }
    assert_eq!(get(client, name).await["spec"]["replicas"], 8);
    drop(served);

    the_new_leader_finishes_a_restore_under_the_webhook(cluster, client, policies).await;
}

/// The webhook in its own process (`serve --register`, re-registered at a new address) and two
/// reconcilers sharing a lease: the leader records a scale-up to 7 and dies before the deadline;
/// the new leader restores 2 replicas through the webhook, exactly once.
async fn the_new_leader_finishes_a_restore_under_the_webhook(
    cluster: &Cluster,
    client: &Client,
    policies: &Path,
) {
    let served = Served::start(cluster, policies, "serve-webhook-only", &[]);
    served.wait_registered(client).await;
    let lease = ("tollgate-webhook-pair", NS);
    let mut first = Reconciler::start(cluster, policies, "webhook-first", lease, &[]);
    let first_log = first.log.clone();
    let name = "gw-scale-leader";
    create_ready(
        client,
        &first_log,
        gateway(name, "https://pay.example.com", json!({})),
    )
    .await;
    let second = Reconciler::start(cluster, policies, "webhook-second", lease, &[]);
    patch_spec(client, name, json!({"replicas": SCALE_LIMIT})).await;
    eventually("revision 2 recorded by the leader", &first_log, || async {
        let o = get(client, name).await;
        (o["status"]["currentRevision"] == 2).then_some(())
    })
    .await;
    first.kill();
    let rolled = scale_rollback_finished(client, &second.log, name).await;
    assert_eq!(
        occurrences(&events(client, name, "RolledBack").await),
        1,
        "exactly one rollback\n{}",
        log_tail(&second.log)
    );
    let numbers: Vec<Option<i64>> = revisions(client, &rolled)
        .await
        .iter()
        .map(|r| r.revision)
        .collect();
    assert_eq!(numbers, [Some(2), Some(3)]);
    assert!(events(client, name, "RollbackFailed").await.is_empty());
    drop(served);
}

async fn scale_rollback_finished(client: &Client, log: &Path, name: &str) -> Value {
    eventually(
        &format!("{name} rolled back by the new leader"),
        log,
        || async {
            let o = get(client, name).await;
            (o["spec"]["replicas"] == 2
                && phase(&o) == "Ready"
                && condition(&o, "RolledBack").is_some_and(|c| c["status"] == "True"))
            .then_some(o)
        },
    )
    .await
}
