//! Reading a review body: JSON content type, a size limit (an UPDATE carries two objects, so the
//! default is well above axum's 2 MiB) and a read deadline against slow senders.

use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;

use super::error::ApiError;
use super::state::HttpConfig;

/// The whole body of a review, within the configured size and time.
pub async fn read<B>(config: &HttpConfig, headers: &HeaderMap, body: B) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limit = config.max_body_bytes;
    check_content_type(headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large(limit));
    }
    let mut collect = pin!(Limited::new(body, limit).collect());
    // A small review usually arrives with its headers: then the first poll finishes it and no
    // deadline timer is set up at all.
    let first = std::future::poll_fn(|cx| Poll::Ready(collect.as_mut().poll(cx))).await;
    let collected = match first {
        Poll::Ready(collected) => collected,
        // Boxed: the timer would make every review's future larger, for the few that wait.
        Poll::Pending => Box::pin(tokio::time::timeout(config.body_read_timeout, collect))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "request body not received within {}",
                        humanize(config.body_read_timeout)
                    ),
                )
            })?,
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if is_length_limit(e.as_ref()) => Err(too_large(limit)),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("cannot read request body: {e}"),
        )),
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers.get(header::CONTENT_TYPE);
    // What the apiserver sends, accepted without splitting and trimming it.
    if value.is_some_and(|v| v.as_bytes() == b"application/json") {
        return Ok(());
    }
    let content_type = value.and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be application/json, got {content_type:?}"),
        ))
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body exceeds the limit of {limit} bytes"),
    )
}

fn is_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

fn humanize(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}
