//! `POST /convert`: ConversionReview in, ConversionReview out.

mod wire;

use kube::core::conversion::{ConversionRequest, ConversionResponse};
use kube::core::response::StatusSummary;
use kube::core::{Status, TypeMeta};
use tollgate_engine::Store;

pub use wire::{CONVERSION_KIND, ConversionParseError, review_body};

use super::json_writer;
use super::observe::ReviewTag;
use super::review::{self, Answer, Review};
use super::worker::WorkError;

/// The ConversionReview, as a kind of review the HTTP layer runs.
#[derive(Debug, Clone, Copy)]
pub struct Conversion;

impl Review for Conversion {
    type Parsed<'a> = (TypeMeta, ConversionRequest);
    type Envelope = TypeMeta;

    fn parse(self, body: &[u8]) -> Result<Self::Parsed<'_>, String> {
        wire::parse(body).map_err(|e| e.to_string())
    }

    /// Already owned: the objects are the whole review.
    fn into_owned(self, parsed: Self::Parsed<'_>) -> Self::Parsed<'static> {
        parsed
    }

    fn envelope(self, (types, request): &Self::Parsed<'_>) -> (Self::Envelope, ReviewTag) {
        let tag = ReviewTag {
            uid: request.uid.clone(),
            group: request.desired_api_version.clone(),
            kind: String::new(),
            operation: "CONVERT",
        };
        (types.clone(), tag)
    }

    /// Conversion has no CEL: its cost follows the number and size of the objects.
    fn linear(self, _: &Store, _: &Self::Parsed<'_>) -> bool {
        true
    }

    fn answer(self, store: &Store, (types, request): Self::Parsed<'_>) -> Answer {
        answer(types, wire::convert_request(store, request))
    }

    fn failed(self, types: &Self::Envelope, tag: &ReviewTag, error: WorkError) -> Answer {
        let mut failed =
            ConversionResponse::invalid(Status::failure(&error.to_string(), "InternalError"));
        failed.uid = tag.uid.clone();
        answer(types.clone(), failed)
    }
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

/// The answer document, as `serde_json` writes it; the converted objects (nearly all of it)
/// are written by `json_writer` into the place serde_json leaves for them: the document ends
/// with the response, and the response with `convertedObjects`.
fn encode(types: TypeMeta, response: ConversionResponse) -> Vec<u8> {
    const EMPTY_TAIL: &[u8] = b"\"convertedObjects\":[]}}";
    let mut review = wire::into_review(types, response);
    let objects = review
        .response
        .as_mut()
        .map(|r| std::mem::take(&mut r.converted_objects))
        .unwrap_or_default();
    let mut body = review::encode(&review);
    if objects.is_empty() {
        return body;
    }
    if !body.ends_with(EMPTY_TAIL) {
        // Not the layout written for (never expected): serde_json writes it all.
        if let Some(response) = review.response.as_mut() {
            response.converted_objects = objects;
        }
        return review::encode(&review);
    }
    body.truncate(body.len() - "]}}".len());
    for (i, object) in objects.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        json_writer::write_value(&mut body, object);
    }
    body.extend_from_slice(b"]}}");
    body
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
