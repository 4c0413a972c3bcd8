//! Where every request enters the HTTP layer. Reviews — one per write in the cluster, the hot
//! path — are checked, read, judged and observed right here; everything else (probes, metrics,
//! unknown paths) goes through the axum router. Taking reviews past the router spares each one
//! the router's service clone, boxed futures and two middleware layers: about a tenth of a
//! review's CPU at a steady 4000 req/s in a profile (see BENCHMARKS.md).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Method, Request};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use tower::ServiceExt;

use super::admission::{Admission, Mode};
use super::conversion::Conversion;
use super::guard::{self, AnonymousClient};
use super::routes::Endpoint;
use super::state::AppState;
use super::{body, observe, probes, review};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The whole HTTP surface of one server: what each connection hands its requests to.
#[derive(Clone)]
pub struct Front(Arc<Inner>);

struct Inner {
    state: AppState,
    router: Router,
}

impl Front {
    pub fn new(state: AppState) -> Self {
        Self(Arc::new(Inner {
            router: super::router(state.clone()),
            state,
        }))
    }

    /// One request, answered: never an error, never a dropped request (a panic becomes a 500
    /// with a JSON reason).
    pub async fn handle<B>(&self, request: Request<B>) -> Response
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let review =
            Endpoint::from_path(request.uri().path()).filter(|e| e.review_label().is_some());
        let Some(endpoint) = review else {
            let Ok(response) = self.0.router.clone().oneshot(request.map(Body::new)).await;
            return response;
        };
        let state = &self.0.state;
        let span = observe::request_span(request.method(), request.uri().path());
        let answered = observe::observed(
            state,
            endpoint.review_label(),
            span,
            answer(state, endpoint, request),
        );
        AssertUnwindSafe(answered)
            .catch_unwind()
            .await
            .unwrap_or_else(probes::panic_response)
    }
}

/// A review request, from its headers to the response document: the same checks, in the same
/// order, as every endpoint of the router gets, then the body and the review itself.
async fn answer<B>(state: &AppState, endpoint: Endpoint, request: Request<B>) -> Response
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (parts, body) = request.into_parts();
    let anonymous = parts.extensions.get::<AnonymousClient>().is_some();
    if let Err(refused) = guard::check_client(state, parts.uri.path(), anonymous) {
        return refused.into_response();
    }
    if parts.method != Method::POST {
        return probes::wrong_method(&parts.method, parts.uri.path()).into_response();
    }
    let _slot = match guard::review_slot(state) {
        Ok(slot) => slot,
        Err(busy) => return busy.into_response(),
    };
    let body = match body::read(state.config(), &parts.headers, body).await {
        Ok(body) => body,
        Err(refused) => return refused.into_response(),
    };
    let query = parts.uri.query();
    match endpoint {
        Endpoint::Validate => review::run(Admission(Mode::Validate), state, query, body).await,
        Endpoint::Mutate => review::run(Admission(Mode::Mutate), state, query, body).await,
        Endpoint::Convert => review::run(Conversion, state, query, body).await,
        Endpoint::Healthz | Endpoint::Readyz | Endpoint::Metrics => {
            probes::unknown(parts.uri.path()).into_response()
        }
    }
}
