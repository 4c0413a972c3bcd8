//! ConversionReview in and out (kube's types fit: objects stay raw JSON), all or nothing.

use kube::core::conversion::{ConversionResponse, ConversionReview};
use kube::core::{Status, TypeMeta};
use serde_json::Value;

use tollgate_engine::Store;
use tollgate_engine::evaluate;

use kube::core::conversion::ConversionRequest;

pub const CONVERSION_V1: &str = "apiextensions.k8s.io/v1";
pub const CONVERSION_V1BETA1: &str = "apiextensions.k8s.io/v1beta1";
pub const CONVERSION_KIND: &str = "ConversionReview";

/// Why a body is not a ConversionReview we can answer; the HTTP layer turns it into a 400.
#[derive(Debug, thiserror::Error)]
pub enum ConversionParseError {
    /// The body is not JSON, or not shaped like a ConversionReview.
    #[error("request body is not a valid ConversionReview: {0}")]
    Json(#[source] serde_json::Error),
    /// JSON is UTF-8 text (RFC 8259).
    #[error("request body is not a valid ConversionReview: not UTF-8 text ({0})")]
    NotUtf8(#[source] std::str::Utf8Error),
    #[error("unsupported apiVersion {0:?}: expected {CONVERSION_V1:?} or {CONVERSION_V1BETA1:?}")]
    ApiVersion(String),
    #[error("unsupported kind {0:?}: expected {CONVERSION_KIND:?}")]
    Kind(String),
    #[error("ConversionReview has no request")]
    MissingRequest,
    #[error("ConversionReview request has an empty uid")]
    EmptyUid,
}

pub fn parse(body: &[u8]) -> Result<(TypeMeta, ConversionRequest), ConversionParseError> {
    // One check of the whole body instead of one per string (see the admission decoder).
    let text = std::str::from_utf8(body).map_err(ConversionParseError::NotUtf8)?;
    let review: ConversionReview =
        serde_json::from_str(text).map_err(ConversionParseError::Json)?;
    let (types, request) = (review.types, review.request);
    if types.api_version != CONVERSION_V1 && types.api_version != CONVERSION_V1BETA1 {
        return Err(ConversionParseError::ApiVersion(types.api_version));
    }
    if types.kind != CONVERSION_KIND {
        return Err(ConversionParseError::Kind(types.kind));
    }
    let request = request.ok_or(ConversionParseError::MissingRequest)?;
    if request.uid.is_empty() {
        return Err(ConversionParseError::EmptyUid);
    }
    Ok((types, request))
}

/// Converts every object or none: one failure fails the review, naming the object.
pub fn convert_request(store: &Store, request: ConversionRequest) -> ConversionResponse {
    let mut response = ConversionResponse::invalid(Status::success());
    response.uid = request.uid;
    let objects = request.objects;
    let mut converted = Vec::with_capacity(objects.len());
    for (index, object) in objects.into_iter().enumerate() {
        match convert_one(store, object, index, &request.desired_api_version) {
            Ok(value) => converted.push(value),
            Err(failure) => return response.failure(*failure),
        }
    }
    response.success(converted)
}

/// One object of a review, or the Status that fails the review, naming it.
fn convert_one(
    store: &Store,
    object: Value,
    index: usize,
    desired_api_version: &str,
) -> Result<Value, Box<Status>> {
    // Not `Value::pointer`: it unescapes every segment of the pointer first.
    let name = object
        .get("metadata")
        .and_then(|metadata| metadata.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    evaluate::convert(store, object, desired_api_version).map_err(|e| {
        let name = name.as_deref().unwrap_or("<unnamed>");
        let message =
            format!("cannot convert object {index} ({name:?}) to {desired_api_version}: {e}");
        Box::new(Status::failure(&message, "ConversionFailed"))
    })
}

/// The whole answer document, in the apiVersion the caller used.
pub fn into_review(types: TypeMeta, response: ConversionResponse) -> ConversionReview {
    ConversionReview {
        types,
        request: None,
        response: Some(response),
    }
}

pub fn review_body(store: &Store, body: &[u8]) -> Result<ConversionReview, ConversionParseError> {
    let (types, request) = parse(body)?;
    Ok(into_review(types, convert_request(store, request)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_that_is_not_utf8_is_refused_with_the_reason() {
        let refused = parse(b"{\"apiVersion\": \"\xc3\x28\"}")
            .err()
            .map(|e| e.to_string());
        assert!(
            refused
                .as_deref()
                .is_some_and(|e| e.contains("not a valid ConversionReview: not UTF-8 text")),
            "{refused:?}"
        );
    }
}
