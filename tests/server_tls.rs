//! The real server over TLS on a loopback port: fixtures, patches, bad input, probes, metrics,
//! ALPN and graceful shutdown.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed step should fail the test loudly

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{fixture, server::TestServer, server::apply_strictly, server::decode_patch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn response_of(review: &Value) -> &Value {
    &review["response"]
}

#[tokio::test]
async fn answers_every_fixture_exactly_as_recorded() {
    let server = TestServer::start().await;
    let cases = [
        ("validate-allow", "/validate"),
        ("validate-deny", "/validate"),
        ("validate-v1beta1", "/validate"),
        ("update-immutable", "/validate"),
        ("update-allowed", "/validate"),
        ("delete", "/validate"),
        ("mutate-defaults", "/mutate"),
    ];
    for (name, path) in cases {
        let (status, body) = server
            .post_json(path, &fixture(&format!("{name}.json")))
            .await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(body, fixture(&format!("{name}.expected.json")), "{name}");
    }
    server.finish().await;
}

#[tokio::test]
async fn denial_lists_every_violation_with_its_field_and_echoes_uid() {
    let server = TestServer::start().await;
    let review = fixture("validate-deny.json");
    let (_, body) = server.post_json("/validate", &review).await;
    let response = response_of(&body);
    assert_eq!(response["uid"], review["request"]["uid"]);
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    let message = response["status"]["message"].as_str().unwrap_or_default();
    for expected in [
        "spec.provider: must be one of",
        "spec.endpoint: must start with \"https://\"",
        "spec.credentialsSecretRef: is required",
        "spec.timeoutSeconds: must be less than or equal to 120",
        "spec.retry.maxAttempts: must be less than or equal to 10",
        "spec.currencies: must not contain duplicate items",
        "spec.currencies[0]: must match the pattern",
        "spec.replicas: must be greater than or equal to 1",
        "spec.colour: is not a known field",
    ] {
        assert!(
            message.contains(expected),
            "missing {expected:?} in {message}"
        );
    }
    server.finish().await;
}

#[tokio::test]
async fn answers_v1beta1_in_v1beta1() {
    let server = TestServer::start().await;
    let (_, body) = server
        .post_json("/validate", &fixture("validate-v1beta1.json"))
        .await;
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(body["kind"], "AdmissionReview");
    server.finish().await;
}

#[tokio::test]
async fn mutation_patch_applies_strictly_and_yields_a_valid_defaulted_object() {
    let server = TestServer::start().await;
    let review = fixture("mutate-defaults.json");
    let (_, body) = server.post_json("/mutate", &review).await;
    assert_eq!(body["response"]["patchType"], "JSONPatch");
    assert!(
        body["response"]["patch"].is_string(),
        "patch must be a base64 string: {body}"
    );
    let patch = decode_patch(&body).expect("decodable patch");
    let original = &review["request"]["object"];
    let patched = apply_strictly(original, &patch).expect("patch applies to the received object");
    assert_eq!(
        patched["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "tollgate"
    );
    assert_eq!(
        patched["spec"],
        json!({
            "provider": "adyen",
            "endpoint": "https://checkout.adyen.example",
            "credentialsSecretRef": {"name": "adyen-credentials"},
            "timeoutSeconds": 30,
            "retry": {"maxAttempts": 3, "backoffSeconds": 1},
            "currencies": ["USD"],
            "replicas": 2
        })
    );
    // The defaulted object passes validation, and defaulting it again changes nothing.
    let mut again = review.clone();
    again["request"]["object"] = patched;
    let (_, validated) = server.post_json("/validate", &again).await;
    assert_eq!(validated["response"]["allowed"], true);
    let (_, remutated) = server.post_json("/mutate", &again).await;
    assert!(remutated["response"].get("patch").is_none(), "{remutated}");
    server.finish().await;
}

#[tokio::test]
async fn patch_escapes_label_keys_and_keeps_existing_values() {
    let server = TestServer::start().await;
    let mut review = fixture("mutate-defaults.json");
    review["request"]["object"]["metadata"]["labels"] = json!({"team": "payments"});
    review["request"]["object"]["spec"]["retry"] = json!({"maxAttempts": 0});
    review["request"]["object"]["spec"]["replicas"] = json!(7);
    let (_, body) = server.post_json("/mutate", &review).await;
    let patch = decode_patch(&body).expect("patch");
    let text = serde_json::to_string(&patch).expect("json");
    assert!(
        text.contains("/metadata/labels/app.kubernetes.io~1managed-by"),
        "{text}"
    );
    let patched = apply_strictly(&review["request"]["object"], &patch).expect("applies");
    assert_eq!(patched["metadata"]["labels"]["team"], "payments");
    assert_eq!(
        patched["spec"]["retry"],
        json!({"maxAttempts": 0, "backoffSeconds": 1})
    );
    assert_eq!(patched["spec"]["replicas"], 7);
    server.finish().await;
}

#[tokio::test]
async fn patch_creates_missing_metadata_parents() {
    let server = TestServer::start().await;
    let mut review = fixture("mutate-defaults.json");
    review["request"]["object"]
        .as_object_mut()
        .expect("object")
        .remove("metadata");
    let (_, body) = server.post_json("/mutate", &review).await;
    let patch = decode_patch(&body).expect("patch");
    let patched =
        apply_strictly(&review["request"]["object"], &patch).expect("applies without metadata");
    assert_eq!(
        patched["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "tollgate"
    );
    server.finish().await;
}

#[tokio::test]
async fn never_patches_on_delete_or_unmatched_kinds() {
    let server = TestServer::start().await;
    let (_, deleted) = server.post_json("/mutate", &fixture("delete.json")).await;
    assert_eq!(deleted["response"]["allowed"], true);
    assert!(deleted["response"].get("patch").is_none());

    let configmap = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "cm-1",
            "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "operation": "CREATE",
            "namespace": "payments",
            "userInfo": {"username": "bob"},
            "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"spec": "anything"}}
        }
    });
    for path in ["/validate", "/mutate"] {
        let (status, body) = server.post_json(path, &configmap).await;
        assert_eq!(status, 200);
        assert_eq!(
            body["response"],
            json!({"uid": "cm-1", "allowed": true}),
            "{path}"
        );
    }
    server.finish().await;
}

