//! HTTP layer. `routes` lists every endpoint once; `front` hands every request through the same
//! layers around the axum router: `observe` (metrics and the log line), `guard` (the client
//! check), and a panic turned into a 500. A review's handler (`review`) takes a slot among the
//! reviews in flight, reads the body within limits (`body`) and runs `admission` or
//! `conversion` (decode, evaluate, encode — inline or on the bounded `worker` pool); probes
//! answer in `probes`. No policy logic here.

mod admission;
mod body;
mod conversion;
mod deadline;
mod error;
mod front;
mod guard;
mod observe;
mod probes;
mod review;
mod routes;
mod state;
mod worker;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::routing::{MethodRouter, get, post};

// The load benchmark's converting client runs at the idle policy the same way.
pub use admission::{
    AdmissionReviewIn, AdmissionReviewOut, Mode, ReviewParseError, review_body as admission_review,
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

/// The handler behind each endpoint.
fn handler(endpoint: Endpoint, state: &AppState) -> MethodRouter<AppState> {
    fn review<R: review::Review>(kind: R) -> MethodRouter<AppState> {
        post(move |State(state): State<AppState>, request: Request| {
            review::endpoint(kind.clone(), state, request)
        })
    }
    let traced = state.traces().is_some();
    let admission = |mode| admission::Admission {
        mode,
        restorer: state.config().restorer.as_deref().map(Arc::from),
        traced,
    };
    match endpoint {
        Endpoint::Validate => review(admission(Mode::Validate)),
        Endpoint::Mutate => review(admission(Mode::Mutate)),
        Endpoint::Convert => review(conversion::Conversion { traced }),
        Endpoint::Healthz => get(probes::healthz),
        Endpoint::Readyz => get(probes::readyz),
        Endpoint::Metrics => get(probes::metrics),
    }
}

/// Every endpoint, with the answers for unknown paths and wrong methods (`Front` puts the
/// layers around it).
fn router(state: AppState) -> Router {
    Endpoint::ALL
        .into_iter()
        .fold(Router::new(), |router, endpoint| {
            router.route(endpoint.path(), handler(endpoint, &state))
        })
        .fallback(probes::not_found)
        .method_not_allowed_fallback(probes::method_not_allowed)
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
