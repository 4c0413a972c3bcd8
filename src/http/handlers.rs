//! Decode, dispatch, encode. Decisions come from `admission::evaluate`.

use std::any::Any;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::body::ReviewBody;
use super::error::ApiError;
use super::{AppState, DecisionTag};
use crate::admission::{self, AdmissionResponseOut, AdmissionReviewIn, AdmissionReviewOut, Mode};
use crate::conversion;

pub async fn validate(state: State<AppState>, query: RawQuery, body: ReviewBody) -> Response {
    admit(state, query, body, Mode::Validate).await
}

pub async fn mutate(state: State<AppState>, query: RawQuery, body: ReviewBody) -> Response {
    admit(state, query, body, Mode::Mutate).await
}

async fn admit(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    ReviewBody(body): ReviewBody,
    mode: Mode,
) -> Response {
    let (api_version, request) = match AdmissionReviewIn::from_slice(&body) {
        Ok(parsed) => parsed,
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let span = tracing::Span::current();
    span.record("uid", request.uid.as_str());
    span.record(
        "kind",
        format!("{}/{}", request.kind.group, request.kind.kind).as_str(),
    );
    span.record(
        "operation",
        format!("{:?}", request.operation).to_uppercase().as_str(),
    );

    let uid = request.uid.clone();
    let outcome = state
        .run_bounded(query.as_deref(), move |store| {
            admission::evaluate(store, &request, mode)
        })
        .await;
    let response =
        outcome.unwrap_or_else(|e| AdmissionResponseOut::errored(&uid, 500, e.to_string()));
    let decision = response.decision().as_str();
    let mut http = Json(AdmissionReviewOut::new(&api_version, response)).into_response();
    http.extensions_mut().insert(DecisionTag(decision));
    http
}

pub async fn convert(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    ReviewBody(body): ReviewBody,
) -> Response {
    let (types, request) = match conversion::parse(&body) {
        Ok(parsed) => parsed,
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let span = tracing::Span::current();
    span.record("uid", request.uid.as_str());
    span.record("kind", request.desired_api_version.as_str());
    span.record("operation", "CONVERT");

    let uid = request.uid.clone();
    // Thousands of objects in one review are CPU work: it runs on the bounded worker pool.
    let outcome = state
        .run_bounded(query.as_deref(), move |store| {
            conversion::convert_request(store, &request)
        })
        .await;
    let response = outcome.unwrap_or_else(|e| {
        let mut failed = kube::core::conversion::ConversionResponse::invalid(
            kube::core::Status::failure(&e.to_string(), "InternalError"),
        );
        failed.uid = uid;
        failed
    });
    let decision = if response.result.status == Some(kube::core::response::StatusSummary::Success) {
        "converted"
    } else {
        "failed"
    };
    let mut http = Json(conversion::review::into_review(types, response)).into_response();
    http.extensions_mut().insert(DecisionTag(decision));
    http
}

pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.is_ready() {
        Json(json!({"status": "ready", "policies": state.store().current().policies().len()}))
            .into_response()
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
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", uri.path()),
    )
}

pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {}", uri.path()),
    )
}

pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = crate::worker::panic_message(panic.as_ref());
    tracing::error!(panic = %detail, "request handler panicked");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error").into_response()
}
