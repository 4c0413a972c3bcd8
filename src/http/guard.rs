//! Who may call what, and how many reviews run at once: the checks a request passes before its
//! body is read.

use std::convert::Infallible;
use std::future::Ready;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;
use tokio::sync::SemaphorePermit;
use tower::{Layer, Service};

use super::error::ApiError;
use super::routes::Endpoint;
use super::state::AppState;

/// Set by the server on requests from a connection that presented no client certificate while
/// mutual TLS is on (`serve --client-ca` with `--anonymous-endpoint`).
#[derive(Debug, Clone, Copy)]
pub struct AnonymousClient;

/// The router's layer: the client check, for every request (a tower layer, so no future or
/// service is boxed per request).
#[derive(Clone)]
pub struct GuardLayer(pub AppState);

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            state: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    state: AppState,
}

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let anonymous = request.extensions().get::<AnonymousClient>().is_some();
        match check_client(&self.state, request.uri().path(), anonymous) {
            Ok(()) => Either::Right(self.inner.call(request)),
            Err(refused) => Either::Left(std::future::ready(Ok(refused.into_response()))),
        }
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