async fn raw_post(
    server: &TestServer,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let response = server
        .client()
        .post(server.url(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn bad_input_gets_a_status_and_a_json_reason_and_the_server_keeps_serving() {
    let server = TestServer::start_with(support::repo_path("policies"), |c| {
        c.http.max_body_bytes = 64 * 1024
    })
    .await;
    let mut without_uid = fixture("validate-allow.json");
    without_uid["request"]
        .as_object_mut()
        .expect("request")
        .remove("uid");
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "/validate",
            "application/json",
            b"{not json".to_vec(),
            400,
            "not a valid AdmissionReview",
        ),
        (
            "/validate",
            "application/json",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            400,
            "has no request",
        ),
        (
            "/mutate",
            "application/json",
            serde_json::to_vec(&without_uid).expect("json"),
            400,
            "missing field `uid`",
        ),
        (
            "/validate",
            "text/plain",
            b"{}".to_vec(),
            415,
            "Content-Type must be application/json",
        ),
        (
            "/validate",
            "application/json",
            vec![b' '; 65 * 1024],
            413,
            "exceeds the limit",
        ),
        (
            "/nope",
            "application/json",
            b"{}".to_vec(),
            404,
            "no such endpoint",
        ),
    ];
    for (path, content_type, body, expected_status, reason) in cases {
        let (status, json) = raw_post(&server, path, content_type, body).await;
        assert_eq!(status, expected_status, "{path} {reason}: {json}");
        assert_eq!(json["kind"], "Status");
        assert_eq!(json["code"], expected_status);
        let message = json["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(reason),
            "{message:?} should contain {reason:?}"
        );
    }
    let wrong_method = server
        .client()
        .get(server.url("/validate"))
        .send()
        .await
        .expect("sent");
    assert_eq!(wrong_method.status().as_u16(), 405);
    let json: Value = wrong_method.json().await.unwrap_or(Value::Null);
    assert_eq!(json["code"], 405);

    let (status, body) = server
        .post_json("/validate", &fixture("validate-allow.json"))
        .await;
    assert_eq!((status, &body["response"]["allowed"]), (200, &json!(true)));
    server.finish().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_body_gets_408_and_others_are_served() {
    let server = TestServer::start_with(support::repo_path("policies"), |c| {
        c.http.body_read_timeout = Duration::from_millis(300)
    })
    .await;
    let mut stream = tls_client(&server, &[b"http/1.1"]).await;
    stream
        .write_all(b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"apiV")
        .await
        .expect("partial request");
    stream.flush().await.expect("flush");
    let health = server
        .client()
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("healthz while one client stalls");
    assert_eq!(health.status().as_u16(), 200);
    let mut response = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut response))
        .await
        .expect("the server answers the stalled client")
        .expect("read");
    let text = String::from_utf8_lossy(&response[..read]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request body not received within"), "{text}");
    server.finish().await;
}

#[tokio::test]
async fn an_update_carrying_two_large_objects_fits_the_default_limit() {
    let server = TestServer::start().await;
    let mut review = fixture("update-allowed.json");
    let filler = "x".repeat(3 * 1024 * 1024);
    review["request"]["object"]["metadata"]["annotations"] = json!({"example.com/blob": filler});
    review["request"]["oldObject"]["metadata"]["annotations"] = json!({"example.com/blob": filler});
    let (status, body) = server.post_json("/validate", &review).await;
    assert_eq!(status, 200);
    assert_eq!(body["response"]["allowed"], true);
    server.finish().await;
}

#[tokio::test]
async fn plain_http_on_the_tls_port_is_refused_without_harm() {
    let server = TestServer::start().await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    tcp.write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(
        read.is_ok(),
        "the server must close the connection, not hang"
    );
    assert!(
        !text.contains("HTTP/1.1 200"),
        "plain HTTP must never be answered: {text}"
    );
    let health = server
        .client()
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status().as_u16(), 200);
    server.finish().await;
}

