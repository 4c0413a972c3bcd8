//! One tracing span and one set of metrics per request.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::routes::Endpoint;
use super::state::AppState;

/// Tagged onto responses so the observation layer can count decisions without parsing bodies.
#[derive(Debug, Clone, Copy)]
pub struct DecisionTag(pub &'static str);

/// Fills the request span (opened by `observe`) with what only the decoded review knows.
pub fn record_review(uid: &str, kind: impl std::fmt::Display, operation: &str) {
    let span = tracing::Span::current();
    span.record("uid", uid);
    span.record("kind", tracing::field::display(kind));
    span.record("operation", operation);
}

pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    let endpoint = Endpoint::from_path(&path).and_then(Endpoint::review_label);
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %path,
        uid = tracing::field::Empty,
        kind = tracing::field::Empty,
        operation = tracing::field::Empty,
        decision = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
    );
    let started = Instant::now();
    let _in_flight = InFlight::enter(&state);
    let response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let decision = response
        .extensions()
        .get::<DecisionTag>()
        .map_or("none", |d| d.0);
    span.record("decision", decision);
    span.record("latency_ms", elapsed.as_secs_f64() * 1000.0);
    if let Some(endpoint) = endpoint {
        state
            .metrics()
            .record(endpoint, decision, elapsed.as_secs_f64());
        span.in_scope(|| tracing::info!(status = response.status().as_u16(), "review answered"));
    } else {
        span.in_scope(|| tracing::debug!(status = response.status().as_u16(), "request answered"));
    }
    response
}

/// Keeps the in-flight gauge right even when the client goes away mid-request.
struct InFlight(AppState);

impl InFlight {
    fn enter(state: &AppState) -> Self {
        state.metrics().in_flight.inc();
        Self(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics().in_flight.dec();
    }
}
