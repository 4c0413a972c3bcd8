//! HTTP layer. `routes` lists every endpoint once. A request travels through `observe` (metrics
//! and the log line), `body` (extract the review), then the handlers in `admission` and
//! `conversion` (decode, evaluate, encode — inline or on the bounded `worker` pool, as `review`
//! decides) or `probes`. No policy logic here.

mod admission;
mod body;
mod conversion;
mod deadline;
mod error;
mod guard;
mod observe;
mod probes;
mod review;
mod routes;
mod state;
mod worker;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, get, post};
use tower_http::catch_panic::CatchPanicLayer;

pub use admission::{
    AdmissionReviewIn, AdmissionReviewOut, Mode, ReviewParseError, review_body as admission_review,
};
pub use conversion::{CONVERSION_KIND, ConversionParseError, review_body as conversion_review};
pub use guard::AnonymousClient;
pub use routes::Endpoint;
pub use state::{AppState, DEFAULT_MAX_IN_FLIGHT, HttpConfig, SharedStore};

/// The handler behind each endpoint of the table.
fn handler(endpoint: Endpoint) -> MethodRouter<AppState> {
    match endpoint {
        Endpoint::Validate => post(admission::validate),
        Endpoint::Mutate => post(admission::mutate),
        Endpoint::Convert => post(conversion::convert),
        Endpoint::Healthz => get(probes::healthz),
        Endpoint::Readyz => get(probes::readyz),
        Endpoint::Metrics => get(probes::metrics),
    }
}

pub fn router(state: AppState) -> Router {
    Endpoint::ALL
        .into_iter()
        .fold(Router::new(), |router, endpoint| {
            router.route(endpoint.path(), handler(endpoint))
        })
        .fallback(probes::not_found)
        .method_not_allowed_fallback(probes::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        // Last resort: a panic outside evaluation still yields a JSON answer, never a dropped connection.
        .layer(CatchPanicLayer::custom(probes::panic_response))
        // The body limit is enforced (with a JSON reason) by the review extractor.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// What a connection beyond the connection cap gets: every request answered at once with 503
/// and `Retry-After` (the server closes the connection after it), never a hang or a silent drop.
pub fn overflow_router() -> Router {
    Router::new().fallback(|| async {
        error::ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too many connections to this replica; retry shortly",
        )
        .retry_after(1)
    })
}