const BULK_POLICY: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: Policy
metadata:
  name: bulk
spec:
  match: {group: example.com, kind: Bulk, resource: bulks, versions: [v1]}
  schema:
    properties:
      spec:
        properties:
          items:
            type: array
            items:
              type: string
              allOf:
                - pattern: "^(a|b|c)+[0-9]*z?$"
                - pattern: "^[a-c]+[0-9]+z$"
                - pattern: "(abc|bca|cab)+"
                - pattern: "[0-9]{2}"
                - pattern: "^.{4,64}$"
                - pattern: "c1"
                - pattern: "z$"
                - pattern: "^a"
"#;

#[tokio::test]
async fn evaluation_stops_at_the_apiserver_deadline_and_answers_with_the_uid() {
    let policies = tempfile::tempdir().expect("tempdir");
    std::fs::write(policies.path().join("bulk.yaml"), BULK_POLICY).expect("write policy");
    let server = TestServer::start_with(policies.path().to_path_buf(), |_| {}).await;
    // Half a million pattern checks cannot finish in the 50 ms floor a `timeout=1ms` call gets;
    // a slower (noisier) machine only makes that more certain.
    let items: Vec<&str> = vec!["abcabc12z"; 500_000];
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "slow-1",
            "kind": {"group": "example.com", "version": "v1", "kind": "Bulk"},
            "resource": {"group": "example.com", "version": "v1", "resource": "bulks"},
            "operation": "CREATE",
            "userInfo": {},
            "object": {"apiVersion": "example.com/v1", "kind": "Bulk", "metadata": {"name": "b"}, "spec": {"items": items}}
        }
    });
    let response = server
        .client()
        .post(server.url("/validate?timeout=1ms"))
        .json(&review)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["response"]["uid"], "slow-1");
    assert_eq!(body["response"]["allowed"], false);
    assert_eq!(body["response"]["status"]["code"], 500);
    let message = body["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("did not finish within"), "{message}");
    let health = server
        .client()
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status().as_u16(), 200);
    server.finish().await;
}

#[tokio::test]
async fn accepts_go_duration_timeouts_and_ignores_malformed_ones() {
    let server = TestServer::start().await;
    for query in ["?timeout=10s", "?timeout=1m30s", "?timeout=garbage"] {
        let response = server
            .client()
            .post(server.url(&format!("/validate{query}")))
            .json(&fixture("validate-deny.json"))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status().as_u16(), 200, "{query}");
    }
    server.finish().await;
}

async fn tls_client(
    server: &TestServer,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    tls_client_with(server, alpn, rustls::DEFAULT_VERSIONS).await
}

async fn tls_client_with(
    server: &TestServer,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    support::server::tls_connect(server.addr, &server.ca_pem, alpn, versions, None)
        .await
        .expect("handshake")
}

