//! The audit at scale against the real kube-apiserver (the e2e harness): 3000 and 10,000 stored
//! PaymentGateways over ten namespaces, a third of them invalid under the shipped policy (a
//! retry budget over the timeout, which the CRD lets in), judged by one full pass with
//! OpenReports written. Prints the pass's duration, the audit's peak RSS and the reports' sizes.
//! Needs `tests/e2e/build-binaries.sh` and a release build of tollgate:
//!
//!   cargo build --release && cargo bench --bench audit
//!
//! `TOLLGATE_BENCH_OBJECTS=3000` (a comma list) picks the sizes. Each size gets a fresh
//! apiserver. The pass runs in `--interval` mode so the process is still there to read its peak
//! RSS (`VmHWM`) once the pass is done; its duration is the pass's own (`/metrics`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "shared/procfs.rs"]
mod procfs;
#[path = "shared/sections.rs"]
mod sections;
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use serde_json::json;
use support::cluster::Cluster;

const NAMESPACES: usize = 10;
const CONCURRENCY: usize = 32;

fn namespace(i: usize) -> String {
    format!("audit-{:02}", i % NAMESPACES)
}

async fn create_objects(client: &kube::Client, count: usize) -> Duration {
    let started = Instant::now();
    stream::iter(0..count)
        .for_each_concurrent(CONCURRENCY, |i| {
            let api = support::payment_gateways(client, &namespace(i));
            async move {
                // One in three asks for more retry time than its timeout allows.
                let (attempts, backoff) = if i % 3 == 0 { (10, 10) } else { (3, 5) };
                let object: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "payments.example.com/v1", "kind": "PaymentGateway",
                    "metadata": {"name": format!("gw-{i:05}"), "namespace": namespace(i)},
                    "spec": {"provider": "stripe", "endpoint": "https://pay.example.com",
                             "credentialsSecretRef": {"name": "keys"}, "replicas": 2,
                             "timeoutSeconds": 30,
                             "retry": {"maxAttempts": attempts, "backoffSeconds": backoff}}
                }))
                .unwrap();
                api.create(&PostParams::default(), &object)
                    .await
                    .expect("create");
            }
        })
        .await;
    started.elapsed()
}

async fn metric(addr: &str, name: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

struct Row {
    objects: usize,
    pass: f64,
    peak_mib: f64,
    largest_report: usize,
    total_reports: usize,
}

async fn run_size(binary: &Path, count: usize) -> Option<Row> {
    let cluster = Cluster::start().await?;
    let client = cluster.client.clone();
    for i in 0..NAMESPACES {
        support::create_namespace(&client, &namespace(i)).await;
    }
    support::install_example_crd(&client, &namespace(0)).await;
    let crds = std::fs::read_to_string(support::repo_path("deploy/crd-openreports.yaml")).unwrap();
    for document in tollgate_engine::policy::yaml::parse_documents(&crds).unwrap() {
        let crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
            serde_json::from_value(document.value).unwrap();
        Api::all(client.clone())
            .create(&PostParams::default(), &crd)
            .await
            .expect("OpenReports CRD");
    }
    let took = create_objects(&client, count).await;
    println!(
        "[{count}] stored {count} PaymentGateways in {NAMESPACES} namespaces in {:.1}s",
        took.as_secs_f64()
    );

    let addr = format!("127.0.0.1:{}", support::cluster::free_port());
    let log = cluster.dir.path().join("bench-audit.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(binary)
        .args([
            "audit",
            "--write-reports",
            "--interval",
            "1h",
            "--metrics-addr",
            &addr,
        ])
        .arg("--policies")
        .arg(support::repo_path("policies"))
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("audit");
    let pid = child.id();
    let started = Instant::now();
    let passes = "tollgate_audit_passes_total{outcome=\"ok\"}";
    while metric(&addr, passes).await.unwrap_or(0.0) < 1.0 {
        if started.elapsed() > Duration::from_secs(900) {
            panic!(
                "no pass after 15 minutes: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let peak_mib = procfs::rss_mib(pid).map_or(0.0, |(_, peak)| peak);
    let pass = metric(&addr, "tollgate_audit_pass_duration_seconds_sum")
        .await
        .unwrap_or(0.0);
    let _ = child.kill();
    let _ = child.wait();

    let gvk = GroupVersionKind::gvk("openreports.io", "v1alpha1", "Report");
    let reports: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&gvk, "reports"),
    );
    let list = reports.list(&Default::default()).await.expect("reports");
    let sizes: Vec<usize> = list
        .items
        .iter()
        .map(|r| serde_json::to_vec(r).unwrap().len())
        .collect();
    let fails: i64 = list
        .items
        .iter()
        .map(|r| r.data["summary"]["fail"].as_i64().unwrap_or(0))
        .sum();
    println!(
        "[{count}] one pass with {} reports written: {pass:.1}s, peak RSS {:.1} MiB, {fails} failing results, largest report {} KiB",
        sizes.len(),
        peak_mib,
        sizes.iter().max().copied().unwrap_or(0) / 1024
    );
    assert_eq!(
        fails as usize,
        count.div_ceil(3),
        "every invalid object is found"
    );
    Some(Row {
        objects: count,
        pass,
        peak_mib,
        largest_report: sizes.iter().max().copied().unwrap_or(0),
        total_reports: sizes.iter().sum(),
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(binary) = support::release_binary() else {
        return;
    };
    let sizes: Vec<usize> = std::env::var("TOLLGATE_BENCH_OBJECTS")
        .unwrap_or_else(|_| "3000,10000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let mut rows = Vec::new();
    for &count in &sizes {
        match run_size(&binary, count).await {
            Some(row) => rows.push(row),
            None => return,
        }
    }
    let mut table = String::from(
        "| objects | one pass, reports written (target: 3000 ≤ 60 s; 10,000 ≤ 3.5× that) | peak RSS (target ≤ 96 MiB) | largest report | all reports |\n|---:|---:|---:|---:|---:|\n",
    );
    for row in &rows {
        table.push_str(&format!(
            "| {} | {:.1} s | {:.1} MiB | {} KiB | {} KiB |\n",
            row.objects,
            row.pass,
            row.peak_mib,
            row.largest_report / 1024,
            row.total_reports / 1024
        ));
    }
    println!();
    println!("{table}");
    let date = sections::utc_now();
    let section = format!(
        "## Audit\n\nWritten by `cargo bench --bench audit` ({date}): one full pass of `tollgate audit --write-reports` over stored PaymentGateways in {NAMESPACES} namespaces, a third of them invalid, against the harness's kube-apiserver on the same machine.\n\n{table}"
    );
    if let Err(e) = sections::replace(&support::repo_path("BENCHMARKS.md"), "audit", &section) {
        eprintln!("cannot write BENCHMARKS.md: {e}");
    }
}
