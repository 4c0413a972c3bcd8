//! AdmissionReview on the wire. The request side reuses kube's GVK/GVR/Operation types; objects
//! stay raw `serde_json::Value`s so the patch is computed against exactly the bytes received.
//! The response side is our own: kube's `AdmissionResponse` serializes the patch as a number
//! array (the API wants base64) and its `invalid()` leaves the uid empty.

use base64::Engine;
use kube::core::admission::Operation;
use kube::core::{GroupVersionKind, GroupVersionResource};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const ADMISSION_V1: &str = "admission.k8s.io/v1";
pub const ADMISSION_V1BETA1: &str = "admission.k8s.io/v1beta1";
pub const ADMISSION_KIND: &str = "AdmissionReview";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReviewIn {
    pub api_version: String,
    pub kind: String,
    pub request: Option<AdmissionRequestIn>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequestIn {
    pub uid: String,
    pub kind: GroupVersionKind,
    /// Required on the wire: a review without it is malformed and gets a 400.
    #[allow(dead_code)]
    pub resource: GroupVersionResource,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: Operation,
    #[serde(default)]
    pub object: Option<Value>,
    #[serde(default)]
    pub old_object: Option<Value>,
    #[serde(default)]
    pub user_info: UserInfoIn,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// `authentication.k8s.io/v1` UserInfo, as far as CEL `request.userInfo` uses it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInfoIn {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Why a body is not an AdmissionReview we can answer; the HTTP layer turns it into a 400.
#[derive(Debug, thiserror::Error)]
pub enum ReviewParseError {
    /// The body is not JSON, or not shaped like an AdmissionReview.
    #[error("request body is not a valid AdmissionReview: {0}")]
    Json(#[source] serde_json::Error),
    #[error("unsupported apiVersion {0:?}: expected {ADMISSION_V1:?} or {ADMISSION_V1BETA1:?}")]
    ApiVersion(String),
    #[error("unsupported kind {0:?}: expected {ADMISSION_KIND:?}")]
    Kind(String),
    #[error("AdmissionReview has no request")]
    MissingRequest,
    #[error("AdmissionReview request has an empty uid")]
    EmptyUid,
}

impl AdmissionRequestIn {
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

impl AdmissionReviewIn {
    pub fn from_slice(body: &[u8]) -> Result<(String, AdmissionRequestIn), ReviewParseError> {
        let review: Self = serde_json::from_slice(body).map_err(ReviewParseError::Json)?;
        if review.api_version != ADMISSION_V1 && review.api_version != ADMISSION_V1BETA1 {
            return Err(ReviewParseError::ApiVersion(review.api_version));
        }
        if review.kind != ADMISSION_KIND {
            return Err(ReviewParseError::Kind(review.kind));
        }
        let request = review.request.ok_or(ReviewParseError::MissingRequest)?;
        if request.uid.is_empty() {
            return Err(ReviewParseError::EmptyUid);
        }
        Ok((review.api_version, request))
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReviewOut {
    pub api_version: String,
    pub kind: &'static str,
    pub response: AdmissionResponseOut,
}

impl AdmissionReviewOut {
    /// Answers in the apiVersion the apiserver asked in.
    pub fn new(api_version: &str, response: AdmissionResponseOut) -> Self {
        Self {
            api_version: api_version.to_string(),
            kind: ADMISSION_KIND,
            response,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponseOut {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusOut>,
    /// Base64 of the JSON Patch document, as `admission.k8s.io` specifies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
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

    pub fn patched(uid: &str, patch: &json_patch::Patch) -> Result<Self, serde_json::Error> {
        let bytes = serde_json::to_vec(patch)?;
        Ok(Self {
            patch: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            patch_type: Some("JSONPatch"),
            ..Self::allowed(uid)
        })
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
        let patch: json_patch::Patch =
            serde_json::from_value(json!([{"op": "add", "path": "/a", "value": 1}]))?;
        let out = serde_json::to_value(AdmissionResponseOut::patched("u1", &patch)?)?;
        assert_eq!(out["patchType"], "JSONPatch");
        let encoded = out["patch"].as_str().unwrap_or_default();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap_or_default();
        assert_eq!(
            serde_json::from_slice::<Value>(&decoded)?,
            json!([{"op": "add", "path": "/a", "value": 1}])
        );
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
