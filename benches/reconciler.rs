//! Reconciler at scale against the real kube-apiserver (the e2e harness): the first full sync of
//! 1000 and of 5000 objects of one kind, against a floor, with the reconciler's memory, and the
//! latency of one change. Needs `tests/e2e/build-binaries.sh` and a release build of tollgate:
//!
//!   cargo build --release && cargo bench --bench reconciler
//!
//! `TOLLGATE_BENCH_OBJECTS=1000` (a comma list) picks the sizes. Each size gets a fresh apiserver.
//!
//! Health is the `condition` rule (the bench writes `Available=True` as the resource's operator
//! would), so no Deployments or controller-manager are involved: what is measured is tollgate.
//!
//! The floor is a plain client making the writes a first sync cannot avoid for a healthy object —
//! finalizer, revision created, status Progressing, revision marked healthy, status Ready — with
//! the same bodies, at the reconciler's concurrency (16), on a second set of as many objects in
//! the same apiserver once the reconciler has stopped. Whatever the reconciler spends above it
//! (its reads, watches, the settle time) is its own overhead.

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "shared/procfs.rs"]
mod procfs;
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::cluster::Cluster;
use tollgate_reconciler::revisions::{self, Outcome, RevisionRecord};

/// The reconciler's objects at once per kind (`CONCURRENCY` in the controller).
const CONCURRENCY: usize = 16;
const NS: &str = "bench";
const FLOOR_NS: &str = "bench-floor";
const DEADLINE_SECONDS: u64 = 10;

fn gateways(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    support::payment_gateways(client, namespace)
}

fn bench_policy(dir: &Path) -> std::path::PathBuf {
    let policies = dir.join("bench-policies");
    std::fs::create_dir_all(&policies).expect("dir");
    let text = std::fs::read_to_string(support::repo_path("policies/paymentgateway.yaml"))
        .expect("policy");
    let text = text
        .replace(
            "workload: {kind: Deployment, nameFrom: metadata.name}",
            "condition: {type: Available, failureTypes: [Degraded]}",
        )
        .replace(
            "progressDeadlineSeconds: 600",
            &format!("progressDeadlineSeconds: {DEADLINE_SECONDS}"),
        );
    std::fs::write(policies.join("paymentgateway.yaml"), text).expect("write");
    policies
}

async fn count_ready(api: &Api<DynamicObject>) -> usize {
    let list = api.list(&ListParams::default()).await.expect("list");
    list.items
        .iter()
        .filter(|o| o.data.pointer("/status/phase").and_then(Value::as_str) == Some("Ready"))
        .count()
}

