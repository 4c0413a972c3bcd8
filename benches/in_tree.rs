//! In-tree enforcement against the webhook, through the real kube-apiserver (the e2e harness):
//! the shipped policy enforced by `tollgate serve --register` (the webhook) or by the admission
//! policies `--in-tree` compiles it to, the same PaymentGateways created by `kubectl create
//! --dry-run=server` one request at a time (admitted, defaulted and validated in full, never
//! stored: the apiserver's cost per create does not drift as etcd fills). Prints, per create,
//! the apiserver's CPU (from /proc), the webhook server's CPU where there is one, and the wall
//! time; rounds alternate between the two, and each in-tree round is also compared with the
//! webhook round just before it.
//! Needs `tests/e2e/build-binaries.sh` and a release build of tollgate:
//!
//!   cargo build --release && cargo bench --bench in_tree

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "shared/procfs.rs"]
mod procfs;
#[path = "shared/sections.rs"]
mod sections;
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::cluster::Cluster;

const OBJECTS: usize = 500;
const ROUNDS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Webhook,
    InTree,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Webhook => "webhook",
            Mode::InTree => "in-tree",
        }
    }
}

fn gateways_file(dir: &Path, prefix: &str) -> std::path::PathBuf {
    let docs: Vec<String> = (0..OBJECTS)
        .map(|i| {
            json!({
                "apiVersion": "payments.example.com/v1", "kind": "PaymentGateway",
                "metadata": {"name": format!("{prefix}-{i:04}"), "namespace": "payments"},
                "spec": {"provider": "stripe", "endpoint": "https://pay.example.com",
                         "credentialsSecretRef": {"name": "keys"}, "currencies": ["EUR", "USD"],
                         "retry": {"maxAttempts": 2}, "replicas": 3}
            })
            .to_string()
        })
        .collect();
    let path = dir.join(format!("{prefix}.json"));
    // kubectl reads a stream of JSON documents.
    std::fs::write(&path, docs.join("\n")).unwrap();
    path
}

