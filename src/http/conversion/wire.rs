//! ConversionReview in and out, all or nothing, by serde. The objects are kept as the text
//! they came in (borrowed from the body, checked to be JSON) and each is read, converted and
//! written into the answer before the next is read: a review of 2000 objects never holds 2000
//! trees at once, and each tree is written and freed while it is still in cache. The answer is
//! written as kube's `ConversionReview` serializes (tested).

use std::cell::RefCell;

use kube::core::conversion::{ConversionResponse, ConversionReview};
use kube::core::{Status, TypeMeta};
use serde::ser::{Error as _, SerializeSeq};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use tollgate_engine::Store;
use tollgate_engine::evaluate;

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

/// A ConversionReview as read (the fields of kube's `ConversionReview` and `ConversionRequest`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a> {
    api_version: String,
    kind: String,
    #[serde(default, borrow)]
    request: Option<RequestIn<'a>>,
}

/// The request: its objects as the text they came in.
#[derive(Debug, Deserialize)]
pub struct RequestIn<'a> {
    pub uid: String,
    #[serde(rename = "desiredAPIVersion")]
    pub desired_api_version: String,
    #[serde(borrow)]
    pub objects: Objects<'a>,
}

/// Each object's JSON text: borrowed from the body, or owned to be judged on another thread.
#[derive(Debug)]
pub enum Objects<'a> {
    Borrowed(Vec<&'a RawValue>),
    Owned(Vec<Box<RawValue>>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Objects<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<&'a RawValue>::deserialize(deserializer).map(Objects::Borrowed)
    }
}

impl Objects<'_> {
    fn texts(&self) -> Vec<&RawValue> {
        match self {
            Objects::Borrowed(texts) => texts.clone(),
            Objects::Owned(texts) => texts.iter().map(AsRef::as_ref).collect(),
        }
    }
}

impl RequestIn<'_> {
    pub fn owned(self) -> RequestIn<'static> {
        let objects = match self.objects {
            Objects::Borrowed(texts) => texts.into_iter().map(ToOwned::to_owned).collect(),
            Objects::Owned(texts) => texts,
        };
        RequestIn {
            uid: self.uid,
            desired_api_version: self.desired_api_version,
            objects: Objects::Owned(objects),
        }
    }
}

pub fn parse(body: &[u8]) -> Result<(TypeMeta, RequestIn<'_>), ConversionParseError> {
    // One check of the whole body instead of one per string (see the admission decoder).
    let text = std::str::from_utf8(body).map_err(ConversionParseError::NotUtf8)?;
    let review: ReviewIn<'_> = serde_json::from_str(text).map_err(ConversionParseError::Json)?;
    let types = TypeMeta {
        api_version: review.api_version,
        kind: review.kind,
    };
    let request = review.request;
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

/// The answer document: every object converted, or the failure that names the first one
/// that could not be.
pub fn answer_body(
    store: &Store,
    types: &TypeMeta,
    request: &RequestIn<'_>,
) -> Result<Vec<u8>, Box<ConversionResponse>> {
    let failed = RefCell::new(None);
    let texts = request.objects.texts();
    let review = ReviewOut {
        api_version: &types.api_version,
        kind: &types.kind,
        response: ResponseOut {
            uid: &request.uid,
            result: Status::success(),
            converted_objects: Converting {
                store,
                desired: &request.desired_api_version,
                texts: &texts,
                failed: &failed,
            },
        },
    };
    serde_json::to_vec(&review).map_err(|e| {
        let mut response = ConversionResponse::invalid(Status::success());
        response.uid.clone_from(&request.uid);
        let status = failed.into_inner().unwrap_or_else(|| {
            Box::new(Status::failure(
                &format!("the answer could not be written: {e}"),
                "InternalError",
            ))
        });
        Box::new(response.failure(*status))
    })
}

/// The answer as kube's `ConversionReview` writes it (apiVersion, kind, then the response).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'r> {
    api_version: &'r str,
    kind: &'r str,
    response: ResponseOut<'r>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'r> {
    uid: &'r str,
    result: Status,
    converted_objects: Converting<'r>,
}

/// The converted objects, each read, converted and written in turn; the first that cannot be
/// converted stops the answer and leaves its Status in `failed`.
struct Converting<'r> {
    store: &'r Store,
    desired: &'r str,
    texts: &'r [&'r RawValue],
    failed: &'r RefCell<Option<Box<Status>>>,
}

