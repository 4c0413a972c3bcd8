//! Errors the HTTP layer answers itself, as a Kubernetes-style `Status` JSON document.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Tagged onto error responses (a refused or malformed request) so the observation layer can
/// count their decisions and log why without parsing bodies.
#[derive(Debug, Clone)]
pub struct DecisionTag {
    pub decision: &'static str,
    /// The response's message (the log line's `detail`).
    pub detail: String,
}

/// No standard code says "the client closed the request"; 499 is the one proxies log for it.
const CLIENT_CLOSED_REQUEST: StatusCode = match StatusCode::from_u16(499) {
    Ok(status) => status,
    Err(_) => StatusCode::BAD_REQUEST,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds after which a retry should succeed; the apiserver's client honours it on 429
    /// and 5xx answers within the webhook's timeout.
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The client went away before its request was read (nginx's 499): nothing can be answered,
    /// and it is not a malformed request — the apiserver resets a stream or closes a connection
    /// when its webhook timeout runs out.
    pub fn client_closed(message: impl Into<String>) -> Self {
        Self::new(CLIENT_CLOSED_REQUEST, message)
    }

    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    fn reason(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "BadRequest",
            StatusCode::FORBIDDEN => "Forbidden",
            StatusCode::NOT_FOUND => "NotFound",
            StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
            StatusCode::PAYLOAD_TOO_LARGE => "RequestEntityTooLarge",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "UnsupportedMediaType",
            StatusCode::REQUEST_TIMEOUT => "Timeout",
            StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
            StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
            CLIENT_CLOSED_REQUEST => "ClientClosedRequest",
            _ => "InternalError",
        }
    }

    fn decision(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "bad_media_type",
            StatusCode::REQUEST_TIMEOUT => "timeout",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::TOO_MANY_REQUESTS => "busy",
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => "not_routed",
            CLIENT_CLOSED_REQUEST => "client_closed",
            _ => "error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let tag = DecisionTag {
            decision: self.decision(),
            detail: self.message.clone(),
        };
        let body = json!({
            "apiVersion": "v1",
            "kind": "Status",
            "status": "Failure",
            "code": self.status.as_u16(),
            "reason": self.reason(),
            "message": self.message,
        });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(tag);
        response
    }
}
