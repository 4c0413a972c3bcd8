//! `POST /convert`: ConversionReview in, ConversionReview out.

mod wire;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kube::core::Status;
use kube::core::conversion::ConversionResponse;
use kube::core::response::StatusSummary;

pub use wire::{CONVERSION_KIND, ConversionParseError, review_body};

use super::body::ReviewBody;
use super::error::ApiError;
use super::observe::{DecisionTag, ReviewTag};
use super::state::AppState;

pub async fn convert(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    ReviewBody(body): ReviewBody,
) -> Response {
    let (types, request) = match wire::parse(&body) {
        Ok(parsed) => parsed,
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let review = ReviewTag {
        uid: request.uid.clone(),
        group: request.desired_api_version.clone(),
        kind: String::new(),
        operation: "CONVERT",
    };
    // A review of thousands of objects is CPU work: above the inline size it runs on the
    // bounded worker pool.
    let outcome = state
        .run_bounded(
            query.as_deref(),
            body.len(),
            |_| true,
            move |store| wire::convert_request(store, request),
        )
        .await;
    let response = outcome.unwrap_or_else(|e| {
        let mut failed =
            ConversionResponse::invalid(Status::failure(&e.to_string(), "InternalError"));
        failed.uid = review.uid.clone();
        failed
    });
    let decision = if response.result.status == Some(StatusSummary::Success) {
        "converted"
    } else {
        "failed"
    };
    let mut http = Json(wire::into_review(types, response)).into_response();
    http.extensions_mut().insert(DecisionTag(decision));
    http.extensions_mut().insert(review);
    http
}
