//! The `tollgate` binary as users run it: review, check, certs and serve.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed step should fail the test loudly

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::{fixture, repo_path};

fn tollgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

fn generate_certs(dir: &std::path::Path) {
    let status = tollgate()
        .args(["certs", "--cert-dir"])
        .arg(dir)
        .status()
        .expect("runs");
    assert!(
        status.success(),
        "tollgate certs failed for {}",
        dir.display()
    );
}

#[test]
fn review_prints_exactly_what_the_server_sends_for_every_fixture() {
    for (name, mutate) in [
        ("validate-allow", false),
        ("validate-deny", false),
        ("validate-v1beta1", false),
        ("update-immutable", false),
        ("update-allowed", false),
        ("update-cel", false),
        ("delete", false),
        ("mutate-defaults", true),
        ("convert-down", false),
        ("convert-up", false),
        ("convert-mixed", false),
        ("convert-unknown-version", false),
    ] {
        let printed = support::review(
            std::path::Path::new("policies"),
            std::path::Path::new(&format!("tests/fixtures/{name}.json")),
            mutate,
        );
        assert_eq!(printed, fixture(&format!("{name}.expected.json")), "{name}");
    }
}

#[test]
fn review_reads_stdin() {
    let mut child = tollgate()
        .args(["review", "--policies", "policies", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let body = std::fs::read(repo_path("tests/fixtures/validate-deny.json")).expect("fixture");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&body)
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let printed: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(printed, fixture("validate-deny.expected.json"));
}

#[test]
fn review_reports_malformed_input_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("broken.json");
    std::fs::write(
        &file,
        "{\n  \"apiVersion\": \"admission.k8s.io/v1\",\n  \"kind\": \n}\n",
    )
    .expect("write");
    let out = tollgate()
        .args(["review", "--policies", "policies"])
        .arg(&file)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:4:", file.display())),
        "{stderr}"
    );
}

#[test]
fn check_accepts_the_shipped_policies() {
    let out = tollgate()
        .args(["check", "--policies", "policies"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 policies valid"));
}

#[test]
fn check_reports_every_problem_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("a-syntax.yaml"),
        "apiVersion: tollgate.dev/v1alpha1\nkind: Policy\nmetadata: {name: [\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("b-many.yaml"),
        r#"apiVersion: tollgate.dev/v1alpha1
kind: Policy
metadata:
  name: many
spec:
  match:
    group: example.com
    kind: Widget
    resource: widgets
    versions: [v1]
  immutable:
    - spec.size
    - spec..bad
  defaults:
    labels:
      "bad key!": x
  schema:
    properties:
      spec:
        properties:
          colour:
            type: colour
---
apiVersion: tollgate.dev/v1alpha1
kind: Policy
metadata:
  name: typo
spec:
  match:
    group: example.com
    kind: Widget
    resource: widgets
    versions: [v1]
  enforcment: warn
"#,
    )
    .expect("write");
    let out = tollgate()
        .args(["check", "--policies"])
        .arg(dir.path())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let a = dir.path().join("a-syntax.yaml").display().to_string();
    let b = dir.path().join("b-many.yaml").display().to_string();
    for expected in [
        format!("{a}:4: invalid YAML/JSON"),
        format!("{b}:12: spec.immutable[0]: spec.size is not declared in spec.schema"),
        format!("{b}:13: spec.immutable[1]: invalid field path"),
        format!("{b}:15: spec.defaults.labels: \"bad key!\" is not a valid key"),
        format!("{b}:22: spec.schema.properties.spec.properties.colour.type: "),
        format!("{b}:34: spec.enforcment: unknown field `enforcment`"),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn certs_writes_keys_privately_and_never_overwrites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let out = tollgate()
        .args(["certs", "--san", "tollgate.tollgate.svc", "--cert-dir"])
        .arg(&certs)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
        assert!(certs.join(file).exists(), "{file}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(certs.join("tls.key"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let before = std::fs::read(certs.join("tls.key")).expect("key");
    let again = tollgate()
        .args(["certs", "--cert-dir"])
        .arg(&certs)
        .output()
        .expect("runs");
    assert_eq!(again.status.code(), Some(2));
    assert_eq!(std::fs::read(certs.join("tls.key")).expect("key"), before);
}

#[test]
fn serve_refuses_invalid_policies_and_mismatched_certs_with_usage_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).expect("mkdir");
    std::fs::write(
        policies.join("p.yaml"),
        "apiVersion: tollgate.dev/v1alpha1\nkind: Policy\nmetadata: {name: x}\nspec: {}\n",
    )
    .expect("write");
    let out = tollgate()
        .args(["serve", "--addr", "127.0.0.1:0", "--policies"])
        .arg(&policies)
        .arg("--cert-dir")
        .arg(dir.path().join("certs"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("p.yaml:4: spec: missing field `match`"),
        "{stderr}"
    );

    let certs = dir.path().join("certs2");
    generate_certs(&certs);
    std::fs::copy(certs.join("ca.key"), certs.join("tls.key")).expect("swap key");
    let out = tollgate()
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--policies",
            "policies",
            "--cert-dir",
        ])
        .arg(&certs)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("do not belong together"));
}

