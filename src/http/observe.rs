//! One tracing span and one set of metrics per request, and for a review its OpenTelemetry span
//! when traces are on (`crate::traces`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;
use tollgate_engine::evaluate::PolicyOutcome;
use tower::{Layer, Service};
use tracing::Span;

use super::error::DecisionTag;
use super::routes::Endpoint;
use super::state::AppState;
use crate::traces::{ReviewFacts, ReviewSpan};

/// What a judged review decided, carried in its response's extensions to this layer.
#[derive(Debug, Clone)]
pub struct Reviewed {
    pub decision: &'static str,
    pub tag: ReviewTag,
    /// For the review's trace, when reviews are traced.
    pub notes: Option<Box<ReviewNotes>>,
}

/// What a traced review's span records besides the decision.
#[derive(Debug, Clone, Default)]
pub struct ReviewNotes {
    /// Each policy that judged (or defaulted) the review, and its outcome.
    pub policies: Vec<PolicyOutcome>,
    /// Time `noting` measured: judging or defaulting (the answer's encoding excluded), or
    /// converting (each object is written into the answer as it is converted).
    pub evaluation: Duration,
}

impl ReviewNotes {
    /// Runs `judge`; when the review is traced, also times it and hands it a list to note each
    /// policy's outcome in. Untraced, it costs one branch.
    pub fn noting<T>(
        traced: bool,
        judge: impl FnOnce(Option<&mut Vec<PolicyOutcome>>) -> T,
    ) -> (T, Option<Self>) {
        if !traced {
            return (judge(None), None);
        }
        let started = Instant::now();
        let mut policies = Vec::new();
        let judged = judge(Some(&mut policies));
        let evaluation = started.elapsed();
        (
            judged,
            Some(Self {
                policies,
                evaluation,
            }),
        )
    }
}

/// What the handler learnt from the review, handed back in `Answered` for the log line.
///
/// Its three texts share one buffer: one allocation per review rather than three.
#[derive(Debug, Clone)]
pub struct ReviewTag {
    /// uid, group and kind, one after the other.
    text: String,
    uid_end: usize,
    group_end: usize,
    pub operation: &'static str,
}

impl ReviewTag {
    /// `group` is the API group (admission) or the desired apiVersion (conversion); `kind` is
    /// empty for conversion.
    pub fn new(uid: &str, group: &str, kind: &str, operation: &'static str) -> Self {
        let mut text = String::with_capacity(uid.len() + group.len() + kind.len());
        text.push_str(uid);
        text.push_str(group);
        text.push_str(kind);
        Self {
            text,
            uid_end: uid.len(),
            group_end: uid.len() + group.len(),
            operation,
        }
    }

    pub fn uid(&self) -> &str {
        self.text.get(..self.uid_end).unwrap_or_default()
    }

    pub fn group(&self) -> &str {
        self.text
            .get(self.uid_end..self.group_end)
            .unwrap_or_default()
    }

    pub fn kind(&self) -> &str {
        self.text.get(self.group_end..).unwrap_or_default()
    }
}

impl std::fmt::Display for ReviewTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.kind().is_empty() {
            f.write_str(self.group())
        } else {
            write!(f, "{}/{}", self.group(), self.kind())
        }
    }
}

/// Answers that need no one's attention are logged at debug; denials, failures and malformed
/// requests at info. Metrics count every answer either way.
fn routine(decision: &str) -> bool {
    matches!(decision, "allowed" | "patched" | "converted")
}

/// The router's outer layer: every request gets the in-flight gauge; a review (by its path)
/// its metrics and log line, anything else a debug line. A tower layer with a future of its
/// own (no boxed future or service per request, as a `from_fn` middleware has).
#[derive(Clone)]
pub struct ObserveLayer(pub AppState);

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            state: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    state: AppState,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Observed<S::Future> {
        let path = request.uri().path();
        let span = request_span(request.method(), path);
        let label = Endpoint::from_path(path).and_then(Endpoint::review_label);
        // Only reviews are traced; with traces off this is the one check they cost.
        let trace = match (self.state.traces(), label) {
            (Some(traces), Some(_)) => {
                Some(traces.review_span(request.method(), path, request.headers()))
            }
            _ => None,
        };
        let in_flight = InFlight::enter(self.state.clone());
        Observed {
            started: Instant::now(),
            inner: self.inner.call(request),
            in_flight,
            label,
            span,
            trace,
        }
    }
}

