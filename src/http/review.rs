//! Where a review's work runs, the same for admission and conversion.
//!
//! A small review (up to `inline_max_bytes`) is read on its connection's task; if its policies
//! cost no more than reading it (no iterating CEL), it is judged and encoded right there too —
//! microseconds, less than a hop to another thread. Everything else runs on the bounded worker
//! pool under the caller's deadline. A large review goes to the pool whole: reading, judging,
//! encoding and freeing a megabyte of JSON never occupies a connection task, so it cannot delay
//! the small requests sharing that task's thread.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tollgate_engine::Store;

use super::error::ApiError;
use super::observe::{ReviewNotes, ReviewTag, Reviewed};
use super::state::AppState;
use super::worker::{self, WorkError};
use super::{body, guard};

/// The finished answer: the response document and what the log and metrics say of it.
pub struct Answer {
    pub body: Vec<u8>,
    pub decision: &'static str,
    /// What the review's trace records besides the decision; `None` when reviews are not traced.
    pub notes: Option<Box<ReviewNotes>>,
}

impl Answer {
    pub fn new(body: Vec<u8>, decision: &'static str) -> Self {
        Self {
            body,
            decision,
            notes: None,
        }
    }

    pub fn noted(self, notes: Option<ReviewNotes>) -> Self {
        Self {
            notes: notes.map(Box::new),
            ..self
        }
    }
}

/// One kind of review (AdmissionReview for validate or mutate, ConversionReview).
pub trait Review: Clone + Send + Sync + 'static {
    /// The review as read; it may borrow from the body.
    type Parsed<'a>: Send;
    /// What an answer needs, besides the uid in the tag, when evaluation fails (apiVersion).
    type Envelope: Send + 'static;

    /// The body as a review, or the reason it is not one (answered with 400).
    fn parse<'b>(&self, body: &'b [u8]) -> Result<Self::Parsed<'b>, String>;
    /// The review independent of its body, to be judged on another thread.
    fn owned(&self, parsed: Self::Parsed<'_>) -> Self::Parsed<'static>;
    fn envelope(&self, parsed: &Self::Parsed<'_>) -> (Self::Envelope, ReviewTag);
    /// Whether judging it costs no more than reading it.
    fn linear(&self, store: &Store, parsed: &Self::Parsed<'_>) -> bool;
    fn answer(&self, store: &Store, parsed: Self::Parsed<'_>) -> Answer;
    /// The answer when evaluation did not finish (deadline, panic, shutdown).
    fn failed(&self, envelope: &Self::Envelope, tag: &ReviewTag, error: WorkError) -> Answer;
}

/// A review endpoint: a slot among the reviews in flight (none left: 429 before the body is
/// read), the body within its limits, then the review.
pub async fn endpoint<R: Review>(review: R, state: AppState, request: Request) -> Response {
    let _slot = match guard::review_slot(&state) {
        Ok(slot) => slot,
        Err(busy) => return busy.into_response(),
    };
    let (parts, body) = request.into_parts();
    let body = match body::read(state.config(), &parts.headers, body).await {
        Ok(body) => body,
        Err(refused) => return refused.into_response(),
    };
    run(review, &state, parts.uri.query(), body).await
}

pub async fn run<R: Review>(
    review: R,
    state: &AppState,
    query: Option<&str>,
    body: Bytes,
) -> Response {
    // The two branches that wait (a large body, or a policy too costly to judge here) are boxed:
    // inline, their state would make every review's future kilobytes larger, and a future is
    // copied each time it is handed on (to the span, the panic guard, hyper's stream task).
    if body.len() > state.config().inline_max_bytes {
        return Box::pin(run_large(review, state, query, body)).await;
    }
    // The review as read lives in this block only: a local alive across the `await` below,
    // even moved out of, would keep its half a kilobyte in every review's future.
    let (envelope, tag, judged) = {
        let parsed = match review.parse(&body) {
            Ok(parsed) => parsed,
            Err(message) => {
                return ApiError::new(StatusCode::BAD_REQUEST, message).into_response();
            }
        };
        let (envelope, tag) = review.envelope(&parsed);
        let store = state.store().current();
        let judged = if review.linear(&store, &parsed) {
            Ok(worker::run_inline(|| review.answer(&store, parsed)))
        } else {
            let parsed = review.owned(parsed);
            let pooled = review.clone();
            Err(Box::pin(state.run_pooled(query, store, move |store| {
                pooled.answer(store, parsed)
            })))
        };
        (envelope, tag, judged)
    };
    let outcome = match judged {
        Ok(outcome) => outcome,
        Err(pooled) => {
            drop(body);
            pooled.await
        }
    };
    let answer = outcome.unwrap_or_else(|e| review.failed(&envelope, &tag, e));
    respond(answer, tag)
}

async fn run_large<R: Review>(
    review: R,
    state: &AppState,
    query: Option<&str>,
    body: Bytes,
) -> Response {
    // Reading is linear in the body (at most `max_body_bytes`), so it is not held to the caller's
    // deadline: a deadline that passes during evaluation is then still answered with the uid.
    let reading = review.clone();
    let parsed = match state
        .run_pooled_reading(move || {
            reading.parse(&body).map(|parsed| {
                let (envelope, tag) = reading.envelope(&parsed);
                (reading.owned(parsed), envelope, tag)
            })
        })
        .await
    {
        Ok(Ok(parsed)) => parsed,
        Ok(Err(message)) => {
            return ApiError::new(StatusCode::BAD_REQUEST, message).into_response();
        }
        Err(error) => {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the review could not be read: {error}"),
            )
            .into_response();
        }
    };
    let (parsed, envelope, tag) = parsed;
    let store = state.store().current();
    let pooled = review.clone();
    let answer = state
        .run_pooled(query, store, move |store| pooled.answer(store, parsed))
        .await
        .unwrap_or_else(|e| review.failed(&envelope, &tag, e));
    respond(answer, tag)
}

fn respond(answer: Answer, tag: ReviewTag) -> Response {
    // Built directly: the tuple form parses its header name and value on every answer.
    let mut response = Response::new(Body::from(answer.body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.extensions_mut().insert(Reviewed {
        decision: answer.decision,
        tag,
        notes: answer.notes,
    });
    response
}

/// A response document as JSON bytes; one that cannot be encoded (never expected) becomes a
/// Status the apiserver reports.
pub fn encode(document: &impl serde::Serialize) -> Vec<u8> {
    // Room for an allowed or denied answer at once: `to_vec` starts at 128 bytes, below the
    // shortest answer, and grows by copying.
    let mut body = Vec::with_capacity(512);
    match serde_json::to_writer(&mut body, document) {
        Ok(()) => body,
        Err(e) => failed_encoding(&e),
    }
}

fn failed_encoding(e: &serde_json::Error) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 500,
        "message": format!("cannot encode the answer: {e}"),
    }))
    .unwrap_or_default()
}
