//! AdmissionReview on the wire, read and written by serde. The request side borrows its strings
//! from the body and reuses kube's Operation; objects are read as documents (strings borrowed,
//! nothing else built).
//! The response side is our own: kube's `AdmissionResponse` serializes the patch as a number
//! array (the API wants base64) and its `invalid()` leaves the uid empty.

use base64::Engine;
use std::borrow::Cow;

use kube::core::admission::Operation;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use smallvec::SmallVec;

use tollgate_engine::document::Document;
use tollgate_engine::instance::Instance;

pub const ADMISSION_V1: &str = "admission.k8s.io/v1";
pub const ADMISSION_V1BETA1: &str = "admission.k8s.io/v1beta1";
pub const ADMISSION_KIND: &str = "AdmissionReview";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReviewIn<'a> {
    #[serde(borrow)]
    pub api_version: Text<'a>,
    #[serde(borrow)]
    pub kind: Text<'a>,
    /// Boxed: the request is half a kilobyte, and moved from the reader to the handler to
    /// the evaluation (a `memcpy` each, a tenth of reading a review in a profile).
    #[serde(borrow)]
    pub request: Option<Box<AdmissionRequestIn<'a>>>,
}

/// The request as read: its strings point into the body (see `Text`), its objects too.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequestIn<'a> {
    #[serde(borrow)]
    pub uid: Text<'a>,
    #[serde(borrow)]
    pub kind: KindIn<'a>,
    /// Required on the wire: a review without it is malformed and gets a 400.
    #[allow(dead_code)]
    #[serde(borrow)]
    pub resource: ResourceIn<'a>,
    #[serde(default, borrow)]
    pub sub_resource: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub name: Text<'a>,
    #[serde(default, borrow)]
    pub namespace: Option<Text<'a>>,
    pub operation: Operation,
    #[serde(default, borrow)]
    pub object: Option<ObjectIn<'a>>,
    #[serde(default, borrow)]
    pub old_object: Option<ObjectIn<'a>>,
    #[serde(default, borrow)]
    pub user_info: UserInfoIn<'a>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// An object of the review, read as a document: its strings borrowed from the body, nothing
/// else built (validation judges it as it is; mutation defaults a copy).
#[derive(Clone)]
pub struct ObjectIn<'a>(Document<'a>);

impl ObjectIn<'_> {
    /// The object for the policies to judge.
    pub fn instance(&self) -> Instance<'_> {
        self.0.root().into()
    }

    pub fn into_owned(self) -> ObjectIn<'static> {
        ObjectIn(self.0.into_owned())
    }
}

/// As the `Value` it stands for.
impl std::fmt::Debug for ObjectIn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.root().to_value().fmt(f)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ObjectIn<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Document::deserialize(deserializer).map(ObjectIn)
    }
}

/// `meta/v1.GroupVersionKind` as the review carries it (all three fields required).
#[derive(Debug, Clone, Deserialize)]
pub struct KindIn<'a> {
    #[serde(borrow)]
    pub group: Text<'a>,
    #[serde(borrow)]
    pub version: Text<'a>,
    #[serde(borrow)]
    pub kind: Text<'a>,
}

/// `meta/v1.GroupVersionResource`: checked to be there, not used.
#[derive(Debug, Clone, Deserialize)]
#[allow(dead_code)]
pub struct ResourceIn<'a> {
    #[serde(borrow)]
    pub group: Text<'a>,
    #[serde(borrow)]
    pub version: Text<'a>,
    #[serde(borrow)]
    pub resource: Text<'a>,
}

/// `authentication.k8s.io/v1` UserInfo, as far as CEL `request.userInfo` uses it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInfoIn<'a> {
    #[serde(default, borrow)]
    pub username: Text<'a>,
    /// Held in place: a user is in one or two groups as a rule, and a vector of them was an
    /// allocation per review.
    #[serde(default)]
    #[serde(borrow)]
    pub groups: SmallVec<[Cow<'a, str>; 2]>,
}

/// A string of the review: borrowed from the body unless it holds escapes. Reading a review
/// then allocates for little beyond its objects (a profile showed the envelope's owned strings
/// at about a third of the decoding cost).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text<'a>(Cow<'a, str>);

impl<'a> Text<'a> {
    pub fn new(text: Cow<'a, str>) -> Self {
        Self(text)
    }

    pub fn into_owned(self) -> Text<'static> {
        Text(Cow::Owned(self.0.into_owned()))
    }
}

impl std::ops::Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }

        deserializer.deserialize_str(Visitor)
    }
}

