//! Where every request enters the HTTP layer. Reviews — one per write in the cluster, the hot
//! path — are checked, read, judged and observed right here; everything else (probes, metrics,
//! unknown paths) goes through the axum router. Taking reviews past the router spares each one
//! the router's service clone, boxed futures and two middleware layers: about a tenth of a
//! review's CPU at a steady 4000 req/s in a profile (see BENCHMARKS.md).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::request::Parts;
use axum::http::{Method, Request};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use futures_util::future::Either;
use tower::ServiceExt;
use tracing::Span;

use super::admission::{Admission, Mode};
use super::conversion::Conversion;
use super::guard::{self, AnonymousClient};
use super::observe::Answered;
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
    ///
    /// Not an `async fn`: the future returned holds the request once (an `async fn` would hold
    /// it as its argument and again in each future it awaits), and it is moved whole a few
    /// times on its way to being polled. It owns this `Front` (no second reference count to
    /// bump on a counter every connection shares).
    pub fn handle<B>(self, request: Request<B>) -> impl Future<Output = Response> + Send + use<B>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let review =
            Endpoint::from_path(request.uri().path()).filter(|e| e.review_label().is_some());
        let Some(endpoint) = review else {
            return Either::Left(async move {
                let Ok(response) = self.0.router.clone().oneshot(request.map(Body::new)).await;
                response
            });
        };
        let span = observe::request_span(request.method(), request.uri().path());
        let (parts, body) = request.into_parts();
        Either::Right(
            AssertUnwindSafe(answer(self, endpoint, parts, body, span))
                .catch_unwind()
                .map(|answered| answered.unwrap_or_else(probes::panic_response)),
        )
    }
}

/// A review, observed (gauge, metrics, log line). The request's parts stay here; the work
/// observed borrows them, so its future holds no second copy. (An `async` block, not an
/// `async fn`, whose arguments would each be held twice: as passed, and as bound in its body.)
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would hold the request's parts twice"
)]
fn answer<B>(
    front: Front,
    endpoint: Endpoint,
    parts: Parts,
    body: B,
    span: Span,
) -> impl Future<Output = Response>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    async move {
        let state = &front.0.state;
        let label = endpoint.review_label();
        observe::observed(state, label, span, || judge(state, endpoint, &parts, body)).await
    }
}

/// A review request, from its headers to the response document: the same checks, in the same
/// order, as every endpoint of the router gets, then the body and the review itself.
async fn judge<B>(state: &AppState, endpoint: Endpoint, parts: &Parts, body: B) -> Answered
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let anonymous = parts.extensions.get::<AnonymousClient>().is_some();
    if let Err(refused) = guard::check_client(state, parts.uri.path(), anonymous) {
        return refused.into_response().into();
    }
    if parts.method != Method::POST {
        return probes::wrong_method(&parts.method, parts.uri.path())
            .into_response()
            .into();
    }
    let _slot = match guard::review_slot(state) {
        Ok(slot) => slot,
        Err(busy) => return busy.into_response().into(),
    };
    let body = match body::read(state.config(), &parts.headers, body).await {
        Ok(body) => body,
        Err(refused) => return refused.into_response().into(),
    };
    let query = parts.uri.query();
    match endpoint {
        Endpoint::Validate => review::run(Admission(Mode::Validate), state, query, body).await,
        Endpoint::Mutate => review::run(Admission(Mode::Mutate), state, query, body).await,
        Endpoint::Convert => review::run(Conversion, state, query, body).await,
        Endpoint::Healthz | Endpoint::Readyz | Endpoint::Metrics => {
            probes::unknown(parts.uri.path()).into_response().into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every review's future is moved whole a few times (into the panic guard, an h2 stream's
    /// task): at 6 KiB those copies were a sixth of an h2 review's instructions above the
    /// transport. The waiting branches are boxed, the request is held once (2 KiB while each
    /// layer was an `async fn` holding its own copy), the review as read is not kept across an
    /// `await`; this catches one that grows back (the bound has room for compiler changes, not
    /// for a branch inlined again).
    #[test]
    fn a_review_future_stays_small() {
        let state = AppState::new(Default::default(), Default::default(), Default::default());
        let front = Front::new(state.clone());
        let request = Request::new(http_body_util::Empty::<Bytes>::new());
        let handling = std::mem::size_of_val(&front.handle(request));
        assert!(
            handling <= 1024,
            "Front::handle's future is {handling} bytes"
        );
        let running = std::mem::size_of_val(&review::run(
            Admission(Mode::Validate),
            &state,
            None,
            Bytes::new(),
        ));
        assert!(running <= 320, "review::run's future is {running} bytes");
    }
}
