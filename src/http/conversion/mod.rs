//! `POST /convert`: ConversionReview in, ConversionReview out.

mod read;
mod stream;
mod wire;

pub use read::disagreement as read_disagreement;

use kube::core::conversion::ConversionResponse;
use kube::core::response::StatusSummary;
use kube::core::{Status, TypeMeta};
use tollgate_engine::Store;

pub use wire::{CONVERSION_KIND, ConversionParseError, review_body};

use read::RequestIn;

use super::json_writer;
use super::observe::ReviewTag;
use super::review::{self, Answer, Review};
use super::worker::WorkError;

/// The ConversionReview, as a kind of review the HTTP layer runs.
#[derive(Debug, Clone, Copy)]
pub struct Conversion;

impl Review for Conversion {
    type Parsed<'a> = (TypeMeta, RequestIn<'a>);
    type Envelope = TypeMeta;

    fn parse(self, body: &[u8]) -> Result<Self::Parsed<'_>, String> {
        wire::parse(body).map_err(|e| e.to_string())
    }

    fn into_owned(self, (types, request): Self::Parsed<'_>) -> Self::Parsed<'static> {
        (types, request.into_owned())
    }

    fn envelope(self, (types, request): &Self::Parsed<'_>) -> (Self::Envelope, ReviewTag) {
        let tag = ReviewTag::new(&request.uid, &request.desired_api_version, "", "CONVERT");
        (types.clone(), tag)
    }

    /// Conversion has no CEL: its cost follows the number and size of the objects.
    fn linear(self, _: &Store, _: &Self::Parsed<'_>) -> bool {
        true
    }

    fn answer(self, store: &Store, (types, request): Self::Parsed<'_>) -> Answer {
        match stream::answer_body(store, &types, request) {
            Ok(body) => Answer {
                body,
                decision: "converted",
            },
            Err(failed) => answer(types, *failed),
        }
    }

    fn failed(self, types: &Self::Envelope, tag: &ReviewTag, error: WorkError) -> Answer {
        let mut failed =
            ConversionResponse::invalid(Status::failure(&error.to_string(), "InternalError"));
        failed.uid = tag.uid().to_string();
        answer(types.clone(), failed)
    }
}

/// The answer document the server sends for `body` (benchmarks and tests).
pub fn answer_body(store: &Store, body: &[u8]) -> Result<Vec<u8>, ConversionParseError> {
    let parsed = wire::parse(body)?;
    Ok(Conversion.answer(store, parsed).body)
}

fn answer(types: TypeMeta, response: ConversionResponse) -> Answer {
    let decision = if response.result.status == Some(StatusSummary::Success) {
        "converted"
    } else {
        "failed"
    };
    Answer {
        body: encode(types, response),
        decision,
    }
}

/// The answer document: what `serde_json::to_vec` gives for kube's `ConversionReview` (the
/// tests hold it to that), written directly — serde's flattened `TypeMeta` alone cost 2.9k
/// instructions per answer, and the converted objects are nearly all of it.
fn encode(types: TypeMeta, response: ConversionResponse) -> Vec<u8> {
    let mut body = Vec::with_capacity(256);
    if write_head(&mut body, &types, &response.uid, &response.result).is_err() {
        // A Status always encodes; if it ever did not, the whole answer says why.
        return review::encode(&wire::into_review(types, response));
    }
    body.extend_from_slice(b",\"convertedObjects\":");
    json_writer::write_array(
        &mut body,
        &response.converted_objects,
        json_writer::write_value,
    );
    body.extend_from_slice(b"}}");
    body
}

/// The answer up to its `result`, inclusive (`convertedObjects` follows).
fn write_head(
    body: &mut Vec<u8>,
    types: &TypeMeta,
    uid: &str,
    result: &Status,
) -> serde_json::Result<()> {
    body.extend_from_slice(b"{\"apiVersion\":");
    json_writer::write_str(body, &types.api_version);
    body.extend_from_slice(b",\"kind\":");
    json_writer::write_str(body, &types.kind);
    body.extend_from_slice(b",\"response\":{\"uid\":");
    json_writer::write_str(body, uid);
    body.extend_from_slice(b",\"result\":");
    serde_json::to_writer(&mut *body, result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_are_written_as_serde_json_writes_them() {
        let types = TypeMeta {
            api_version: "apiextensions.k8s.io/v1".into(),
            kind: CONVERSION_KIND.into(),
        };
        let objects = vec![
            json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a\"b"}, "n": 1.5}),
            json!({"apiVersion": "x/v1", "kind": "K", "spec": {"list": [1, null, true, "\u{1}"]}}),
        ];
        let mut success = ConversionResponse::invalid(Status::success());
        success.uid = "uid-1".into();
        let failure = success
            .clone()
            .failure(Status::failure("cannot convert \"x\"", "ConversionFailed"));
        let cases = [
            success.clone().success(objects.clone()),
            success.clone().success(objects[..1].to_vec()),
            success.success(Vec::new()),
            failure,
        ];
        for response in cases {
            let expected = serde_json::to_vec(&wire::into_review(types.clone(), response.clone()))
                .unwrap_or_default();
            assert_eq!(
                String::from_utf8_lossy(&encode(types.clone(), response)),
                String::from_utf8_lossy(&expected)
            );
        }
    }
}