/// A running `tollgate serve`, stopped when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_tollgate(binary: &Path, cluster: &Cluster, dir: &Path, in_tree: bool) -> Server {
    let port = support::cluster::free_port();
    let log = std::fs::File::create(dir.join(format!("tollgate-{in_tree}.log"))).unwrap();
    let mut command = Command::new(binary);
    command
        .args([
            "serve",
            "--register",
            "--addr",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--url", &format!("https://127.0.0.1:{port}")])
        .arg("--policies")
        .arg(support::repo_path("policies"))
        .arg("--cert-dir")
        .arg(dir.join("certs"));
    if in_tree {
        command.arg("--in-tree");
    }
    Server(
        command
            .env("KUBECONFIG", &cluster.kubeconfig)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("tollgate starts"),
    )
}

/// Waits until creates are defaulted (and, in-tree, until no webhook configuration is left).
async fn until_enforced(cluster: &Cluster, mode: Mode) {
    let api = support::payment_gateways(&cluster.client, "payments");
    let webhooks: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(
        cluster.client.clone(),
        &kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk(
                "admissionregistration.k8s.io",
                "v1",
                "ValidatingWebhookConfiguration",
            ),
            "validatingwebhookconfigurations",
        ),
    );
    let started = Instant::now();
    loop {
        let name = "probe";
        let object: kube::api::DynamicObject = serde_json::from_value(json!({
            "apiVersion": "payments.example.com/v1", "kind": "PaymentGateway",
            "metadata": {"name": name, "namespace": "payments"},
            "spec": {"provider": "stripe", "endpoint": "https://pay.example.com",
                     "credentialsSecretRef": {"name": "keys"}}
        }))
        .unwrap();
        let params = kube::api::PostParams {
            dry_run: true,
            ..Default::default()
        };
        let defaulted = api
            .create(&params, &object)
            .await
            .ok()
            .and_then(|o| o.metadata.labels)
            .is_some_and(|l| l.contains_key("app.kubernetes.io/managed-by"));
        let webhook_left = webhooks.get_opt("tollgate").await.ok().flatten().is_some();
        if defaulted && (mode == Mode::Webhook) == webhook_left {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{} never in force",
            mode.label()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Round {
    mode: Mode,
    apiserver_us: f64,
    webhook_us: f64,
    wall_ms: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(binary) = support::release_binary() else {
        return;
    };
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    support::create_namespace(&cluster.client, "payments").await;
    support::install_example_crd(&cluster.client, "payments").await;
    let dir = tempfile::tempdir().unwrap();
    let apiserver = cluster.apiserver_pid();
    let mut rounds = Vec::new();
    for round in 0..ROUNDS * 2 {
        let mode = if round % 2 == 0 {
            Mode::Webhook
        } else {
            Mode::InTree
        };
        // Registration in the mode wanted; in-tree, tollgate stops once it has registered.
        let tollgate = start_tollgate(&binary, &cluster, dir.path(), mode == Mode::InTree);
        until_enforced(&cluster, mode).await;
        let webhook_pid = tollgate.0.id();
        let serving = match mode {
            Mode::Webhook => Some(tollgate),
            Mode::InTree => {
                drop(tollgate);
                None
            }
        };
        // Let the apiserver settle after the registration churn.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let file = gateways_file(dir.path(), &format!("r{round}"));
        let reading = |pid| procfs::CpuReading::of(pid).expect("CPU time from /proc");
        let (api_before, hook_before) = (reading(apiserver), reading(webhook_pid));
        let started = Instant::now();
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .args(["create", "--dry-run=server", "-o", "name", "-f"])
            .arg(&file)
            .output()
            .expect("kubectl runs");
        let wall = started.elapsed();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let api_used = reading(apiserver).seconds_since(&api_before);
        let hook_used = if serving.is_some() {
            reading(webhook_pid).seconds_since(&hook_before)
        } else {
            0.0
        };
        let per = |seconds: f64| seconds * 1e6 / OBJECTS as f64;
        let row = Round {
            mode,
            apiserver_us: per(api_used),
            webhook_us: per(hook_used),
            wall_ms: wall.as_secs_f64() * 1e3 / OBJECTS as f64,
        };
        println!(
            "round {round} {}: apiserver {:.0} µs/create, webhook server {:.0} µs/create, {:.2} ms/create",
            mode.label(),
            row.apiserver_us,
            row.webhook_us,
            row.wall_ms
        );
        rounds.push(row);
        drop(serving);
    }
    // Median, and the range over the rounds.
    let spread = |mode: Mode, f: fn(&Round) -> f64, digits: usize| {
        let mut values: Vec<f64> = rounds.iter().filter(|r| r.mode == mode).map(f).collect();
        values.sort_by(f64::total_cmp);
        let at = |i: usize| values.get(i).copied().unwrap_or(0.0);
        format!(
            "{:.digits$} ({:.digits$}–{:.digits$})",
            at(values.len() / 2),
            at(0),
            at(values.len().saturating_sub(1))
        )
    };
    let mut table = String::from(
        "| enforcement | apiserver CPU µs per create | webhook server CPU µs per create | apiserver + webhook | wall ms per create (kubectl, sequential) |\n|---|---:|---:|---:|---:|\n",
    );
    for mode in [Mode::Webhook, Mode::InTree] {
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            mode.label(),
            spread(mode, |r| r.apiserver_us, 0),
            spread(mode, |r| r.webhook_us, 0),
            spread(mode, |r| r.apiserver_us + r.webhook_us, 0),
            spread(mode, |r| r.wall_ms, 2)
        ));
    }
    // In-tree minus the webhook round just before it: the machine's drift cancels.
    let mut paired: Vec<f64> = rounds
        .chunks(2)
        .filter_map(|pair| match pair {
            [webhook, in_tree] => {
                Some(in_tree.apiserver_us - (webhook.apiserver_us + webhook.webhook_us))
            }
            _ => None,
        })
        .collect();
    paired.sort_by(f64::total_cmp);
    let paired_median = paired.get(paired.len() / 2).copied().unwrap_or(0.0);
    table.push_str(&format!(
        "\nIn-tree minus the webhook round just before it (apiserver + webhook server CPU per create), median over {} pairs: {:+.0} µs (from {:+.0} to {:+.0}).\n",
        paired.len(),
        paired_median,
        paired.first().copied().unwrap_or(0.0),
        paired.last().copied().unwrap_or(0.0)
    ));
    println!("\n{table}");
    let date = sections::utc_now();
    let section = format!(
        "## In-tree enforcement\n\nWritten by `cargo bench --bench in_tree` ({date}): {OBJECTS} PaymentGateways per round created by `kubectl create --dry-run=server -f` (one request each, never stored) with the shipped policy enforced through the webhook or in-tree, {ROUNDS} rounds each, alternating; medians (and the range over the rounds). CPU from /proc for the harness's kube-apiserver and the release `tollgate serve`, on the same 2-core machine as kubectl and etcd.\n\n{table}"
    );
    if let Err(e) = sections::replace(&support::repo_path("BENCHMARKS.md"), "in-tree", &section) {
        eprintln!("cannot write BENCHMARKS.md: {e}");
    }
}
