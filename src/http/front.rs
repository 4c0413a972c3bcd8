//! Where every request enters the HTTP layer: the axum router, with the same layers (panic
//! guard, observation, client check) for reviews, probes, metrics and unknown paths alike.
//!
//! The layers wrap the router once rather than being added with `Router::layer`, which wraps
//! every route on its own: each layer then boxes its service and its future again per request
//! (three boxed futures and as many boxed service clones per review, for layers that need
//! neither the matched route nor anything else routing finds out).

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::task::Poll;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::Request;
use axum::response::Response;
use tower::{Layer, ServiceExt};

use super::guard::{Guard, GuardLayer};
use super::observe::{Observe, ObserveLayer};
use super::probes;
use super::state::AppState;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The whole HTTP surface of one server: what each connection hands its requests to.
#[derive(Clone)]
pub struct Front(Observe<Guard<Router>>);

impl Front {
    pub fn new(state: AppState) -> Self {
        let router = super::router(state.clone());
        Self(ObserveLayer(state.clone()).layer(GuardLayer(state).layer(router)))
    }

    /// One request, answered: never an error, never a dropped request (a panic anywhere below
    /// becomes a 500 with a JSON reason).
    pub async fn handle<B>(self, request: Request<B>) -> Response
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        contained(self.0.oneshot(request.map(Body::new))).await
    }
}

/// The answer `answering` gives, or a 500 with a JSON reason if it panics.
async fn contained(answering: impl Future<Output = Result<Response, Infallible>>) -> Response {
    let mut answering = pin!(answering);
    std::future::poll_fn(|cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| answering.as_mut().poll(cx))) {
            Ok(Poll::Ready(Ok(response))) => Poll::Ready(response),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(probes::panic_response(panic)),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn a_panic_while_answering_becomes_a_500_with_a_json_reason() {
        let response = contained(async {
            tokio::task::yield_now().await;
            panic!("boom")
        })
        .await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = response.into_body().collect().await.map(|b| b.to_bytes());
        let reason: serde_json::Value =
            serde_json::from_slice(&body.unwrap_or_default()).unwrap_or_default();
        assert_eq!(reason["message"], "internal server error");
        assert_eq!(reason["code"], 500);
    }

    #[tokio::test]
    async fn an_answer_passes_through() {
        let response = contained(async { Ok(Response::new(Body::from("ok"))) }).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
}