#[test]
fn serve_generates_certificates_answers_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let mut child = tollgate()
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--policies",
            "policies",
            "--cert-dir",
        ])
        .arg(&certs)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut addr = None;
    let mut generated_note = false;
    for line in lines.by_ref() {
        let line = line.expect("line");
        let event: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if event["message"]
            .as_str()
            .is_some_and(|m| m.contains("generated serving certificate"))
        {
            generated_note = event["dir"].as_str().is_some_and(|d| d.ends_with("certs"));
        }
        if event["message"] == "listening (HTTPS)" {
            addr = event["addr"].as_str().map(String::from);
            break;
        }
    }
    assert!(
        generated_note,
        "the server must say where it wrote the certificates"
    );
    let addr: std::net::SocketAddr = addr.expect("listening line").parse().expect("addr");
    let ca = std::fs::read(certs.join("ca.crt")).expect("ca.crt written");

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (response, malformed) = runtime.block_on(async {
        let client = support::server::https_client(&ca, addr)
            .build()
            .expect("client");
        let url = format!("https://localhost:{}/validate", addr.port());
        let denied: Value = client
            .post(&url)
            .json(&fixture("validate-deny.json"))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        let malformed = client
            .post(&url)
            .header("content-type", "application/json")
            .body("{\"apiVersion\":")
            .send()
            .await
            .expect("sent")
            .status();
        (denied, malformed)
    });
    assert_eq!(response, fixture("validate-deny.expected.json"));
    assert_eq!(malformed, 400);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let mut exited = None;
    for _ in 0..300 {
        if let Some(status) = child.try_wait().expect("wait") {
            exited = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = exited.expect("tollgate must exit after SIGTERM");
    assert!(status.success(), "{status:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    // A denial is logged at info with uid, kind, operation, decision and latency.
    let answered: Value = rest
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["message"] == "review answered")
        .expect("a log line per denied review");
    assert_eq!(answered["uid"], "b5b3c2a4-1d0e-4a4e-9b7a-000000000002");
    assert_eq!(answered["kind"], "payments.example.com/PaymentGateway");
    assert_eq!(answered["operation"], "CREATE");
    assert_eq!(answered["decision"], "denied");
    assert!(
        answered["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{answered}"
    );
    // A refused review's line says why, as its response does.
    let refused: Value = rest
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["message"] == "review answered" && e["decision"] == "bad_request")
        .expect("a log line per malformed review");
    assert_eq!(refused["status"], 400);
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("EOF")),
        "{refused}"
    );
    assert!(
        rest.iter().any(|l| l.contains("shutdown complete")),
        "{rest:?}"
    );
}

fn manifests(args: &[&str]) -> (Option<i32>, String, String) {
    let out = tollgate()
        .arg("manifests")
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

use support::documents;

fn by_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in manifests"))
}

