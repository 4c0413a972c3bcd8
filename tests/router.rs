//! The HTTP surface without a socket (`Front::handle`): what only needs HTTP semantics.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed step should fail the test loudly

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tollgate::http::{AppState, Front, HttpConfig};
use tollgate::metrics::Metrics;

fn state() -> AppState {
    state_with(HttpConfig::default())
}

/// A server's state with the shipped policies.
fn state_with(config: HttpConfig) -> AppState {
    let store = tollgate_engine::load_dir(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies"
    )))
    .unwrap_or_else(|e| panic!("{e}"));
    AppState::new(config, store, Metrics::default())
}

/// The review of an allowed UPDATE, whose objects the tests replace.
fn update_review() -> Value {
    let text = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/update-allowed.json"
    ))
    .expect("fixture");
    serde_json::from_slice(&text).expect("json")
}

async fn get(state: &AppState, path: &str) -> (StatusCode, Value) {
    send(
        state,
        Request::get(path).body(Body::empty()).expect("request"),
    )
    .await
}

async fn send(state: &AppState, request: Request<Body>) -> (StatusCode, Value) {
    let response = Front::new(state.clone()).handle(request).await;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn readiness_follows_the_server_lifecycle_while_liveness_stays_up() {
    let state = state();
    assert_eq!(
        get(&state, "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
    state.set_ready(true);
    let (status, body) = get(&state, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["policies"], 1);
    state.set_ready(false);
    assert_eq!(
        get(&state, "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn wrong_method_and_unknown_path_are_json_errors() {
    let state = state();
    let (status, body) = get(&state, "/mutate").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["reason"], "MethodNotAllowed");
    let (status, body) = get(&state, "/admission").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["reason"], "NotFound");
}

async fn post(state: &AppState, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("request");
    send(state, request).await
}

/// The fixture with its object grown past the inline size by annotations.
fn grown(name: &str, bytes: usize) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut review: Value =
        serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("json");
    let padding: serde_json::Map<String, Value> = (0..bytes / 1024)
        .map(|i| {
            (
                format!("pad.example.com/p{i}"),
                Value::String("x".repeat(1000)),
            )
        })
        .collect();
    review["request"]["object"]["metadata"]["annotations"] = Value::Object(padding);
    review
}

#[tokio::test]
async fn large_reviews_are_read_and_judged_on_the_pool_with_the_same_answers() {
    let state = state();
    assert!(HttpConfig::default().inline_max_bytes < 64 * 1024);
    for (fixture, path) in [
        ("validate-deny.json", "/validate"),
        ("validate-allow.json", "/validate"),
        ("mutate-defaults.json", "/mutate"),
    ] {
        let small = grown(fixture, 0);
        let large = grown(fixture, 64 * 1024);
        let (small_status, small_answer) =
            post(&state, path, serde_json::to_vec(&small).unwrap()).await;
        let (large_status, large_answer) =
            post(&state, path, serde_json::to_vec(&large).unwrap()).await;
        assert_eq!(
            (small_status, large_status),
            (StatusCode::OK, StatusCode::OK)
        );
        for field in ["uid", "allowed", "status", "patchType"] {
            assert_eq!(
                small_answer["response"][field], large_answer["response"][field],
                "{fixture}: {field}"
            );
        }
    }
    // Unreadable, and too large to be read inline: still a 400 with the reason.
    let mut garbage = b"{\"apiVersion\": \"admission.k8s.io/v1\", \"kind\": [".to_vec();
    garbage.resize(64 * 1024, b' ');
    let (status, body) = post(&state, "/validate", garbage).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("not a valid AdmissionReview")),
        "{body}"
    );
}

