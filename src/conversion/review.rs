//! ConversionReview in and out (kube's types fit: objects stay raw JSON).

use kube::core::conversion::{ConversionRequest, ConversionResponse, ConversionReview};
use kube::core::{Status, TypeMeta};
use serde_json::Value;

use super::translate::{ConvertError, split_api_version};
use crate::policy::Store;

pub const CONVERSION_V1: &str = "apiextensions.k8s.io/v1";
pub const CONVERSION_V1BETA1: &str = "apiextensions.k8s.io/v1beta1";
pub const CONVERSION_KIND: &str = "ConversionReview";

/// Why a body is not a ConversionReview we can answer; the HTTP layer turns it into a 400.
#[derive(Debug, thiserror::Error)]
pub enum ConversionParseError {
    /// The body is not JSON, or not shaped like a ConversionReview.
    #[error("request body is not a valid ConversionReview: {0}")]
    Json(#[source] serde_json::Error),
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
    let review: ConversionReview =
        serde_json::from_slice(body).map_err(ConversionParseError::Json)?;
    if review.types.api_version != CONVERSION_V1 && review.types.api_version != CONVERSION_V1BETA1 {
        return Err(ConversionParseError::ApiVersion(review.types.api_version));
    }
    if review.types.kind != CONVERSION_KIND {
        return Err(ConversionParseError::Kind(review.types.kind));
    }
    let types = review.types.clone();
    let request = review.request.ok_or(ConversionParseError::MissingRequest)?;
    if request.uid.is_empty() {
        return Err(ConversionParseError::EmptyUid);
    }
    Ok((types, request))
}

/// Converts every object or none: one failure fails the review, naming the object.
pub fn convert_request(store: &Store, request: &ConversionRequest) -> ConversionResponse {
    let mut response = ConversionResponse::invalid(Status::success());
    response.uid = request.uid.clone();
    let mut converted = Vec::with_capacity(request.objects.len());
    for (index, object) in request.objects.iter().enumerate() {
        match convert_one(store, object, &request.desired_api_version) {
            Ok(value) => converted.push(value),
            Err(e) => {
                let name = object
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("<unnamed>");
                let message = format!(
                    "cannot convert object {index} ({name:?}) to {}: {e}",
                    request.desired_api_version
                );
                return response.failure(Status::failure(&message, "ConversionFailed"));
            }
        }
    }
    response.success(converted)
}

fn convert_one(store: &Store, object: &Value, desired: &str) -> Result<Value, ConvertError> {
    let map = object.as_object().ok_or(ConvertError::NotAnObject)?;
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or(ConvertError::MissingApiVersion)?;
    if api_version == desired {
        return Ok(object.clone());
    }
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .ok_or(ConvertError::MissingKind)?;
    if map.get("metadata").is_some_and(|m| !m.is_object()) {
        return Err(ConvertError::Metadata);
    }
    let (group, from) = split_api_version(api_version);
    let (desired_group, target) = split_api_version(desired);
    if group != desired_group {
        return Err(ConvertError::WrongGroup {
            found: api_version.to_string(),
            expected: desired_group.to_string(),
        });
    }
    let rules = store
        .conversion_for(group, kind)
        .ok_or_else(|| ConvertError::NoRules {
            group: group.to_string(),
            kind: kind.to_string(),
        })?;
    rules.convert(map.clone(), from, target).map(Value::Object)
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
    Ok(into_review(types, convert_request(store, &request)))
}
