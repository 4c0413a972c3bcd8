//! `POST /validate` and `POST /mutate`: AdmissionReview in, AdmissionReview out.

mod decide;
mod wire;

use std::borrow::Cow;
use std::sync::Arc;

use tollgate_engine::Store;

pub use decide::{Mode, evaluate};
use wire::{AdmissionRequestIn, AdmissionResponseOut, Text, known_api_version};
pub use wire::{AdmissionReviewIn, AdmissionReviewOut, ReviewParseError};

use super::observe::{ReviewNotes, ReviewTag};
use super::review::{Answer, Review};
use super::worker::WorkError;

/// Everything the server or `tollgate review` does with one AdmissionReview body: the exact
/// response document that goes on the wire.
pub fn review_body(
    store: &Store,
    body: &[u8],
    mode: Mode,
    restorer: Option<&str>,
) -> Result<AdmissionReviewOut, ReviewParseError> {
    let (api_version, request) = AdmissionReviewIn::from_slice(body)?;
    Ok(AdmissionReviewOut::new(
        &api_version,
        evaluate(store, request, mode, restorer, None),
    ))
}

/// Validate or mutate, as a kind of review the HTTP layer runs.
#[derive(Debug, Clone)]
pub struct Admission {
    pub mode: Mode,
    /// The username whose restores (`tollgate_engine::rollout::is_restore`) are judged on the
    /// state they return to: the reconciler's.
    pub restorer: Option<Arc<str>>,
    /// Whether reviews are traced: each policy's outcome and the evaluation time are then noted.
    pub traced: bool,
}

impl Review for Admission {
    type Parsed<'a> = (Text<'a>, Box<AdmissionRequestIn<'a>>);
    type Envelope = Cow<'static, str>;

    fn parse<'b>(&self, body: &'b [u8]) -> Result<Self::Parsed<'b>, String> {
        AdmissionReviewIn::from_slice(body).map_err(|e| e.to_string())
    }

    fn owned(&self, (api_version, request): Self::Parsed<'_>) -> Self::Parsed<'static> {
        (api_version.into_owned(), Box::new((*request).into_owned()))
    }

    fn envelope(&self, (api_version, request): &Self::Parsed<'_>) -> (Self::Envelope, ReviewTag) {
        let tag = ReviewTag::new(
            &request.uid,
            &request.kind.group,
            &request.kind.kind,
            request.operation_name(),
        );
        (known_api_version(api_version), tag)
    }

    fn linear(&self, store: &Store, (_, request): &Self::Parsed<'_>) -> bool {
        store.evaluation_is_linear(&request.kind.group, &request.kind.kind)
    }

    fn answer(&self, store: &Store, (api_version, request): Self::Parsed<'_>) -> Answer {
        let (response, notes) = ReviewNotes::noting(self.traced, |outcomes| {
            evaluate(
                store,
                request,
                self.mode,
                self.restorer.as_deref(),
                outcomes,
            )
        });
        answer(&api_version, response).noted(notes)
    }

    fn failed(&self, api_version: &Self::Envelope, tag: &ReviewTag, error: WorkError) -> Answer {
        answer(
            api_version,
            AdmissionResponseOut::errored(tag.uid(), 500, error.to_string()),
        )
    }
}

fn answer(api_version: &str, response: AdmissionResponseOut) -> Answer {
    let decision = response.decision().as_str();
    Answer::new(
        AdmissionReviewOut::new(api_version, response).to_json(),
        decision,
    )
}