impl Serialize for Converting<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut objects = serializer.serialize_seq(Some(self.texts.len()))?;
        for (index, text) in self.texts.iter().enumerate() {
            // Checked to be JSON when the review was read: this reads it again as a tree.
            let converted = serde_json::from_str::<Value>(text.get())
                .map_err(|e| {
                    Box::new(Status::failure(
                        &format!("object {index} could not be read: {e}"),
                        "InternalError",
                    ))
                })
                .and_then(|object| convert_one(self.store, object, index, self.desired));
            match converted {
                Ok(object) => objects.serialize_element(&object)?,
                Err(status) => {
                    *self.failed.borrow_mut() = Some(status);
                    return Err(S::Error::custom("an object could not be converted"));
                }
            }
        }
        objects.end()
    }
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

/// The answer `tollgate review` prints, as a document.
pub fn review_body(store: &Store, body: &[u8]) -> Result<Value, ConversionParseError> {
    let (types, request) = parse(body)?;
    let answer = match answer_body(store, &types, &request) {
        Ok(answer) => answer,
        Err(failed) => super::super::review::encode(&into_review(types, *failed)),
    };
    serde_json::from_slice(&answer).map_err(ConversionParseError::Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What kube's types write for the same review: every object read first, then converted.
    fn as_kube_writes_it(store: &Store, body: &[u8]) -> Vec<u8> {
        let review: ConversionReview =
            serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}"));
        let request = review.request.unwrap_or_else(|| panic!("request"));
        let mut response = ConversionResponse::invalid(Status::success());
        response.uid.clone_from(&request.uid);
        let mut converted = Vec::new();
        for (index, object) in request.objects.into_iter().enumerate() {
            match convert_one(store, object, index, &request.desired_api_version) {
                Ok(object) => converted.push(object),
                Err(status) => {
                    return serde_json::to_vec(&into_review(
                        review.types,
                        response.failure(*status),
                    ))
                    .unwrap_or_default();
                }
            }
        }
        serde_json::to_vec(&into_review(review.types, response.success(converted)))
            .unwrap_or_default()
    }

    #[test]
    fn answers_are_written_as_kubes_conversion_review_writes_them() {
        let store = crate::fuzzing::example_store();
        let object = |name: &str, provider: &str| {
            serde_json::json!({"apiVersion": "payments.example.com/v1alpha1", "kind": "PaymentGateway",
                "metadata": {"name": name, "namespace": "n"},
                "spec": {"provider": provider, "url": "https://e\"x", "secretName": "s", "maxRetries": 3, "x": [1.5, null]}})
        };
        let review = |objects: Vec<Value>, desired: &str| {
            serde_json::to_vec(
                &serde_json::json!({"apiVersion": CONVERSION_V1, "kind": CONVERSION_KIND,
                "request": {"uid": "u-1", "desiredAPIVersion": desired, "objects": objects}}),
            )
            .unwrap_or_default()
        };
        let cases = [
            review(
                vec![object("a", "stripe"), object("b", "adyen")],
                "payments.example.com/v1",
            ),
            review(Vec::new(), "payments.example.com/v1"),
            // The second object is of another group: the review fails, naming it.
            review(
                vec![
                    object("a", "stripe"),
                    serde_json::json!({"apiVersion": "other.example.com/v1", "kind": "X"}),
                ],
                "payments.example.com/v1",
            ),
        ];
        for body in cases {
            let (types, request) = parse(&body).unwrap_or_else(|e| panic!("{e}"));
            let ours = match answer_body(store, &types, &request) {
                Ok(answer) => answer,
                Err(failed) => serde_json::to_vec(&into_review(types, *failed)).unwrap_or_default(),
            };
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&as_kube_writes_it(store, &body))
            );
        }
    }

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