/// Over the wire (the review read as a document, not a `Value`): an object stored before the
/// policy refused one of its values can still be updated where that value stays, and can
/// always be let go of by removing its finalizers.
#[tokio::test]
async fn stored_violations_are_ratcheted_and_finalizer_removal_is_never_refused() {
    let state = state();
    let base = update_review();
    let review = |old: &Value, new: &Value| {
        let mut review = base.clone();
        review["request"]["oldObject"] = old.clone();
        review["request"]["object"] = new.clone();
        serde_json::to_vec(&review).expect("json")
    };
    let mut stored = base["request"]["oldObject"].clone();
    // Lower-case currency codes: refused by today's pattern, stored before it.
    stored["spec"]["currencies"] = serde_json::json!(["usd"]);
    stored["metadata"]["finalizers"] = serde_json::json!(["payments.example.com/hold"]);

    let mut other_field = stored.clone();
    other_field["spec"]["timeoutSeconds"] = serde_json::json!(60);
    let (status, answer) = post(&state, "/validate", review(&stored, &other_field)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert!(
        answer["response"]["warnings"]
            .to_string()
            .contains("(admitted: unchanged since it was stored)"),
        "{answer}"
    );
    let mut changed = stored.clone();
    changed["spec"]["currencies"] = serde_json::json!(["usd", "eur"]);
    let (_, answer) = post(&state, "/validate", review(&stored, &changed)).await;
    assert_eq!(answer["response"]["allowed"], false, "{answer}");

    // A policy-level validation (as in a ValidatingAdmissionPolicy, never ratcheted) that the
    // stored name breaks refuses any other update, but never the removal of a finalizer.
    let long_name = "pg-".repeat(15);
    stored["metadata"]["name"] = serde_json::json!(long_name);
    other_field["metadata"]["name"] = serde_json::json!(long_name);
    let (_, answer) = post(&state, "/validate", review(&stored, &other_field)).await;
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    let mut released = stored.clone();
    released["metadata"]["finalizers"] = serde_json::json!([]);
    let (_, answer) = post(&state, "/validate", review(&stored, &released)).await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
}

/// The reconciler's restore of replicas 7 → 2 (the shipped transition rule allows at most
/// halving) is judged on the state it returns to when the trusted identity sends it with a new
/// marker; the same update from anyone else, or without a new marker, is a change like any other.
#[tokio::test]
async fn only_the_reconcilers_restore_is_judged_on_the_state_it_returns_to() {
    const RECONCILER: &str = "system:serviceaccount:tollgate:tollgate-reconciler";
    let state = state_with(HttpConfig {
        restorer: Some(RECONCILER.into()),
        ..HttpConfig::default()
    });
    let base = update_review();
    let mut failed = base["request"]["oldObject"].clone();
    failed["spec"]["replicas"] = serde_json::json!(7);
    let mut restored = failed.clone();
    restored["spec"]["replicas"] = serde_json::json!(2);
    let marker = r#"{"from":2,"to":1,"manual":false}"#;
    restored["metadata"]["annotations"] = serde_json::json!({"tollgate.dev/restored": marker});
    let review = |username: &str, old: &Value, new: &Value| {
        let mut review = base.clone();
        review["request"]["oldObject"] = old.clone();
        review["request"]["object"] = new.clone();
        review["request"]["userInfo"] = serde_json::json!({"username": username});
        serde_json::to_vec(&review).expect("json")
    };
    let allowed = |answer: &Value| answer["response"]["allowed"] == true;

    let (_, answer) = post(&state, "/validate", review(RECONCILER, &failed, &restored)).await;
    assert!(allowed(&answer), "{answer}");
    let (_, answer) = post(&state, "/validate", review("alice", &failed, &restored)).await;
    assert!(!allowed(&answer), "{answer}");
    assert!(
        answer
            .to_string()
            .contains("replicas may drop by at most half")
    );
    // The marker already there: nothing is being restored by this update.
    let mut marked = failed.clone();
    marked["metadata"]["annotations"] = restored["metadata"]["annotations"].clone();
    let (_, answer) = post(&state, "/validate", review(RECONCILER, &marked, &restored)).await;
    assert!(!allowed(&answer), "{answer}");
    // A restore is still held to today's state rules and to immutable fields.
    let mut broken = restored.clone();
    broken["spec"]["replicas"] = serde_json::json!(0);
    broken["spec"]["provider"] = serde_json::json!("adyen");
    let (_, answer) = post(&state, "/validate", review(RECONCILER, &failed, &broken)).await;
    let message = answer["response"]["status"]["message"].to_string();
    assert!(!allowed(&answer), "{answer}");
    assert!(
        message.contains("spec.replicas") && message.contains("spec.provider"),
        "{message}"
    );
}