/// Why a body is not an AdmissionReview we can answer; the HTTP layer turns it into a 400.
#[derive(Debug, thiserror::Error)]
pub enum ReviewParseError {
    /// The body is not JSON, or not shaped like an AdmissionReview.
    #[error("request body is not a valid AdmissionReview: {0}")]
    Json(#[source] serde_json::Error),
    /// JSON is UTF-8 text (RFC 8259).
    #[error("request body is not a valid AdmissionReview: not UTF-8 text ({0})")]
    NotUtf8(#[source] std::str::Utf8Error),
    #[error("unsupported apiVersion {0:?}: expected {ADMISSION_V1:?} or {ADMISSION_V1BETA1:?}")]
    ApiVersion(String),
    #[error("unsupported kind {0:?}: expected {ADMISSION_KIND:?}")]
    Kind(String),
    #[error("AdmissionReview has no request")]
    MissingRequest,
    #[error("AdmissionReview request has an empty uid")]
    EmptyUid,
}

impl AdmissionRequestIn<'_> {
    /// The same request, independent of the body it was read from (to move it to another
    /// thread).
    pub fn into_owned(self) -> AdmissionRequestIn<'static> {
        let KindIn {
            group,
            version,
            kind,
        } = self.kind;
        let ResourceIn {
            group: resource_group,
            version: resource_version,
            resource,
        } = self.resource;
        AdmissionRequestIn {
            uid: self.uid.into_owned(),
            kind: KindIn {
                group: group.into_owned(),
                version: version.into_owned(),
                kind: kind.into_owned(),
            },
            resource: ResourceIn {
                group: resource_group.into_owned(),
                version: resource_version.into_owned(),
                resource: resource.into_owned(),
            },
            sub_resource: self.sub_resource.map(Text::into_owned),
            name: self.name.into_owned(),
            namespace: self.namespace.map(Text::into_owned),
            operation: self.operation,
            object: self.object.map(ObjectIn::into_owned),
            old_object: self.old_object.map(ObjectIn::into_owned),
            user_info: UserInfoIn {
                username: self.user_info.username.into_owned(),
                groups: (self.user_info.groups.into_iter())
                    .map(|group| Cow::Owned(group.into_owned()))
                    .collect(),
            },
            dry_run: self.dry_run,
        }
    }

