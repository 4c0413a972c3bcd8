//! Admission reviews: the wire format and the validate/mutate decisions.

pub mod evaluate;
pub mod review;

pub use evaluate::{Mode, evaluate};
pub use review::{
    AdmissionRequestIn, AdmissionResponseOut, AdmissionReviewIn, AdmissionReviewOut, Decision,
    ReviewParseError,
};

/// Everything the server or `tollgate review` does with one AdmissionReview body: the exact
/// response document that goes on the wire.
pub fn review_body(
    store: &crate::policy::Store,
    body: &[u8],
    mode: Mode,
) -> Result<AdmissionReviewOut, ReviewParseError> {
    let (api_version, request) = AdmissionReviewIn::from_slice(body)?;
    Ok(AdmissionReviewOut::new(
        &api_version,
        evaluate(store, &request, mode),
    ))
}
