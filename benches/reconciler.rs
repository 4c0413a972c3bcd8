//! Reconciler at scale against the real kube-apiserver (the e2e harness): 1000 objects of one
//! kind. Prints the time to the first full sync, the reconciler's memory, and the latency of one
//! change. Needs `tests/e2e/build-binaries.sh` and a release build of tollgate:
//!
//!   cargo build --release && cargo bench --bench reconciler
//!
//! Health is the `condition` rule (the bench writes `Available=True` as the resource's operator
//! would), so no Deployments or controller-manager are involved: what is measured is tollgate.

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::cluster::Cluster;

const OBJECTS: usize = 1000;
const NS: &str = "bench";
const DEADLINE_SECONDS: u64 = 10;

fn gateways(client: &kube::Client) -> Api<DynamicObject> {
    support::payment_gateways(client, NS)
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

fn memory_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let binary = support::repo_path("target/release/tollgate");
    if !binary.exists() {
        eprintln!(
            "SKIPPED: {} not built (cargo build --release)",
            binary.display()
        );
        return;
    }
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let client = cluster.client.clone();
    support::create_namespace(&client, NS).await;
    support::install_example_crd(&client, NS).await;
    let api = gateways(&client);

    let created = Instant::now();
    stream::iter(0..OBJECTS)
        .for_each_concurrent(16, |i| {
            let api = api.clone();
            async move {
                let name = format!("gw-{i:04}");
                let object: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "payments.example.com/v1", "kind": "PaymentGateway",
                    "metadata": {"name": name, "namespace": NS},
                    "spec": {"provider": "stripe", "endpoint": "https://pay.example.com",
                             "credentialsSecretRef": {"name": "keys"}, "replicas": 2, "timeoutSeconds": 30}
                }))
                .expect("object");
                api.create(&PostParams::default(), &object).await.expect("create");
                set_available(&api, &name, 1).await;
            }
        })
        .await;
    println!(
        "created {OBJECTS} PaymentGateways with Available=True in {:.1}s",
        created.elapsed().as_secs_f64()
    );

    let log = cluster.dir.path().join("bench-reconciler.log");
    let out = std::fs::File::create(&log).expect("log");
    let policies = bench_policy(cluster.dir.path());
    let started = Instant::now();
    let mut child = Command::new(&binary)
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
        if ready == OBJECTS {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            panic!("only {ready} of {OBJECTS} Ready after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let sync = started.elapsed();
    let rss_after_sync = memory_kib(pid, "VmRSS:");
    println!(
        "first full sync: {OBJECTS} objects Ready (revision recorded, finalizer added, status applied) in {:.1}s ({:.1} ms/object)",
        sync.as_secs_f64(),
        sync.as_secs_f64() * 1000.0 / OBJECTS as f64
    );

    // One change at a time: how long until the reconciler has recorded it (revision 2, Progressing),
    // and until it calls it Ready (includes the settle time of 1 s).
    let mut recorded = Vec::new();
    let mut ready = Vec::new();
    for round in 0..5 {
        let name = format!("gw-{:04}", round * 97);
        let changed = Instant::now();
        api.patch(
            name.as_str(),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"timeoutSeconds": 40}})),
        )
        .await
        .expect("change");
        set_available(&api, &name, 2).await;
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
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "one change, median of 5: recorded as revision 2 in {:.0} ms; Ready in {:.0} ms (settle time 1000 ms included)",
        ms(recorded[2]),
        ms(ready[2])
    );
    let peak = memory_kib(pid, "VmHWM:");
    println!(
        "reconciler memory: RSS {:.1} MiB after the sync, peak {:.1} MiB",
        rss_after_sync as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    let _ = child.kill();
    let _ = child.wait();
}
