//! The router without a socket (tower `oneshot`): what only needs HTTP semantics.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed step should fail the test loudly

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tollgate::http::{AppState, HttpConfig, router};
use tollgate::metrics::Metrics;
use tower::ServiceExt;

fn state() -> AppState {
    let store = tollgate_engine::load_dir(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies"
    )))
    .unwrap_or_else(|e| panic!("{e}"));
    AppState::new(HttpConfig::default(), store, Metrics::default())
}

async fn get(state: &AppState, path: &str) -> (StatusCode, Value) {
    let response = router(state.clone())
        .oneshot(Request::get(path).body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
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
