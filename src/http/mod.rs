//! HTTP layer. `routes` lists every endpoint once. A request enters at `front`: a review passes
//! `guard` (client and in-flight checks), `body` (read within limits) and the handlers in
//! `admission` and `conversion` (decode, evaluate, encode — inline or on the bounded `worker`
//! pool, as `review` decides), all under `observe` (metrics and the log line); anything else
//! goes through the axum router to `probes`. No policy logic here.

mod admission;
mod body;
mod conversion;
mod deadline;
mod error;
mod front;
mod guard;
mod json_reader;
#[cfg(test)]
mod json_strategies;
mod json_writer;
mod observe;
mod probes;
mod review;
mod routes;
mod state;
mod worker;

use axum::Router;
use axum::routing::{MethodRouter, get};
use tower_http::catch_panic::CatchPanicLayer;

// The load benchmark's converting client runs at the idle policy the same way.
pub use admission::{
    AdmissionReviewIn, AdmissionReviewOut, Mode, ObjectForm, ReviewParseError,
    review_body as admission_review,
};
pub use conversion::{
    CONVERSION_KIND, ConversionParseError, answer_body as conversion_answer,
    review_body as conversion_review,
};
pub use front::Front;
pub use guard::AnonymousClient;
pub use routes::Endpoint;
pub use state::{AppState, DEFAULT_MAX_IN_FLIGHT, HttpConfig, SharedStore};
#[doc(hidden)]
pub use worker::enter_idle_policy;

/// Where the direct review reader (`json_reader`) reads `body` otherwise than `serde` would —
/// as a JSON value, an AdmissionReview or a ConversionReview — for the fuzz targets.
pub fn reader_disagreement(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    json_reader::disagreement(text)
        .or_else(|| admission::read_disagreement(text))
        .or_else(|| conversion::read_disagreement(text))
}

/// One JSON text read by the direct reader, as a `serde_json::Value` and as a document
/// (`None` where it leaves the text to `serde_json`): for the benchmarks comparing the two.
pub fn read_json(text: &str) -> Option<serde_json::Value> {
    json_reader::value(text).ok()
}

/// See `read_json`.
pub fn read_document(text: &str) -> Option<tollgate_engine::document::Document<'_>> {
    json_reader::document(text).ok()
}

/// The handler behind each endpoint the router serves; reviews are served by `front` itself.
fn handler(endpoint: Endpoint) -> Option<MethodRouter<AppState>> {
    match endpoint {
        Endpoint::Validate | Endpoint::Mutate | Endpoint::Convert => None,
        Endpoint::Healthz => Some(get(probes::healthz)),
        Endpoint::Readyz => Some(get(probes::readyz)),
        Endpoint::Metrics => Some(get(probes::metrics)),
    }
}

/// Everything but reviews: probes, metrics, and the answers for unknown paths and wrong methods.
fn router(state: AppState) -> Router {
    Endpoint::ALL
        .into_iter()
        .filter_map(|endpoint| Some((endpoint, handler(endpoint)?)))
        .fold(Router::new(), |router, (endpoint, handler)| {
            router.route(endpoint.path(), handler)
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
