//! OpenTelemetry traces, end to end: the real binary serves reviews over TLS with
//! `--otlp-endpoint` pointing at an OTLP/HTTP receiver in this test, and each review arrives as a
//! span with its uid, kind, operation, decision, each policy's outcome and the evaluation time,
//! parented to the caller's `traceparent`.

// The shared harness (support::cluster) fails a test loudly on a broken step.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::cluster::free_port;
use support::otlp::{OtlpReceiver, Received, attribute, attributes};
use support::server::https_client;
use support::{fixture, repo_path};

/// A `tollgate serve` process, killed when the test ends.
struct Served {
    child: Child,
    port: u16,
    ca_pem: String,
    log: std::path::PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    async fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_on(dir, free_port(), args, env).await
    }

    async fn start_on(dir: &Path, port: u16, args: &[&str], env: &[(&str, &str)]) -> Self {
        let log = dir.join("tollgate.log");
        let log_file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log: {e}"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        command
            .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
            .arg("--policies")
            .arg(repo_path("policies"))
            .arg("--cert-dir")
            .arg(dir.join("certs"))
            .args(args)
            // Batches go out every 100 ms rather than every 5 s.
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("tollgate starts: {e}"));
        let mut served = Self {
            child,
            port,
            ca_pem: String::new(),
            log,
        };
        served.until_ready().await;
        served
    }

    async fn until_ready(&mut self) {
        for _ in 0..400 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tollgate exited ({status}): {}", self.log_text());
            }
            let ca = std::fs::read_to_string(self.log.with_file_name("certs/ca.crt"));
            if let Ok(ca) = ca {
                self.ca_pem = ca;
                let ready = self
                    .client()
                    .get(self.url("/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ready {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("tollgate never became ready: {}", self.log_text());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    fn client(&self) -> reqwest::Client {
        https_client(self.ca_pem.as_bytes(), ([127, 0, 0, 1], self.port).into())
            .build()
            .unwrap_or_else(|e| panic!("client: {e}"))
    }

    async fn post(&self, path: &str, body: &Value, traceparent: Option<&str>) -> Value {
        let mut request = self.client().post(self.url(path)).json(body);
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        assert_eq!(response.status().as_u16(), 200, "POST {path}");
        response
            .json()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The span of the review `answer` answers, found by its uid.
async fn span_of(receiver: &OtlpReceiver, answer: &Value) -> Received {
    let uid = answer["response"]["uid"].as_str().unwrap_or_default();
    receiver
        .span_where(&format!("for review {uid}"), Duration::from_secs(20), |r| {
            attribute(&r.span.attributes, "tollgate.review.uid").as_deref() == Some(uid)
        })
        .await
}

fn span_attribute(received: &Received, key: &str) -> String {
    attribute(&received.span.attributes, key)
        .unwrap_or_else(|| panic!("span {} has no {key}", received.span.name))
}

/// Each policy's event on the span: (name, decision, violations).
fn policy_events(received: &Received) -> Vec<(String, String, String)> {
    received
        .span
        .events
        .iter()
        .filter(|e| e.name == "tollgate.policy")
        .map(|e| {
            let get = |key| attribute(&e.attributes, key).unwrap_or_default();
            (
                get("tollgate.policy.name"),
                get("tollgate.policy.decision"),
                get("tollgate.policy.violations"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_review_is_a_span_under_the_callers_traceparent() {
    let (receiver, collector) = OtlpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let endpoint = format!("http://{collector}");
    let served = Served::start(dir.path(), &["--otlp-endpoint", &endpoint], &[]).await;
    let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01");

    let denied = served
        .post(
            "/validate",
            &fixture("validate-deny.json"),
            Some(&traceparent),
        )
        .await;
    assert_eq!(denied["response"]["allowed"], false);
    let span = span_of(&receiver, &denied).await;
    assert_eq!(hex(&span.span.trace_id), TRACE_ID, "the caller's trace");
    assert_eq!(
        hex(&span.span.parent_span_id),
        PARENT_SPAN_ID,
        "the caller's span is the parent"
    );
    assert_eq!(span.span.name, "POST /validate");
    assert_eq!(span.span.kind, 2, "a server span (SPAN_KIND_SERVER)");
    assert_eq!(span_attribute(&span, "tollgate.decision"), "denied");
    assert_eq!(span_attribute(&span, "tollgate.review.operation"), "CREATE");
    assert_eq!(
        span_attribute(&span, "tollgate.review.kind"),
        "PaymentGateway"
    );
    assert_eq!(
        span_attribute(&span, "tollgate.review.group"),
        "payments.example.com"
    );
    assert_eq!(span_attribute(&span, "http.response.status_code"), "200");
    assert_eq!(span_attribute(&span, "tollgate.policies"), "paymentgateway");
    let events = policy_events(&span);
    assert_eq!(events.len(), 1, "one event per policy: {events:?}");
    assert_eq!(
        (events[0].0.as_str(), events[0].1.as_str()),
        ("paymentgateway", "denied")
    );
    let violations: usize = events[0].2.parse().unwrap_or_default();
    assert!(
        violations >= 2,
        "the denied fixture violates several fields: {events:?}"
    );
    let evaluation: f64 = span_attribute(&span, "tollgate.evaluation.duration_ms")
        .parse()
        .unwrap_or(-1.0);
    let total_ms = (span.span.end_time_unix_nano - span.span.start_time_unix_nano) as f64 / 1e6;
    assert!(
        evaluation >= 0.0 && evaluation <= total_ms,
        "evaluation {evaluation} ms within the span's {total_ms} ms"
    );
    assert_eq!(
        attribute(&span.resource, "service.name").as_deref(),
        Some("tollgate")
    );
    // A denial is the webhook working, not an error.
    assert_ne!(span.span.status.as_ref().map_or(0, |s| s.code), 2);

    // Without a traceparent, the review starts a trace of its own.
    let allowed = served
        .post("/validate", &fixture("validate-allow.json"), None)
        .await;
    assert_eq!(allowed["response"]["allowed"], true);
    let span = span_of(&receiver, &allowed).await;
    assert_ne!(hex(&span.span.trace_id), TRACE_ID);
    assert!(span.span.parent_span_id.is_empty(), "a root span");
    assert_eq!(span_attribute(&span, "tollgate.decision"), "allowed");
    assert_eq!(
        policy_events(&span)
            .iter()
            .map(|e| e.1.as_str())
            .collect::<Vec<_>>(),
        ["allowed"]
    );

    // Defaulting names the policies that defaulted.
    let patched = served
        .post(
            "/mutate",
            &fixture("mutate-defaults.json"),
            Some(&traceparent),
        )
        .await;
    let span = span_of(&receiver, &patched).await;
    assert_eq!(span_attribute(&span, "tollgate.decision"), "patched");
    assert_eq!(
        policy_events(&span)
            .iter()
            .map(|e| (e.0.as_str(), e.1.as_str()))
            .collect::<Vec<_>>(),
        [("paymentgateway", "defaulted")]
    );

    // A conversion carries the version asked for and its duration.
    let converted = served
        .post("/convert", &fixture("convert-up.json"), Some(&traceparent))
        .await;
    let span = span_of(&receiver, &converted).await;
    assert_eq!(span.span.name, "POST /convert");
    assert_eq!(span_attribute(&span, "tollgate.decision"), "converted");
    assert_eq!(
        span_attribute(&span, "tollgate.review.operation"),
        "CONVERT"
    );
    assert!(
        attribute(&span.span.attributes, "tollgate.review.desired_api_version")
            .is_some_and(|v| v.starts_with("payments.example.com/")),
        "{:?}",
        attributes(&span.span.attributes)
    );
    assert!(attribute(&span.span.attributes, "tollgate.evaluation.duration_ms").is_some());

    // Probes are not reviews: no spans for them.
    assert!(
        receiver
            .spans()
            .iter()
            .all(|r| r.span.name.starts_with("POST /")),
        "only reviews are traced"
    );
    assert!(
        receiver
            .requests()
            .iter()
            .all(|(path, content_type)| path == "/v1/traces"
                && content_type == "application/x-protobuf"),
        "OTLP/HTTP protobuf to /v1/traces: {:?}",
        receiver.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_variables_configure_the_exporter_and_an_unsampled_parent_is_respected() {
    let (receiver, collector) = OtlpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let endpoint = format!("http://{collector}");
    let served = Served::start(
        dir.path(),
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "tollgate-staging"),
        ],
    )
    .await;
    // The caller decided not to sample this trace (flags 00): the default sampler follows it.
    let unsampled = format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-00");
    let first = served
        .post(
            "/validate",
            &fixture("validate-allow.json"),
            Some(&unsampled),
        )
        .await;
    let sampled = served
        .post("/validate", &fixture("validate-deny.json"), None)
        .await;
    let span = span_of(&receiver, &sampled).await;
    assert_eq!(
        attribute(&span.resource, "service.name").as_deref(),
        Some("tollgate-staging")
    );
    let unsampled_uid = first["response"]["uid"].as_str().unwrap_or_default();
    assert!(
        receiver.spans().iter().all(|r| {
            attribute(&r.span.attributes, "tollgate.review.uid").as_deref() != Some(unsampled_uid)
        }),
        "a review under an unsampled parent is not exported"
    );
}

#[test]
fn a_protocol_other_than_otlp_http_is_refused_at_start_by_name() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--addr", "127.0.0.1:0"])
        .arg("--policies")
        .arg(repo_path("policies"))
        .arg("--cert-dir")
        .arg(dir.path().join("certs"))
        .args(["--otlp-endpoint", "http://127.0.0.1:4317"])
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("tollgate runs: {e}"));
    assert_eq!(output.status.code(), Some(2), "a configuration error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL=\"grpc\"") && stderr.contains("http/protobuf"),
        "{stderr}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--addr", "127.0.0.1:0"])
        .arg("--policies")
        .arg(repo_path("policies"))
        .arg("--cert-dir")
        .arg(dir.path().join("certs"))
        .args(["--otlp-endpoint", "collector:4318"])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("tollgate runs: {e}"));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("is not an http:// or https:// URL"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The real kube-apiserver, with its own tracing on, calls the webhook with a `traceparent`: the
/// review's span is the child of the apiserver's span for that webhook call. The apiserver
/// exports its own spans over gRPC to a port nothing listens on (its spans are not needed here:
/// the parent link on tollgate's span is what shows the propagation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_from_the_apiserver_is_a_child_of_its_span() {
    let config_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let tracing_config = config_dir.path().join("tracing.yaml");
    std::fs::write(
        &tracing_config,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1beta1\nkind: TracingConfiguration\nendpoint: 127.0.0.1:{}\nsamplingRatePerMillion: 1000000\n",
            free_port()
        ),
    )
    .unwrap_or_else(|e| panic!("tracing config: {e}"));
    let Some(cluster) = support::cluster::Cluster::start_with(&[format!(
        "--tracing-config-file={}",
        tracing_config.display()
    )])
    .await
    else {
        return;
    };
    support::create_namespace(&cluster.client, "traced").await;
    support::install_example_crd(&cluster.client, "traced").await;

    let (receiver, collector) = OtlpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let port = free_port();
    let endpoint = format!("http://{collector}");
    let url = format!("https://127.0.0.1:{port}");
    let kubeconfig = cluster.kubeconfig.display().to_string();
    let _served = Served::start_on(
        dir.path(),
        port,
        &["--otlp-endpoint", &endpoint, "--register", "--url", &url],
        &[("KUBECONFIG", &kubeconfig)],
    )
    .await;

    let gateways = support::payment_gateways(&cluster.client, "traced");
    let invalid: kube::core::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "payments.example.com/v1", "kind": "PaymentGateway",
        "metadata": {"name": "traced-bad", "namespace": "traced"},
        "spec": {"provider": "adyen"},
    }))
    .unwrap_or_else(|e| panic!("object: {e}"));
    support::eventually(
        "the apiserver calls the registered webhook",
        Duration::from_secs(60),
        || {
            let gateways = gateways.clone();
            let invalid = invalid.clone();
            async move {
                match gateways.create(&Default::default(), &invalid).await {
                    Err(kube::Error::Api(status)) if status.message.contains("is invalid") => {
                        Ok(())
                    }
                    other => {
                        if other.is_ok() {
                            let _ = gateways.delete("traced-bad", &Default::default()).await;
                        }
                        Err(format!("{other:?}"))
                    }
                }
            }
        },
    )
    .await;
    let span = receiver
        .span_where("for the apiserver's review", Duration::from_secs(20), |r| {
            attribute(&r.span.attributes, "tollgate.decision").as_deref() == Some("denied")
                && attribute(&r.span.attributes, "tollgate.review.kind").as_deref()
                    == Some("PaymentGateway")
        })
        .await;
    assert_eq!(span.span.trace_id.len(), 16, "a trace id");
    assert!(
        span.span.trace_id.iter().any(|b| *b != 0),
        "a valid trace id"
    );
    assert_eq!(
        span.span.parent_span_id.len(),
        8,
        "the apiserver's traceparent made the review's span a child: {:?}",
        attributes(&span.span.attributes)
    );
}
