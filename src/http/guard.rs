//! Who may call what, and how many reviews run at once: the checks a request passes before its
//! body is read.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::error::ApiError;
use super::routes::Endpoint;
use super::state::AppState;

/// Set by the server on requests from a connection that presented no client certificate while
/// mutual TLS is on (`serve --client-ca` with `--anonymous-endpoint`).
#[derive(Debug, Clone, Copy)]
pub struct AnonymousClient;

/// Reviews being read or judged at once, across all connections. Excess reviews are answered at
/// once with 429 and `Retry-After` instead of queueing without bound.
#[derive(Debug, Clone)]
pub struct InFlightLimit(Arc<Semaphore>);

impl InFlightLimit {
    pub fn new(max: usize) -> Self {
        Self(Arc::new(Semaphore::new(max.max(1))))
    }
}

pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let endpoint = Endpoint::from_path(request.uri().path());
    if request.extensions().get::<AnonymousClient>().is_some()
        && !endpoint.is_some_and(|e| state.config().anonymous_endpoints.contains(&e))
    {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} needs a client certificate signed by the configured client CA",
                request.uri().path()
            ),
        )
        .into_response();
    }
    if endpoint.and_then(Endpoint::review_label).is_none() {
        return next.run(request).await;
    }
    let Ok(_permit) = Arc::clone(&state.in_flight_limit().0).try_acquire_owned() else {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many reviews in flight (limit {}); retry shortly",
                state.config().max_in_flight
            ),
        )
        .retry_after(1)
        .into_response();
    };
    next.run(request).await
}