#[test]
fn manifests_for_a_url_register_both_webhooks_and_conversion_with_the_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    generate_certs(&certs);
    let ca = std::fs::read_to_string(certs.join("ca.crt")).expect("ca");
    let ca_bundle = tollgate::manifests::ca_bundle_from(&ca);
    let certs_arg = certs.display().to_string();
    let (code, stdout, stderr) =
        manifests(&["--url", "https://127.0.0.1:9443", "--cert-dir", &certs_arg]);
    assert_eq!(code, Some(0), "{stderr}");
    let docs = documents(&stdout);
    for (kind, path) in [
        ("ValidatingWebhookConfiguration", "/validate"),
        ("MutatingWebhookConfiguration", "/mutate"),
    ] {
        let webhook = &by_kind(&docs, kind)["webhooks"][0];
        assert_eq!(
            webhook["clientConfig"]["url"],
            format!("https://127.0.0.1:9443{path}")
        );
        assert_eq!(webhook["clientConfig"]["caBundle"], ca_bundle.as_str());
        assert_eq!(webhook["sideEffects"], "None");
        assert_eq!(webhook["admissionReviewVersions"], json!(["v1"]));
        assert_eq!(webhook["matchPolicy"], "Equivalent");
        assert_eq!(webhook["failurePolicy"], "Fail");
        assert_eq!(webhook["timeoutSeconds"], 10);
        assert_eq!(
            webhook["namespaceSelector"]["matchExpressions"][0],
            json!({"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "tollgate"]})
        );
        assert_eq!(
            webhook["rules"],
            json!([{"apiGroups": ["payments.example.com"], "apiVersions": ["v1"], "resources": ["paymentgateways"],
                    "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"}])
        );
    }
    let crd = by_kind(&docs, "CustomResourceDefinition");
    assert_eq!(
        crd["metadata"]["name"],
        "paymentgateways.payments.example.com"
    );
    assert_eq!(crd["spec"]["conversion"]["strategy"], "Webhook");
    assert_eq!(
        crd["spec"]["conversion"]["webhook"]["conversionReviewVersions"],
        json!(["v1"])
    );
    assert_eq!(
        crd["spec"]["conversion"]["webhook"]["clientConfig"]["url"],
        "https://127.0.0.1:9443/convert"
    );
    assert_eq!(
        crd["spec"]["conversion"]["webhook"]["clientConfig"]["caBundle"],
        ca_bundle.as_str()
    );
    assert!(!stdout.contains("service:"));
}

#[test]
fn manifests_for_a_service_describe_the_whole_installation() {
    let (code, stdout, stderr) = manifests(&[
        "--service",
        "gate/tollgate",
        "--crd",
        "deploy/crd-paymentgateway.yaml",
        "--no-ca-bundle",
        "--replicas",
        "3",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let docs = documents(&stdout);
    let deployment = by_kind(&docs, "Deployment");
    assert_eq!(deployment["metadata"]["namespace"], "gate");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(
        by_kind(&docs, "PodDisruptionBudget")["spec"]["minAvailable"],
        1
    );
    assert_eq!(by_kind(&docs, "Service")["spec"]["ports"][0]["port"], 443);
    // The reconciler: its own token-bearing identity, least privilege, leader-elected replicas.
    let named = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let reconciler = named("Deployment", "tollgate-reconciler");
    assert_eq!(reconciler["spec"]["replicas"], 2);
    let reconciler_pod = &reconciler["spec"]["template"]["spec"];
    assert_eq!(reconciler_pod["serviceAccountName"], "tollgate-reconciler");
    assert_eq!(reconciler_pod["containers"][0]["args"][0], "reconcile");
    assert_eq!(
        reconciler_pod["containers"][0]["readinessProbe"]["httpGet"]["path"],
        "/readyz"
    );
    assert_eq!(
        named("ServiceAccount", "tollgate-reconciler")["metadata"]["namespace"],
        "gate"
    );
    let rules = named("ClusterRole", "tollgate-reconciler")["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let grants = |group: &str, resource: &str| -> Vec<String> {
        rules
            .iter()
            .filter(|r| r["apiGroups"] == json!([group]) && r["resources"] == json!([resource]))
            .flat_map(|r| r["verbs"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(
        grants("payments.example.com", "paymentgateways"),
        ["get", "list", "watch", "patch", "update"]
    );
    assert_eq!(
        grants("payments.example.com", "paymentgateways/status"),
        ["get", "patch", "update"]
    );
    assert_eq!(
        grants("apps", "controllerrevisions"),
        ["get", "list", "watch", "create", "patch", "delete"]
    );
    assert_eq!(grants("events.k8s.io", "events"), ["create", "patch"]);
    assert_eq!(grants("apps", "deployments"), ["get", "list", "watch"]);
    assert!(grants("", "pods").is_empty(), "no health rule reads Pods");
    assert!(grants("", "secrets").is_empty());
    assert_eq!(
        named("Role", "tollgate-reconciler")["rules"][0]["resources"],
        json!(["leases"])
    );
    let policy_text =
        std::fs::read_to_string(repo_path("policies/paymentgateway.yaml")).expect("policy");
    assert_eq!(
        by_kind(&docs, "ConfigMap")["data"]["paymentgateway.yaml"],
        policy_text.as_str()
    );
    let webhook = &by_kind(&docs, "ValidatingWebhookConfiguration")["webhooks"][0];
    assert_eq!(
        webhook["clientConfig"],
        json!({"service": {"namespace": "gate", "name": "tollgate", "path": "/validate", "port": 443}})
    );
    assert_eq!(
        webhook["namespaceSelector"]["matchExpressions"][0]["values"],
        json!(["gate", "kube-system"])
    );
    let crd = by_kind(&docs, "CustomResourceDefinition");
    assert_eq!(
        crd["spec"]["versions"].as_array().map(Vec::len),
        Some(2),
        "the full CRD is kept"
    );
    assert_eq!(
        crd["spec"]["conversion"]["webhook"]["clientConfig"]["service"]["path"],
        "/convert"
    );
}

#[test]
fn committed_deploy_manifests_match_the_generator() {
    let (code, stdout, stderr) = manifests(&[
        "--service",
        "tollgate/tollgate",
        "--crd",
        "deploy/crd-paymentgateway.yaml",
        "--no-ca-bundle",
        "--image",
        "tollgate:0.1.0",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let committed =
        std::fs::read_to_string(repo_path("deploy/tollgate.yaml")).expect("deploy/tollgate.yaml");
    assert!(
        committed == stdout,
        "deploy/tollgate.yaml is stale: regenerate it as deploy/README.md says"
    );
}

#[test]
fn manifests_refuse_missing_ca_bad_targets_and_crds_the_rules_cannot_serve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().display().to_string();
    let (code, _, stderr) = manifests(&["--url", "https://127.0.0.1:9443", "--cert-dir", &empty]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("ca.crt") && stderr.contains("tollgate certs"),
        "{stderr}"
    );
    let (code, _, stderr) = manifests(&["--url", "http://127.0.0.1:9443", "--no-ca-bundle"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("must start with https://"), "{stderr}");
    let (code, _, _) = manifests(&["--no-ca-bundle"]);
    assert_eq!(code, Some(2), "a target is required");

    let crd = std::fs::read_to_string(repo_path("deploy/crd-paymentgateway.yaml")).expect("crd");
    let widened = crd.replacen("    - name: v1alpha1\n", "    - name: v2\n      served: true\n      storage: false\n      schema: {openAPIV3Schema: {type: object}}\n    - name: v1alpha1\n", 1);
    let file = dir.path().join("crd.yaml");
    std::fs::write(&file, widened).expect("write");
    let file_arg = file.display().to_string();
    let (code, _, stderr) = manifests(&[
        "--url",
        "https://127.0.0.1:9443",
        "--no-ca-bundle",
        "--crd",
        &file_arg,
    ]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("serves version \"v2\""), "{stderr}");
}

#[test]
fn reconcile_refuses_unusable_configuration_before_touching_a_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).expect("mkdir");
    // Valid policies without a rollout section: nothing to reconcile.
    let text = std::fs::read_to_string(repo_path("policies/paymentgateway.yaml")).expect("policy");
    let without_rollout = &text[..text
        .find("  rollout:")
        .expect("shipped policy has a rollout")];
    std::fs::write(policies.join("p.yaml"), without_rollout).expect("write");
    // An unreachable kubeconfig proves the checks come first.
    let missing = dir.path().join("no-kubeconfig");
    let run = |args: &[&str]| {
        tollgate()
            .args(args)
            .env("KUBECONFIG", &missing)
            .output()
            .expect("runs")
    };
    let policies_arg = policies.to_str().expect("utf8 path");
    let out = run(&[
        "reconcile",
        "--policies",
        policies_arg,
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("has a spec.rollout section; nothing to reconcile"),
        "{stderr}"
    );

    std::fs::write(
        policies.join("p.yaml"),
        text.replace("nameFrom: metadata.name", "nameFrom: spec.missing"),
    )
    .expect("write");
    let out = run(&["reconcile", "--policies", policies_arg]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("p.yaml:")
            && stderr.contains(
                "spec.rollout.health.workload.nameFrom: spec.missing is not declared in spec.schema"
            ),
        "{stderr}"
    );

    let out = run(&["release-finalizers", "--policies", policies_arg]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn policy_test(args: &[&str]) -> (Option<i32>, String, String) {
    let out = tollgate().arg("test").args(args).output().expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A PolicyTest suite in `dir` against the shipped policies, with `cases` as its case list.
fn write_suite(dir: &std::path::Path, cases: &str) {
    let policies = repo_path("policies");
    let text = format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: PolicyTest\nmetadata: {{name: t}}\nspec:\n  policies: {}\n  cases:\n{cases}",
        policies.display()
    );
    std::fs::write(dir.join("suite.yaml"), text).expect("write suite");
}

#[test]
fn test_runs_the_shipped_suites_and_passes() {
    let (code, stdout, stderr) = policy_test(&["policies/tests"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("PASS  policies/tests/paymentgateway.yaml:"))
    );
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(summary.ends_with("passed, 0 failed"), "{summary}");
    assert!(!stdout.contains("FAIL"));
}

#[test]
fn test_fails_on_a_wrong_expectation_and_names_the_case() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_suite(
        dir.path(),
        "  - name: right\n    object: {apiVersion: payments.example.com/v1, kind: PaymentGateway, metadata: {name: a}, spec: {provider: stripe}}\n    expect: {allowed: false, violations: [spec.endpoint, spec.credentialsSecretRef, (object)]}\n  - name: deliberately wrong\n    object: {apiVersion: payments.example.com/v1, kind: PaymentGateway, metadata: {name: a}, spec: {provider: stripe}}\n    expect: {allowed: true, violations: [spec.endpoint]}\n",
    );
    let junit = dir.path().join("junit.xml");
    let (code, stdout, _) = policy_test(&[
        dir.path().to_str().expect("utf8"),
        "--junit",
        junit.to_str().expect("utf8"),
    ]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("PASS  ") && stdout.contains("/ right"),
        "{stdout}"
    );
    assert!(
        stdout.contains("suite.yaml:10  t / deliberately wrong"),
        "{stdout}"
    );
    assert!(
        stdout.contains("expected allowed: true, but it was denied"),
        "{stdout}"
    );
    assert!(stdout.contains("expected violations [spec.endpoint], found [(object): some validation rules were not checked because the object was invalid; correct the existing errors to complete validation; spec.credentialsSecretRef: is required; spec.endpoint: is required]"), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("1 passed, 1 failed"));
    let xml = std::fs::read_to_string(&junit).expect("junit written");
    assert!(xml.contains("tests=\"2\" failures=\"1\""), "{xml}");
    assert!(
        xml.contains("<testcase name=\"deliberately wrong\"") && xml.contains("<failure message="),
        "{xml}"
    );
}

#[test]
fn test_refuses_unusable_input_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_arg = dir.path().to_str().expect("utf8");
    let cases = [
        // Unknown field in a case.
        (
            "  - name: x\n    objekt: {}\n    expect: {allowed: true}\n",
            "suite.yaml:8: spec.cases[0].objekt: unknown field `objekt`",
        ),
        // A case that checks nothing would always pass.
        (
            "  - name: x\n    object: {apiVersion: v1, kind: X}\n    expect: {}\n",
            "suite.yaml:9: case \"x\": expect states nothing to check",
        ),
        // A missing object file.
        (
            "  - name: x\n    objectFile: nope.yaml\n    expect: {allowed: true}\n",
            "suite.yaml:8: ",
        ),
        // UPDATE without the old object.
        (
            "  - name: x\n    operation: UPDATE\n    object: {apiVersion: v1, kind: X}\n    expect: {allowed: true}\n",
            "case \"x\": UPDATE needs oldObject",
        ),
        // Broken YAML.
        ("  - name: [x\n", "suite.yaml:"),
    ];
    for (case, expected) in cases {
        write_suite(dir.path(), case);
        let (code, stdout, stderr) = policy_test(&[dir_arg]);
        assert_eq!(code, Some(2), "{case}: {stdout}{stderr}");
        assert!(stderr.contains(expected), "{case}: {stderr}");
        assert!(
            stdout.is_empty(),
            "nothing runs when a suite is unusable: {stdout}"
        );
    }
    let (code, _, stderr) = policy_test(&["does/not/exist"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("does/not/exist:0: no such file or directory"),
        "{stderr}"
    );
}

#[test]
fn manifests_with_cert_manager_inject_the_ca_instead_of_embedding_it() {
    let (code, stdout, stderr) = manifests(&[
        "--service",
        "tollgate/tollgate",
        "--crd",
        "deploy/crd-paymentgateway.yaml",
        "--cert-manager",
        "tollgate-ca",
        "--create-issuer",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stdout.contains("caBundle"), "no inline caBundle");
    let docs: Vec<Value> = tollgate_engine::policy::yaml::parse_documents(&stdout)
        .expect("YAML")
        .into_iter()
        .map(|d| d.value)
        .collect();
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name} rendered"))
    };
    let certificate = find("Certificate", "tollgate-tls");
    assert_eq!(certificate["spec"]["secretName"], "tollgate-tls");
    assert_eq!(certificate["spec"]["issuerRef"]["name"], "tollgate-ca");
    assert_eq!(
        certificate["spec"]["dnsNames"],
        json!([
            "tollgate.tollgate.svc",
            "tollgate.tollgate.svc.cluster.local"
        ])
    );
    assert_eq!(
        find("Issuer", "tollgate-ca")["spec"]["ca"]["secretName"],
        "tollgate-ca-ca"
    );
    assert!(find("Issuer", "tollgate-ca-selfsigned")["spec"]["selfSigned"].is_object());
    assert_eq!(find("Certificate", "tollgate-ca-ca")["spec"]["isCA"], true);
    for (kind, name) in [
        ("ValidatingWebhookConfiguration", "tollgate"),
        ("MutatingWebhookConfiguration", "tollgate"),
        (
            "CustomResourceDefinition",
            "paymentgateways.payments.example.com",
        ),
    ] {
        assert_eq!(
            find(kind, name)["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "tollgate/tollgate-tls",
            "{kind}"
        );
    }
    // The Deployment mounts the Secret the Certificate fills.
    assert!(stdout.contains("secretName: tollgate-tls"), "{stdout}");

    let (code, _, stderr) = manifests(&[
        "--url",
        "https://127.0.0.1:9443",
        "--cert-manager",
        "tollgate-ca",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--service"), "{stderr}");
}

#[test]
fn serve_help_documents_every_limit_with_its_default_and_bad_flags_are_refused() {
    let out = tollgate().args(["serve", "--help"]).output().expect("runs");
    let help = String::from_utf8_lossy(&out.stdout);
    for (flag, default) in [
        ("--max-connections", "1024"),
        ("--max-in-flight", "256"),
        ("--handshake-timeout", "10"),
        ("--header-read-timeout", "10"),
        ("--max-connection-requests", "1000"),
        ("--max-connection-age", "300"),
        ("--h2-max-concurrent-streams", "100"),
        ("--h2-max-header-list-size", "16384"),
        ("--h2-max-pending-resets", "20"),
        ("--h2-keep-alive-interval", "0"),
        ("--cert-lifetime", "365d"),
        ("--ca-lifetime", "3650d"),
        ("--expiry-warning", "30d"),
    ] {
        // The flag's own entry (up to the next flag), with clap's line wrapping undone.
        let mut lines = help.lines().skip_while(|l| {
            let indent = l.len() - l.trim_start().len();
            !(indent < 8 && l.trim_start().starts_with(flag))
        });
        let first = lines.next().unwrap_or_default();
        let entry: Vec<&str> = std::iter::once(first)
            // Entries start at a small indent; their wrapped text is indented further.
            .chain(lines.take_while(|l| {
                let indent = l.len() - l.trim_start().len();
                !(indent < 8 && l.trim_start().starts_with('-'))
            }))
            .collect();
        let line = entry
            .join(" ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            line.contains(&format!("[default: {default}]")),
            "{flag}: {line}"
        );
    }
    for text in [
        "--client-ca",
        "--anonymous-endpoint",
        "--register",
        "--cert-secret",
    ] {
        assert!(help.contains(text), "{text} missing from serve --help");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, "x").expect("write");
    let out = tollgate()
        .args(["serve", "--addr", "127.0.0.1:0", "--client-ca"])
        .arg(&ca)
        .args(["--anonymous-endpoint", "/nope"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nope"));
    let out = tollgate()
        .args(["serve", "--anonymous-endpoint", "/convert"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "needs --client-ca");
    let out = tollgate()
        .args(["serve", "--addr", "127.0.0.1:0", "--register"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--url or --service"));
}

/// A CRD whose v1 schema bounds `spec.size`, with a transition rule on `spec.replicas`.
const GADGET_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.example.com}
spec:
  group: example.com
  names: {kind: Gadget, plural: gadgets}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {type: integer, maximum: 5}
                note: {type: string}
                replicas:
                  type: integer
                  x-kubernetes-validations:
                    - {rule: "self >= oldSelf / 2", message: replicas may drop by at most half}
"#;

fn gadget_policy(schema_source: &str) -> String {
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: Policy\nmetadata: {{name: gadget}}\nspec:\n  match: {{group: example.com, kind: Gadget, resource: gadgets, versions: [v1]}}\n{schema_source}"
    )
}

#[test]
fn check_reports_schema_from_problems_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("gadget-crd.yaml"), GADGET_CRD).expect("write");
    let cases = [
        (
            "missing-file.yaml",
            "  schemaFrom: {crd: nowhere.yaml, version: v1}\n",
            "spec.schemaFrom: cannot read",
        ),
        (
            "missing-version.yaml",
            "  schemaFrom: {crd: ../gadget-crd.yaml, version: v2}\n",
            "has no version \"v2\" (it has v1)",
        ),
        (
            "both.yaml",
            "  schema: {type: object}\n  schemaFrom: {crd: ../gadget-crd.yaml, version: v1}\n",
            "give either spec.schema or spec.schemaFrom, not both",
        ),
    ];
    for (file, source, expected) in cases {
        let policies = dir.path().join(file.trim_end_matches(".yaml"));
        std::fs::create_dir(&policies).expect("dir");
        // The CRD sits beside the policy directory; the path is relative to the policy file.
        std::fs::write(policies.join(file), gadget_policy(source)).expect("write");
        let out = tollgate()
            .args(["check", "--policies"])
            .arg(&policies)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{file}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let at = format!("{}:", policies.join(file).display());
        assert!(
            stderr.contains(&at) && stderr.contains(expected),
            "{file}: missing {at}LINE … {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn review_judges_by_the_crds_schema_and_ratchets_what_did_not_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("gadget-crd.yaml"), GADGET_CRD).expect("write");
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).expect("dir");
    std::fs::write(
        policies.join("gadget.yaml"),
        gadget_policy("  schemaFrom: {crd: ../gadget-crd.yaml, version: v1}\n"),
    )
    .expect("write");
    let gadget = |spec: Value, finalizers: &[&str]| {
        json!({"apiVersion": "example.com/v1", "kind": "Gadget",
               "metadata": {"name": "g", "namespace": "n", "finalizers": finalizers}, "spec": spec})
    };
    let review = |operation: &str, object: Value, old: Value| {
        let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u1", "kind": {"group": "example.com", "version": "v1", "kind": "Gadget"},
            "resource": {"group": "example.com", "version": "v1", "resource": "gadgets"},
            "name": "g", "namespace": "n", "operation": operation, "userInfo": {"username": "someone"},
            "object": object, "oldObject": old}});
        let file = dir.path().join("review.json");
        std::fs::write(&file, body.to_string()).expect("write");
        support::review(&policies, &file, false)["response"].clone()
    };
    // Stored before the schema said `maximum: 5`.
    let stored = gadget(json!({"size": 9, "replicas": 8}), &["example.com/hold"]);

    let created = review("CREATE", stored.clone(), Value::Null);
    assert_eq!(
        created["allowed"], false,
        "the CRD's schema applies: {created}"
    );
    assert!(
        created["status"]["message"]
            .as_str()
            .unwrap()
            .contains("spec.size: must be less than or equal to 5")
    );

    let unchanged_size = review(
        "UPDATE",
        gadget(
            json!({"size": 9, "replicas": 8, "note": "x"}),
            &["example.com/hold"],
        ),
        stored.clone(),
    );
    assert_eq!(unchanged_size["allowed"], true, "{unchanged_size}");
    let warnings = unchanged_size["warnings"].to_string();
    assert!(
        warnings.contains(
            "spec.size: must be less than or equal to 5 (admitted: unchanged since it was stored)"
        ),
        "{warnings}"
    );

    let changed_size = review(
        "UPDATE",
        gadget(json!({"size": 8, "replicas": 8}), &["example.com/hold"]),
        stored.clone(),
    );
    assert_eq!(changed_size["allowed"], false, "{changed_size}");

    // A transition rule is not ratcheted: dropping replicas 8 -> 2 is refused...
    let dropped = review(
        "UPDATE",
        gadget(json!({"size": 9, "replicas": 2}), &["example.com/hold"]),
        stored.clone(),
    );
    assert_eq!(dropped["allowed"], false, "{dropped}");
    // ...but an update that only removes a finalizer is never refused, whatever the spec.
    let mut dropped_old = stored.clone();
    dropped_old["spec"]["replicas"] = json!(2);
    let released = review(
        "UPDATE",
        gadget(json!({"size": 9, "replicas": 2}), &[]),
        dropped_old.clone(),
    );
    assert_eq!(released["allowed"], true, "{released}");
    // Removing the finalizer together with a spec change is judged as usual.
    let released_and_changed = review(
        "UPDATE",
        gadget(json!({"size": 8, "replicas": 2}), &[]),
        dropped_old,
    );
    assert_eq!(
        released_and_changed["allowed"], false,
        "{released_and_changed}"
    );
}

/// A policy directory with a policy that compiles in-tree (warn mode) and one that does not (a
/// checked format).
fn in_tree_policies() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        repo_path("tests/in_tree/policies/gadget.yaml"),
        dir.path().join("gadget.yaml"),
    )
    .expect("copy");
    std::fs::write(
        dir.path().join("things.yaml"),
        "apiVersion: tollgate.dev/v1alpha1\nkind: Policy\nmetadata: {name: things}\nspec:\n  match: {group: t.test, kind: Thing, resource: things, versions: [v1]}\n  schema:\n    properties:\n      spec:\n        properties:\n          host: {type: string, format: hostname}\n",
    )
    .expect("write");
    dir
}

#[test]
fn check_in_tree_says_what_compiles_what_stays_and_why() {
    let dir = in_tree_policies();
    let out = tollgate()
        .args(["check", "--in-tree", "--policies"])
        .arg(dir.path())
        .output()
        .expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("in-tree gadget:\n")
            && text.contains(
                "validation: ValidatingAdmissionPolicy tollgate-gadget (Warn), estimated cost"
            ),
        "{text}"
    );
    assert!(
        text.contains("in-tree things:\n  match conditions")
            && text.contains("validation: stays with the webhook\n    spec.schema.properties.spec.properties.host.format: format \"k8s-hostname\" is checked by the webhook"),
        "{text}"
    );
}

#[test]
fn manifests_in_tree_keep_with_the_webhook_only_what_does_not_compile() {
    let dir = in_tree_policies();
    let policies = dir.path().display().to_string();
    let (code, stdout, stderr) = manifests(&[
        "--in-tree",
        "--policies",
        &policies,
        "--url",
        "https://127.0.0.1:8443",
        "--no-ca-bundle",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let docs = documents(&stdout);
    let names = |kind: &str| -> Vec<&str> {
        docs.iter()
            .filter(|d| d["kind"] == kind)
            .filter_map(|d| d["metadata"]["name"].as_str())
            .collect()
    };
    assert_eq!(
        names("ValidatingAdmissionPolicy"),
        ["tollgate-gadget", "tollgate-gadget-ratcheted"]
    );
    assert_eq!(
        names("ValidatingAdmissionPolicyBinding"),
        ["tollgate-gadget", "tollgate-gadget-ratcheted"]
    );
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingAdmissionPolicyBinding")
        .expect("binding");
    assert_eq!(binding["spec"]["validationActions"], json!(["Warn"]));
    // Neither policy inserts anything: no mutating policy and no mutating webhook.
    assert!(names("MutatingAdmissionPolicy").is_empty());
    assert!(names("MutatingWebhookConfiguration").is_empty());
    let webhook = by_kind(&docs, "ValidatingWebhookConfiguration");
    let rules = webhook["webhooks"][0]["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0]["resources"], json!(["things"]));
}