async fn set_available(api: &Api<DynamicObject>, name: &str, generation: i64) {
    // Server-side apply, as an operator sharing the map-keyed conditions list would.
    let status = json!({"apiVersion": "payments.example.com/v1", "kind": "PaymentGateway",
        "metadata": {"name": name},
        "status": {"conditions": [{"type": "Available", "status": "True",
        "reason": "Serving", "message": "", "observedGeneration": generation,
        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    api.patch_status(
        name,
        &PatchParams::apply("bench-operator").force(),
        &Patch::Apply(&status),
    )
    .await
    .expect("status");
}

/// Creates `count` healthy PaymentGateways (Available=True, as their operator would report).
async fn create_objects(api: &Api<DynamicObject>, namespace: &str, count: usize) -> Duration {
    let created = Instant::now();
    stream::iter(0..count)
        .for_each_concurrent(CONCURRENCY, |i| {
            let api = api.clone();
            async move {
                let name = format!("gw-{i:05}");
                let object: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "payments.example.com/v1", "kind": "PaymentGateway",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {"provider": "stripe", "endpoint": "https://pay.example.com",
                             "credentialsSecretRef": {"name": "keys"}, "replicas": 2, "timeoutSeconds": 30}
                }))
                .expect("object");
                api.create(&PostParams::default(), &object).await.expect("create");
                set_available(&api, &name, 1).await;
            }
        })
        .await;
    created.elapsed()
}

/// tollgate's status as the reconciler applies it, in `phase`.
fn status_apply(name: &str, phase: &str, ready: bool) -> Value {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let condition = |type_: &str, status: bool, reason: &str, message: &str| {
        json!({"type": type_, "status": if status { "True" } else { "False" }, "reason": reason,
               "message": message, "observedGeneration": 1, "lastTransitionTime": now})
    };
    json!({"apiVersion": "payments.example.com/v1", "kind": "PaymentGateway",
        "metadata": {"name": name},
        "status": {"observedGeneration": 1, "phase": phase, "currentRevision": 1,
            "conditions": [
                condition("Ready", ready, if ready { "Healthy" } else { "Progressing" }, "condition Available is True"),
                condition("Progressing", !ready, if ready { "Complete" } else { "Progressing" }, "revision 1"),
                condition("RolledBack", false, "NoRollback", "")]}})
}

/// The floor: the five writes of a healthy object's first sync, by a plain client, `CONCURRENCY`
/// objects at once.
async fn floor(client: &kube::Client, count: usize) -> Duration {
    let api = gateways(client, FLOOR_NS);
    let revisions_api: Api<ControllerRevision> = Api::namespaced(client.clone(), FLOOR_NS);
    let started = Instant::now();
    stream::iter(0..count)
        .for_each_concurrent(CONCURRENCY, |i| {
            let api = api.clone();
            let revisions_api = revisions_api.clone();
            async move {
                let name = format!("gw-{i:05}");
                let object = api.get(&name).await.expect("get");
                let finalizers = json!({"metadata": {"resourceVersion": object.resource_version(),
                    "finalizers": ["tollgate.dev/revisions"]}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&finalizers))
                    .await
                    .expect("finalizer");
                let spec = object.data["spec"].clone();
                let hash = revisions::spec_hash(&spec);
                let mut record = RevisionRecord {
                    name: revisions::revision_name(&name, &hash),
                    number: 1,
                    hash,
                    spec,
                    started_at: k8s_openapi::jiff::Timestamp::now(),
                    outcome: Outcome::Pending,
                    failure: None,
                    failure_reason: None,
                    restore: None,
                    rollback_denied: None,
                };
                let owner = OwnerReference {
                    api_version: "payments.example.com/v1".into(),
                    kind: "PaymentGateway".into(),
                    name: name.clone(),
                    uid: object.uid().unwrap_or_default(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                };
                revisions_api
                    .create(
                        &PostParams::default(),
                        &record.to_controller_revision(FLOOR_NS, owner),
                    )
                    .await
                    .expect("revision");
                let apply = PatchParams::apply("tollgate").force();
                api.patch_status(
                    &name,
                    &apply,
                    &Patch::Apply(status_apply(&name, "Progressing", false)),
                )
                .await
                .expect("status");
                record.outcome = Outcome::Healthy;
                let healthy =
                    json!({"metadata": {"annotations": record.bookkeeping()}, "revision": 1});
                revisions_api
                    .patch(
                        &record.name,
                        &PatchParams::default(),
                        &Patch::Merge(&healthy),
                    )
                    .await
                    .expect("revision healthy");
                api.patch_status(
                    &name,
                    &apply,
                    &Patch::Apply(status_apply(&name, "Ready", true)),
                )
                .await
                .expect("status");
            }
        })
        .await;
    started.elapsed()
}

/// One change at a time, median of 5: how long until the reconciler has recorded it (revision 2,
/// Progressing), and until it calls it Ready (includes the settle time of 1 s).
async fn change_latency(api: &Api<DynamicObject>, count: usize) -> (Duration, Duration) {
    let mut recorded = Vec::new();
    let mut ready = Vec::new();
    for round in 0..5 {
        let name = format!("gw-{:05}", (round * 97) % count);
        let changed = Instant::now();
        api.patch(
            name.as_str(),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"timeoutSeconds": 40}})),
        )
        .await
        .expect("change");
        set_available(api, &name, 2).await;
        let mut seen_recorded = None;
        loop {
            let o = api.get(&name).await.expect("get");
            let revision = o
                .data
                .pointer("/status/currentRevision")
                .and_then(Value::as_i64);
            if revision == Some(2) && seen_recorded.is_none() {
                seen_recorded = Some(changed.elapsed());
            }
            if revision == Some(2)
                && o.data.pointer("/status/phase").and_then(Value::as_str) == Some("Ready")
            {
                ready.push(changed.elapsed());
                break;
            }
            assert!(
                changed.elapsed() < Duration::from_secs(60),
                "change never reconciled"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        recorded.push(seen_recorded.unwrap_or_default());
    }
    recorded.sort();
    ready.sort();
    (recorded[2], ready[2])
}

/// The apiserver's count of requests so far, by verb and resource (its own /metrics), so a phase's
/// requests are the difference of two readings.
async fn requests(client: &kube::Client) -> std::collections::BTreeMap<String, f64> {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    let text = client.request_text(request).await.unwrap_or_default();
    let mut counts = std::collections::BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let label = |name: &str| line.split(&format!("{name}=\"")).nth(1)?.split('"').next();
        let (Some(verb), Some(resource), Some(value)) = (
            label("verb"),
            label("resource"),
            line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()),
        ) else {
            continue;
        };
        if matches!(resource, "paymentgateways" | "controllerrevisions") {
            *counts.entry(format!("{verb} {resource}")).or_default() += value;
        }
    }
    counts
}

