//! `tollgate reconcile` as a child process, and polling with its log on failure: shared by the
//! reconciler's end-to-end tests.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::cluster::{Cluster, free_port};

/// How long a scenario step may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(90);

pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(80)..].join("\n")
}

/// Polls `probe` until it yields a value, failing with `what` (and the log) after `WAIT`.
pub async fn eventually<T, F, Fut>(what: &str, log: &Path, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if started.elapsed() > WAIT {
            panic!(
                "timed out waiting for {what}\n--- log ---\n{}",
                log_tail(log)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Merges `spec` into the managed object's spec, as a user's `kubectl patch --type merge` does.
pub async fn patch_spec(api: &Api<DynamicObject>, name: &str, spec: Value) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": spec})),
    )
    .await
    .expect("patch spec");
}

/// The managed object as JSON.
pub async fn get(api: &Api<DynamicObject>, name: &str) -> Value {
    serde_json::to_value(api.get(name).await.expect("get object")).expect("json")
}

pub fn condition<'v>(object: &'v Value, type_: &str) -> Option<&'v Value> {
    object
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

pub fn phase(object: &Value) -> &str {
    object
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Waits until the reconciler reports `wanted` for the object's current generation.
pub async fn wait_phase(api: &Api<DynamicObject>, log: &Path, name: &str, wanted: &str) -> Value {
    eventually(&format!("{name} phase {wanted}"), log, || async {
        let object = get(api, name).await;
        (phase(&object) == wanted
            && object["status"]["observedGeneration"] == object["metadata"]["generation"])
            .then_some(object)
    })
    .await
}

/// What the test's kubelet does with a Pod labelled `health: bad`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum BadPods {
    /// Running but never Ready (a rollout that makes no progress).
    StayUnready,
    /// Phase Failed (the image does not start), so its controller replaces it.
    Fail,
}

/// The kubelet, as the tests play it, for the Pods in `namespace` labelled `health`: `good` ones
/// become Ready; `bad` ones as `bad` says.
pub async fn kubelet(pods: Api<Pod>, bad: BadPods) {
    loop {
        if let Ok(list) = pods.list(&ListParams::default().labels("health")).await {
            for pod in list.items {
                if pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let good = pod.labels().get("health").map(String::as_str) == Some("good");
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                let now = k8s_openapi::jiff::Timestamp::now().to_string();
                let status = match (good, phase, bad) {
                    (true, Some("Running"), _) | (false, Some("Failed"), BadPods::Fail) => continue,
                    (false, _, BadPods::StayUnready) => continue,
                    (true, _, _) => json!({"status": {"phase": "Running", "conditions": [
                        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                        {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                        {"type": "Ready", "status": "True", "lastTransitionTime": now}]}}),
                    (false, _, BadPods::Fail) => json!({"status": {"phase": "Failed",
                        "reason": "Error", "message": "the image does not start"}}),
                };
                let _ = pods
                    .patch_status(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&status),
                    )
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `tollgate reconcile` as a child process; killed on drop.
pub struct Reconciler {
    child: Child,
    pub log: PathBuf,
    metrics: String,
}

impl Reconciler {
    /// Leader-elected on `lease` in `namespace`, as `identity`, with `extra` arguments.
    pub fn start(
        cluster: &Cluster,
        policies: &Path,
        identity: &str,
        (lease, namespace): (&str, &str),
        extra: &[&str],
    ) -> Self {
        let log = cluster
            .dir
            .path()
            .join(format!("reconciler-{identity}.log"));
        let out = std::fs::File::create(&log).expect("log");
        let err = out.try_clone().expect("log");
        let metrics = format!("127.0.0.1:{}", free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["reconcile", "--policies"])
            .arg(policies)
            .args(["--metrics-addr", &metrics])
            .args(["--lease-name", lease, "--lease-namespace", namespace])
            .args(["--identity", identity])
            .args(extra)
            .env("KUBECONFIG", &cluster.kubeconfig)
            .env("RUST_LOG", "info,tollgate_reconciler=debug")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("tollgate reconcile starts");
        Self {
            child,
            log,
            metrics: format!("http://{metrics}"),
        }
    }

    /// Status code and body of a GET on the reconciler's plain-HTTP probe port.
    pub async fn probe(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::get(format!("{}{path}", self.metrics)).await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Reconciler {
    fn drop(&mut self) {
        self.kill();
    }
}
