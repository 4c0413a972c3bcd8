//! `POST /validate` and `POST /mutate`: AdmissionReview in, AdmissionReview out.

mod decide;
mod wire;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tollgate_engine::Store;

pub use decide::{Mode, evaluate};
use wire::AdmissionResponseOut;
pub use wire::{AdmissionReviewIn, AdmissionReviewOut, ReviewParseError};

use super::body::ReviewBody;
use super::error::ApiError;
use super::observe::{DecisionTag, ReviewTag};
use super::state::AppState;

/// Everything the server or `tollgate review` does with one AdmissionReview body: the exact
/// response document that goes on the wire.
pub fn review_body(
    store: &Store,
    body: &[u8],
    mode: Mode,
) -> Result<AdmissionReviewOut, ReviewParseError> {
    let (api_version, request) = AdmissionReviewIn::from_slice(body)?;
    Ok(AdmissionReviewOut::new(
        &api_version,
        evaluate(store, &request, mode),
    ))
}

pub async fn validate(state: State<AppState>, query: RawQuery, body: ReviewBody) -> Response {
    admit(state, query, body, Mode::Validate).await
}

pub async fn mutate(state: State<AppState>, query: RawQuery, body: ReviewBody) -> Response {
    admit(state, query, body, Mode::Mutate).await
}

async fn admit(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    ReviewBody(body): ReviewBody,
    mode: Mode,
) -> Response {
    let (api_version, request) = match AdmissionReviewIn::from_slice(&body) {
        Ok(parsed) => parsed,
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let review = ReviewTag {
        uid: request.uid.clone(),
        group: request.kind.group.clone(),
        kind: request.kind.kind.clone(),
        operation: request.operation_name(),
    };
    let outcome = state
        .run_bounded(
            query.as_deref(),
            body.len(),
            |store| store.evaluation_is_linear(&review.group, &review.kind),
            move |store| evaluate(store, &request, mode),
        )
        .await;
    let response =
        outcome.unwrap_or_else(|e| AdmissionResponseOut::errored(&review.uid, 500, e.to_string()));
    let decision = response.decision().as_str();
    let mut http = Json(AdmissionReviewOut::new(&api_version, response)).into_response();
    http.extensions_mut().insert(DecisionTag(decision));
    http.extensions_mut().insert(review);
    http
}