fn per_object(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
    count: usize,
) -> String {
    after
        .iter()
        .filter_map(|(k, v)| {
            let delta = v - before.get(k).copied().unwrap_or(0.0);
            (delta >= 1.0).then(|| format!("{k} {:.2}", delta / count as f64))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

struct Row {
    objects: usize,
    sync: Duration,
    floor: Duration,
    rss_after_sync_mib: f64,
    peak_mib: f64,
}

async fn run_size(binary: &Path, count: usize, measure_change: bool) -> Option<Row> {
    let cluster = Cluster::start().await?;
    let client = cluster.client.clone();
    support::create_namespace(&client, NS).await;
    support::create_namespace(&client, FLOOR_NS).await;
    support::install_example_crd(&client, NS).await;
    let api = gateways(&client, NS);
    let took = create_objects(&api, NS, count).await;
    println!(
        "[{count}] created {count} PaymentGateways with Available=True in {:.1}s",
        took.as_secs_f64()
    );

    let log = cluster.dir.path().join("bench-reconciler.log");
    let out = std::fs::File::create(&log).expect("log");
    let policies = bench_policy(cluster.dir.path());
    let before = requests(&client).await;
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args(["reconcile", "--no-leader-election", "--policies"])
        .arg(&policies)
        .args([
            "--metrics-addr",
            &format!("127.0.0.1:{}", support::cluster::free_port()),
        ])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("reconciler");
    let pid = child.id();
    loop {
        let ready = count_ready(&api).await;
        if ready == count {
            break;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            panic!("only {ready} of {count} Ready after 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let sync = started.elapsed();
    let after = requests(&client).await;
    let rss_after_sync_mib = procfs::rss_mib(pid).map_or(0.0, |(rss, _)| rss);
    println!(
        "[{count}] first full sync: every object Ready (revision recorded, finalizer added, status applied) in {:.1}s ({:.1} ms/object)",
        sync.as_secs_f64(),
        sync.as_secs_f64() * 1000.0 / count as f64
    );
    println!(
        "[{count}] apiserver requests per object during the sync (the bench's own polling lists included): {}",
        per_object(&before, &after, count)
    );
    if measure_change {
        let (recorded, ready) = change_latency(&api, count).await;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "[{count}] one change, median of 5: recorded as revision 2 in {:.0} ms; Ready in {:.0} ms (settle time 1000 ms included)",
            ms(recorded),
            ms(ready)
        );
    }
    let peak_mib = procfs::rss_mib(pid).map_or(0.0, |(_, peak)| peak);
    let _ = child.kill();
    let _ = child.wait();
    let failed = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("reconcile failed"))
        .count();
    println!("[{count}] reconciles that failed and were retried: {failed}");

    create_objects(&gateways(&client, FLOOR_NS), FLOOR_NS, count).await;
    let before = requests(&client).await;
    let floor = floor(&client, count).await;
    println!(
        "[{count}] floor requests per object: {}",
        per_object(&before, &requests(&client).await, count)
    );
    println!(
        "[{count}] floor: the same writes by a plain client in {:.1}s",
        floor.as_secs_f64()
    );
    Some(Row {
        objects: count,
        sync,
        floor,
        rss_after_sync_mib,
        peak_mib,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(binary) = support::release_binary() else {
        return;
    };
    let sizes: Vec<usize> = std::env::var("TOLLGATE_BENCH_OBJECTS")
        .unwrap_or_else(|_| "1000,5000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let mut rows = Vec::new();
    for (i, &count) in sizes.iter().enumerate() {
        match run_size(&binary, count, i == 0).await {
            Some(row) => rows.push(row),
            None => return,
        }
    }
    println!();
    println!(
        "| objects | first full sync | floor (same writes, {CONCURRENCY} at once) | sync / floor (target ≤ 1.5) | RSS after sync | peak RSS (target ≤ 96 MiB) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {:.1} s | {:.1} s | {:.2} | {:.1} MiB | {:.1} MiB |",
            row.objects,
            row.sync.as_secs_f64(),
            row.floor.as_secs_f64(),
            row.sync.as_secs_f64() / row.floor.as_secs_f64(),
            row.rss_after_sync_mib,
            row.peak_mib
        );
    }
}