pin_project_lite::pin_project! {
    /// A request being answered, and what its answer is recorded with.
    pub struct Observed<F> {
        #[pin]
        inner: F,
        in_flight: InFlight,
        label: Option<&'static str>,
        span: Span,
        trace: Option<ReviewSpan>,
        started: Instant,
    }
}

impl<F> Future for Observed<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // A disabled span (the usual case: it is a debug span) is not entered.
        let polled = if this.span.is_disabled() {
            this.inner.poll(cx)
        } else {
            let _entered = this.span.enter();
            this.inner.poll(cx)
        };
        let Ok(mut response) = std::task::ready!(polled);
        record(
            &this.in_flight.0,
            *this.label,
            this.span,
            this.trace.take(),
            this.started.elapsed(),
            &mut response,
        );
        Poll::Ready(Ok(response))
    }
}

/// Debug level: at the default level it costs nothing per request; the answer's log line
/// carries the fields itself.
pub fn request_span(method: &Method, path: &str) -> Span {
    tracing::debug_span!("request", method = %method, path = %path)
}

/// Records an answer: for reviews (`label`) the metrics and the log line, for anything else a
/// debug line.
fn record(
    state: &AppState,
    label: Option<&'static str>,
    span: &Span,
    trace: Option<ReviewSpan>,
    elapsed: Duration,
    response: &mut Response,
) {
    let reviewed = response.extensions_mut().remove::<Reviewed>();
    let refused = response.extensions().get::<DecisionTag>();
    let detail = refused.map(|d| d.detail.as_str());
    let (decision, review) = match reviewed {
        Some(reviewed) => (reviewed.decision, Some(reviewed)),
        None => (refused.map_or("none", |d| d.decision), None),
    };
    let status = response.status().as_u16();
    if let Some(trace) = trace {
        let facts = review.as_ref().map(|r| ReviewFacts {
            uid: r.tag.uid(),
            group: r.tag.group(),
            kind: r.tag.kind(),
            operation: r.tag.operation,
            evaluation: r.notes.as_ref().map(|n| n.evaluation),
            policies: r.notes.as_ref().map_or(&[], |n| n.policies.as_slice()),
        });
        trace.finish(status, decision, facts.as_ref());
    }
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    let Some(endpoint) = label else {
        span.in_scope(|| tracing::debug!(status, latency_ms, "request answered"));
        return;
    };
    state
        .metrics()
        .record(endpoint, decision, elapsed.as_secs_f64());
    let tag = review.as_ref().map(|r| &r.tag);
    let uid = tag.map_or("", ReviewTag::uid);
    let kind = tag.map(tracing::field::display);
    let operation = tag.map_or("", |r| r.operation);
    span.in_scope(|| {
        if routine(decision) {
            tracing::debug!(
                uid,
                kind,
                operation,
                decision,
                status,
                latency_ms,
                "review answered"
            );
        } else {
            tracing::info!(
                uid,
                kind,
                operation,
                decision,
                status,
                latency_ms,
                detail,
                "review answered"
            );
        }
    });
}

/// Keeps the in-flight gauge right even when the client goes away mid-request.
pub struct InFlight(AppState);

impl InFlight {
    fn enter(state: AppState) -> Self {
        state.metrics().in_flight.inc();
        Self(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics().in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_gives_back_each_text_it_was_made_of() {
        let tag = ReviewTag::new("b5b3-é", "payments.example.com", "PaymentGateway", "CREATE");
        assert_eq!(tag.uid(), "b5b3-é");
        assert_eq!(tag.group(), "payments.example.com");
        assert_eq!(tag.kind(), "PaymentGateway");
        assert_eq!(tag.to_string(), "payments.example.com/PaymentGateway");
        let conversion = ReviewTag::new("u", "example.com/v2", "", "CONVERT");
        assert_eq!((conversion.uid(), conversion.kind()), ("u", ""));
        assert_eq!(conversion.to_string(), "example.com/v2");
        let empty = ReviewTag::new("", "", "", "CREATE");
        assert_eq!((empty.uid(), empty.group(), empty.kind()), ("", "", ""));
    }
}
