//! Who may call what, and how many reviews run at once: the checks a request passes before its
//! body is read.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::SemaphorePermit;

use super::error::ApiError;
use super::routes::Endpoint;
use super::state::AppState;

/// Set by the server on requests from a connection that presented no client certificate while
/// mutual TLS is on (`serve --client-ca` with `--anonymous-endpoint`).
#[derive(Debug, Clone, Copy)]
pub struct AnonymousClient;

/// The router's layer (probes, metrics, unknown paths): only the client check applies there.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let anonymous = request.extensions().get::<AnonymousClient>().is_some();
    match check_client(&state, request.uri().path(), anonymous) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// A client without a certificate may only call the endpoints configured for it.
pub fn check_client(state: &AppState, path: &str, anonymous: bool) -> Result<(), ApiError> {
    let allowed = || {
        Endpoint::from_path(path).is_some_and(|e| state.config().anonymous_endpoints.contains(&e))
    };
    if anonymous && !allowed() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{path} needs a client certificate signed by the configured client CA"),
        ));
    }
    Ok(())
}

/// A slot for one review, held until it is answered; none left means 429 before the body is
/// read.
pub fn review_slot(state: &AppState) -> Result<SemaphorePermit<'_>, ApiError> {
    state.in_flight_limit().try_acquire().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many reviews in flight (limit {}); retry shortly",
                state.config().max_in_flight
            ),
        )
        .retry_after(1)
    })
}