#[tokio::test]
async fn negotiates_http1_for_the_apiserver_and_h2_when_offered() {
    let server = TestServer::start().await;
    let h1 = tls_client(&server, &[b"http/1.1"]).await;
    assert_eq!(h1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let tls12 = tls_client_with(&server, &[b"http/1.1"], &[&rustls::version::TLS12]).await;
    assert_eq!(
        tls12.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let tls13 = tls_client(&server, &[b"http/1.1"]).await;
    assert_eq!(
        tls13.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let h2 = tls_client(&server, &[b"h2", b"http/1.1"]).await;
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // An h2 client gets real answers too.
    let client = support::server::https_client(server.ca_pem.as_bytes(), server.addr)
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let response = client
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("h2 request");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    server.finish().await;
}

#[tokio::test]
async fn probes_and_metrics() {
    let server = TestServer::start().await;
    let client = server.client();
    assert_eq!(
        client
            .get(server.url("/healthz"))
            .send()
            .await
            .expect("healthz")
            .status()
            .as_u16(),
        200
    );
    let ready = client
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status().as_u16(), 200);
    server
        .post_json("/validate", &fixture("validate-deny.json"))
        .await;
    server
        .post_json("/validate", &fixture("validate-allow.json"))
        .await;
    server
        .post_json("/mutate", &fixture("mutate-defaults.json"))
        .await;
    raw_post(&server, "/validate", "application/json", b"{".to_vec()).await;
    let text = client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    for expected in [
        "tollgate_requests_total{endpoint=\"validate\",decision=\"denied\"} 1",
        "tollgate_requests_total{endpoint=\"validate\",decision=\"allowed\"} 1",
        "tollgate_requests_total{endpoint=\"mutate\",decision=\"patched\"} 1",
        "tollgate_requests_total{endpoint=\"validate\",decision=\"bad_request\"} 1",
        "tollgate_request_duration_seconds_bucket{le=",
        "tollgate_in_flight_requests",
        "tollgate_policy_load_errors_total 0",
        "tollgate_policies_loaded 1",
    ] {
        assert!(
            text.contains(expected),
            "metrics lack {expected:?}:\n{text}"
        );
    }
    server.finish().await;
}

#[tokio::test]
async fn shutdown_fails_readiness_and_lets_in_flight_requests_finish() {
    let mut server = TestServer::start().await;
    let body = serde_json::to_vec(&fixture("validate-deny.json")).expect("json");
    let mut stream = tls_client(&server, &[b"http/1.1"]).await;
    let head = format!(
        "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let (first, rest) = body.split_at(body.len() / 2);
    stream.write_all(first).await.expect("first half");
    stream.flush().await.expect("flush");
    // Wait until the server is processing this request, then ask it to stop.
    for _ in 0..200 {
        if server.state.metrics().in_flight.get() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.state.metrics().in_flight.get(), 1);
    server.begin_shutdown();
    for _ in 0..200 {
        if !server.state.is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !server.state.is_ready(),
        "readiness must fail once shutdown begins"
    );
    assert!(
        tokio::net::TcpStream::connect(server.addr).await.is_err(),
        "no new connections after shutdown"
    );
    stream.write_all(rest).await.expect("second half");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response))
        .await
        .expect("response before the grace period")
        .ok();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("b5b3c2a4-1d0e-4a4e-9b7a-000000000002"),
        "{text}"
    );
    server.finish().await;
}

const QUADRATIC_CEL_POLICY: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: Policy
metadata: {name: pairs}
spec:
  match: {group: example.com, kind: Pairs, resource: pairs, versions: [v1]}
  validations:
    - expression: "object.spec.items.all(a, object.spec.items.all(b, a == b || a != b))"
      message: never fails, only takes time
"#;

fn pairs_review(uid: &str, count: usize) -> Value {
    let items: Vec<usize> = (0..count).collect();
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "example.com", "version": "v1", "kind": "Pairs"},
            "resource": {"group": "example.com", "version": "v1", "resource": "pairs"},
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": {"apiVersion": "example.com/v1", "kind": "Pairs", "metadata": {"name": "p"}, "spec": {"items": items}}
        }
    })
}

#[tokio::test]
async fn a_pathological_cel_expression_errors_its_own_request_and_stalls_no_other() {
    let policies = tempfile::tempdir().expect("tempdir");
    std::fs::write(policies.path().join("pairs.yaml"), QUADRATIC_CEL_POLICY).expect("write policy");
    let server = TestServer::start_with(policies.path().to_path_buf(), |_| {}).await;
    // A million comparisons take far longer than the caller's budget of 1 ms (raised to the 50 ms
    // floor), even in a release build.
    let response = server
        .client()
        .post(server.url("/validate?timeout=1ms"))
        .json(&pairs_review("slow-cel", 1000))
        .send()
        .await
        .expect("sent");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["response"]["uid"], "slow-cel");
    assert_eq!(body["response"]["allowed"], false);
    assert_eq!(body["response"]["status"]["code"], 500);
    // Meanwhile a small review of the same kind is evaluated and allowed, on another connection.
    let other = server.client();
    let response = other
        .post(server.url("/validate"))
        .json(&pairs_review("small", 3))
        .send()
        .await
        .expect("sent");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["response"]["uid"], "small");
    assert_eq!(body["response"]["allowed"], true, "{body}");
    server.finish().await;
}
