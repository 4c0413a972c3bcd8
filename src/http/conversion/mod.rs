//! `POST /convert`: ConversionReview in, ConversionReview out (kube's types, read and written by
//! serde).

mod wire;

use kube::core::conversion::ConversionResponse;
use kube::core::response::StatusSummary;
use kube::core::{Status, TypeMeta};
use tollgate_engine::Store;

pub use wire::{CONVERSION_KIND, ConversionParseError, review_body};

use super::observe::{ReviewNotes, ReviewTag};
use super::review::{self, Answer, Review};
use super::worker::WorkError;

/// The ConversionReview, as a kind of review the HTTP layer runs; `traced` notes the
/// conversion's duration for the review's trace.
#[derive(Debug, Clone, Copy)]
pub struct Conversion {
    pub traced: bool,
}

impl Review for Conversion {
    type Parsed<'a> = (TypeMeta, wire::RequestIn<'a>);
    type Envelope = TypeMeta;

    fn parse<'b>(&self, body: &'b [u8]) -> Result<Self::Parsed<'b>, String> {
        wire::parse(body).map_err(|e| e.to_string())
    }

    fn owned(&self, (types, request): Self::Parsed<'_>) -> Self::Parsed<'static> {
        (types, request.owned())
    }

    fn envelope(&self, (types, request): &Self::Parsed<'_>) -> (Self::Envelope, ReviewTag) {
        let tag = ReviewTag::new(&request.uid, &request.desired_api_version, "", "CONVERT");
        (types.clone(), tag)
    }

    /// Conversion has no CEL: its cost follows the number and size of the objects.
    fn linear(&self, _: &Store, _: &Self::Parsed<'_>) -> bool {
        true
    }

    fn answer(&self, store: &Store, (types, request): Self::Parsed<'_>) -> Answer {
        // Conversion has no policy outcomes to note, only its duration.
        let (converted, notes) =
            ReviewNotes::noting(self.traced, |_| wire::answer_body(store, &types, &request));
        match converted {
            Ok(body) => Answer::new(body, "converted"),
            Err(failed) => answer(types, *failed),
        }
        .noted(notes)
    }

    fn failed(&self, types: &Self::Envelope, tag: &ReviewTag, error: WorkError) -> Answer {
        let mut failed =
            ConversionResponse::invalid(Status::failure(&error.to_string(), "InternalError"));
        failed.uid = tag.uid().to_string();
        answer(types.clone(), failed)
    }
}

/// The answer document the server sends for `body` (benchmarks and tests).
pub fn answer_body(store: &Store, body: &[u8]) -> Result<Vec<u8>, ConversionParseError> {
    let parsed = wire::parse(body)?;
    Ok(Conversion { traced: false }.answer(store, parsed).body)
}

fn answer(types: TypeMeta, response: ConversionResponse) -> Answer {
    let decision = if response.result.status == Some(StatusSummary::Success) {
        "converted"
    } else {
        "failed"
    };
    Answer::new(
        review::encode(&wire::into_review(types, response)),
        decision,
    )
}
