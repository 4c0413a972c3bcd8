//! `POST /validate` and `POST /mutate`: AdmissionReview in, AdmissionReview out.

mod decide;
mod wire;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tollgate_engine::Store;

pub use decide::{Mode, evaluate};
use wire::{AdmissionResponseOut, AdmissionReviewIn};
pub use wire::{AdmissionReviewOut, ReviewParseError};

use super::body::ReviewBody;
use super::error::ApiError;
use super::observe::{self, DecisionTag};
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
    observe::record_review(
        &request.uid,
        format_args!("{}/{}", request.kind.group, request.kind.kind),
        request.operation_name(),
    );
    let uid = request.uid.clone();
    let (group, kind) = (request.kind.group.clone(), request.kind.kind.clone());
    let outcome = state
        .run_bounded(
            query.as_deref(),
            body.len(),
            |store| store.evaluation_is_linear(&group, &kind),
            move |store| evaluate(store, &request, mode),
        )
        .await;
    let response =
        outcome.unwrap_or_else(|e| AdmissionResponseOut::errored(&uid, 500, e.to_string()));
    let decision = response.decision().as_str();
    let mut http = Json(AdmissionReviewOut::new(&api_version, response)).into_response();
    http.extensions_mut().insert(DecisionTag(decision));
    http
}
