//! Probes, metrics, and the answers for unknown routes, wrong methods and handler panics.

use std::any::Any;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use super::state::AppState;

pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.is_ready() {
        let store = state.store().current();
        let mut body = json!({"status": "ready", "policies": store.policies().len(),
                              "policySet": store.digest()});
        // Still ready: this replica answers reviews correctly, and a registration failure is
        // usually the apiserver's to fix; failing readiness would take every replica out of
        // the Service at once. The reason is here, in the log and in the metrics.
        if let Some(problem) = state.registration_problem() {
            body["registration"] = json!({"failing": problem});
        }
        Json(body).into_response()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics().encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}"),
        )
        .into_response(),
    }
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    unknown(uri.path())
}

pub fn unknown(path: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no such endpoint: {path}"))
}

pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    wrong_method(&method, uri.path())
}

pub fn wrong_method(method: &axum::http::Method, path: &str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {path}"),
    )
}

pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = super::worker::panic_message(panic.as_ref());
    tracing::error!(panic = %detail, "request handler panicked");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error").into_response()
}