    /// The operation as the apiserver spells it, for logs.
    pub fn operation_name(&self) -> &'static str {
        match self.operation {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// The review's apiVersion to answer with, without a copy for the versions the apiserver sends.
pub(super) fn known_api_version(api_version: &str) -> Cow<'static, str> {
    match api_version {
        "admission.k8s.io/v1" => Cow::Borrowed("admission.k8s.io/v1"),
        "admission.k8s.io/v1beta1" => Cow::Borrowed("admission.k8s.io/v1beta1"),
        other => Cow::Owned(other.to_string()),
    }
}

impl<'a> AdmissionReviewIn<'a> {
    pub fn from_slice(
        body: &'a [u8],
    ) -> Result<(Text<'a>, Box<AdmissionRequestIn<'a>>), ReviewParseError> {
        // Checking the whole body once is cheaper than serde_json checking every string it
        // meets (a sixth of the decoding instructions in a callgrind profile).
        let text = std::str::from_utf8(body).map_err(ReviewParseError::NotUtf8)?;
        let review: AdmissionReviewIn<'_> =
            serde_json::from_str(text).map_err(ReviewParseError::Json)?;
        if *review.api_version != *ADMISSION_V1 && *review.api_version != *ADMISSION_V1BETA1 {
            return Err(ReviewParseError::ApiVersion(review.api_version.to_string()));
        }
        if *review.kind != *ADMISSION_KIND {
            return Err(ReviewParseError::Kind(review.kind.to_string()));
        }
        let request = review.request.ok_or(ReviewParseError::MissingRequest)?;
        if request.uid.is_empty() {
            return Err(ReviewParseError::EmptyUid);
        }
        Ok((review.api_version, request))
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReviewOut {
    pub api_version: Cow<'static, str>,
    pub kind: &'static str,
    pub response: AdmissionResponseOut,
}

impl AdmissionReviewOut {
    /// Answers in the apiVersion the apiserver asked in.
    pub fn new(api_version: &str, response: AdmissionResponseOut) -> Self {
        Self {
            api_version: known_api_version(api_version),
            kind: ADMISSION_KIND,
            response,
        }
    }

    /// The answer document.
    pub fn to_json(&self) -> Vec<u8> {
        crate::http::review::encode(self)
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponseOut {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusOut>,
    /// Base64 of the JSON Patch document, as `admission.k8s.io` specifies: a JSON string
    /// written as it is (base64 needs no escapes; most of a mutate answer is this string, and
    /// serde_json would otherwise check it for escapes byte by byte).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The subset of `meta/v1.Status` the apiserver reads from a webhook answer.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusOut {
    pub status: &'static str,
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

/// What the answer says, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Patched,
    Denied,
    Errored,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Patched => "patched",
            Self::Denied => "denied",
            Self::Errored => "errored",
        }
    }
}

impl AdmissionResponseOut {
    pub fn allowed(uid: &str) -> Self {
        Self {
            uid: uid.to_string(),
            allowed: true,
            status: None,
            patch: None,
            patch_type: None,
            warnings: Vec::new(),
        }
    }

    pub fn denied(uid: &str, message: String) -> Self {
        Self {
            allowed: false,
            status: Some(StatusOut {
                status: "Failure",
                code: 403,
                reason: "Forbidden",
                message,
            }),
            ..Self::allowed(uid)
        }
    }

    /// Allowed with a JSON Patch (its JSON text, sent base64-encoded as the API wants).
    pub fn patched(uid: &str, patch: &[u8]) -> Self {
        let mut text = String::with_capacity(patch.len().div_ceil(3) * 4 + 2);
        text.push('"');
        base64::engine::general_purpose::STANDARD.encode_string(patch, &mut text);
        text.push('"');
        Self {
            // A quoted base64 string is always one JSON value.
            patch: RawValue::from_string(text).ok(),
            patch_type: Some("JSONPatch"),
            ..Self::allowed(uid)
        }
    }

    /// The webhook could not reach a decision; the apiserver applies its failurePolicy.
    pub fn errored(uid: &str, code: u16, message: String) -> Self {
        Self {
            allowed: false,
            status: Some(StatusOut {
                status: "Failure",
                code,
                reason: "InternalError",
                message,
            }),
            ..Self::allowed(uid)
        }
    }

    pub fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings = warnings;
        self
    }

    pub fn decision(&self) -> Decision {
        match (&self.status, self.allowed, &self.patch) {
            (_, true, Some(_)) => Decision::Patched,
            (_, true, None) => Decision::Allowed,
            (Some(s), false, _) if s.reason == "Forbidden" => Decision::Denied,
            _ => Decision::Errored,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patch_goes_out_as_base64_string() -> Result<(), serde_json::Error> {
        let patch = br#"[{"op":"add","path":"/a","value":1}]"#;
        let out = serde_json::to_value(AdmissionResponseOut::patched("u1", patch))?;
        assert_eq!(out["patchType"], "JSONPatch");
        let encoded = out["patch"].as_str().unwrap_or_default();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap_or_default();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&decoded)?,
            json!([{"op": "add", "path": "/a", "value": 1}])
        );
        Ok(())
    }

    #[test]
    fn escaped_strings_are_decoded_and_plain_ones_borrowed() -> Result<(), ReviewParseError> {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
            "uid":"u-\u0041","kind":{"group":"g","version":"v1","kind":"K\"q"},
            "resource":{"group":"g","version":"v1","resource":"ks"},"name":"n\n1",
            "operation":"CREATE","userInfo":{"username":"al\/ice","groups":["a\u00e9"]}}}"#;
        let (api_version, request) = AdmissionReviewIn::from_slice(body)?;
        assert_eq!(&*api_version, ADMISSION_V1);
        assert!(matches!(api_version.0, Cow::Borrowed(_)));
        assert_eq!(&*request.uid, "u-A");
        assert_eq!(&*request.kind.kind, "K\"q");
        assert_eq!(&*request.name, "n\n1");
        assert_eq!(&*request.user_info.username, "al/ice");
        assert_eq!(request.user_info.groups.as_slice(), ["a\u{e9}"]);
        let owned: AdmissionRequestIn<'static> = (*request).into_owned();
        assert_eq!(&*owned.uid, "u-A");
        assert_eq!(&*owned.kind.group, "g");
        Ok(())
    }

    #[test]
    fn parse_errors_are_specific() {
        let cases = [
            (r#"{"#, "not a valid AdmissionReview"),
            (
                r#"{"apiVersion":"v1","kind":"AdmissionReview"}"#,
                "unsupported apiVersion",
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod"}"#,
                "unsupported kind",
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
                "has no request",
            ),
        ];
        let not_utf8 = AdmissionReviewIn::from_slice(b"{\"apiVersion\": \"\xff\"}")
            .err()
            .map(|e| e.to_string());
        assert!(
            not_utf8
                .as_deref()
                .is_some_and(|e| e.contains("not UTF-8 text")),
            "{not_utf8:?}"
        );
        for (body, expected) in cases {
            let err = AdmissionReviewIn::from_slice(body.as_bytes())
                .err()
                .map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains(expected)),
                "{body}: {err:?}"
            );
        }
    }
}
