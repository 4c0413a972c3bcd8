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
        Err(e) if client_went_away(e.as_ref()) => Err(ApiError::client_closed(format!(
            "client went away before its request body arrived: {}",
            with_causes(e.as_ref())
        ))),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("cannot read request body: {}", with_causes(e.as_ref())),
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
    chain(error).any(|e| e.is::<http_body_util::LengthLimitError>())
}

/// The error, then each of its causes in turn.
fn chain<'e>(
    error: &'e (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'e (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}

/// Whether the body could not be read because the client left: it reset its h2 stream (or the
/// connection), or closed its connection mid-body. Bytes that do arrive and are wrong are a bad
/// request; bytes that stop arriving are not.
fn client_went_away(error: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind;
    let gone = |io: &std::io::Error| {
        matches!(
            io.kind(),
            ErrorKind::UnexpectedEof
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
        )
    };
    // The first h2 or I/O error in the chain decides.
    chain(error)
        .find_map(|e| {
            if let Some(h2) = e.downcast_ref::<h2::Error>() {
                Some(
                    (h2.is_remote() && (h2.is_reset() || h2.is_go_away()))
                        || h2.get_io().is_some_and(gone),
                )
            } else {
                e.downcast_ref::<std::io::Error>().map(gone)
            }
        })
        .unwrap_or(false)
}

/// The error and each of its causes: hyper's own message ("error reading a body from
/// connection") does not say whether the client reset the stream or the connection broke.
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    for cause in chain(error).skip(1) {
        let message = cause.to_string();
        // Some errors already print their cause as part of their own message.
        if !text.ends_with(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
    }
    text
}

fn humanize(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{message}")]
    struct Layer {
        message: &'static str,
        #[source]
        cause: Option<Box<Layer>>,
    }

    fn layer(message: &'static str, cause: Option<Layer>) -> Layer {
        Layer {
            message,
            cause: cause.map(Box::new),
        }
    }

    #[test]
    fn a_body_error_names_each_cause_once() {
        let reset = layer("stream error received: stream no longer needed", None);
        let hyper = layer("error reading a body from connection", Some(reset));
        assert_eq!(
            with_causes(&hyper),
            "error reading a body from connection: stream error received: stream no longer needed"
        );
        // A cause already in its parent's message is not repeated.
        let io = layer("broken pipe", None);
        let wrapped = layer("write failed: broken pipe", Some(io));
        assert_eq!(with_causes(&wrapped), "write failed: broken pipe");
    }
}
