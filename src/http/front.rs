//! Where every request enters the HTTP layer: the axum router, with the same layers (panic
//! guard, observation, client check) for reviews, probes, metrics and unknown paths alike.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::Request;
use axum::response::Response;
use tower::ServiceExt;

use super::state::AppState;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The whole HTTP surface of one server: what each connection hands its requests to.
#[derive(Clone)]
pub struct Front(Router);

impl Front {
    pub fn new(state: AppState) -> Self {
        Self(super::router(state))
    }

    /// One request, answered: never an error, never a dropped request (a panic becomes a 500
    /// with a JSON reason, by the router's outermost layer).
    pub async fn handle<B>(self, request: Request<B>) -> Response
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let Ok(response) = self.0.oneshot(request.map(Body::new)).await;
        response
    }
}
