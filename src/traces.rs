//! OpenTelemetry traces: one span per review, exported over OTLP/HTTP.
//!
//! Off unless `--otlp-endpoint` or `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT` names a collector; then
//! nothing is built and the request path checks one `Option`. When on, spans are handed to the
//! SDK's batch processor, which exports them from a thread of its own: a slow or absent collector
//! costs dropped spans (its queue is bounded), never a slower review.

use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, Method};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span};
use tollgate_engine::evaluate::PolicyOutcome;

const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
const TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(
        "{variable}={value:?}: tollgate exports traces over OTLP/HTTP; use \"http/protobuf\" (the default) or \"http/json\", and the collector's HTTP port (4318)"
    )]
    Protocol {
        variable: &'static str,
        value: String,
    },
    #[error("--otlp-endpoint {0:?} is not an http:// or https:// URL")]
    Endpoint(String),
    #[error("cannot start the OTLP trace exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Where traces go, as the command line and the environment say.
#[derive(Debug, Clone, Default)]
pub struct TraceConfig {
    /// `--otlp-endpoint`: the collector's base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it
    /// (`/v1/traces` is appended).
    pub endpoint: Option<String>,
}

impl TraceConfig {
    /// Whether traces are on: an endpoint is given on the command line or in the standard
    /// variables, and `OTEL_SDK_DISABLED` does not turn the SDK off.
    pub fn enabled(&self) -> bool {
        let set = |name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
        let disabled =
            std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
        !disabled && (self.endpoint.is_some() || set(ENDPOINT) || set(TRACES_ENDPOINT))
    }
}

/// The exporter and the tracer reviews are traced with; shut down to flush what is queued.
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl Traces {
    /// `None` when traces are off. Everything else (headers, timeout, sampler, resource
    /// attributes, batch sizes) is read from the standard `OTEL_*` variables by the SDK.
    pub fn start(config: &TraceConfig) -> Result<Option<Self>, TraceError> {
        if !config.enabled() {
            return Ok(None);
        }
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(protocol()?);
        if let Some(base) = &config.endpoint {
            exporter = exporter.with_endpoint(traces_url(base)?);
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter.build()?)
            .with_resource(resource())
            .build();
        let tracer = provider.tracer("tollgate");
        Ok(Some(Self {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
        }))
    }

    /// A span for a review arriving now, the child of the caller's `traceparent` if it sent one.
    pub fn review_span(&self, method: &Method, path: &str, headers: &HeaderMap) -> ReviewSpan {
        let parent = self.propagator.extract_with_context(
            &Context::new(),
            &opentelemetry_http::HeaderExtractor(headers),
        );
        let span = self
            .tracer
            .span_builder(format!("{method} {path}"))
            .with_kind(SpanKind::Server)
            .with_start_time(SystemTime::now())
            .with_attributes([
                KeyValue::new("http.request.method", method.to_string()),
                KeyValue::new("url.path", path.to_string()),
            ])
            .start_with_context(&self.tracer, &parent);
        ReviewSpan(span)
    }

    /// Exports what is queued and stops the exporter, waiting at most `timeout`.
    pub fn shutdown(&self, timeout: Duration) {
        if let Err(e) = self.provider.shutdown_with_timeout(timeout) {
            tracing::warn!(error = %e, "traces queued at shutdown may not have been exported");
        }
    }
}

/// One review's span, ended when its answer is recorded (or when the request is dropped).
#[derive(Debug)]
pub struct ReviewSpan(Span);

impl ReviewSpan {
    /// Records the answer on the span and ends it.
    pub fn finish(mut self, status: u16, decision: &str, review: Option<&ReviewFacts<'_>>) {
        let span = &mut self.0;
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        span.set_attribute(KeyValue::new("tollgate.decision", decision.to_string()));
        if let Some(review) = review {
            record_review(span, review);
            if let Some(evaluation) = review.evaluation {
                span.set_attribute(KeyValue::new(
                    "tollgate.evaluation.duration_ms",
                    evaluation.as_secs_f64() * 1000.0,
                ));
            }
            record_policies(span, review.policies);
        }
        // A denial is the webhook working; only a failure to answer is an error.
        if status >= 500 || matches!(decision, "errored" | "failed") {
            span.set_status(Status::error(decision.to_string()));
        }
        span.end();
    }
}

/// What a review's span records of the review itself.
#[derive(Debug, Clone, Copy)]
pub struct ReviewFacts<'a> {
    pub uid: &'a str,
    /// The API group (admission) or the desired apiVersion (conversion).
    pub group: &'a str,
    /// Empty for conversion.
    pub kind: &'a str,
    pub operation: &'a str,
    /// Time spent judging, converting or defaulting.
    pub evaluation: Option<Duration>,
    pub policies: &'a [PolicyOutcome],
}

fn record_review(span: &mut Span, review: &ReviewFacts<'_>) {
    span.set_attribute(KeyValue::new("tollgate.review.uid", review.uid.to_string()));
    span.set_attribute(KeyValue::new(
        "tollgate.review.operation",
        review.operation.to_string(),
    ));
    if review.kind.is_empty() {
        span.set_attribute(KeyValue::new(
            "tollgate.review.desired_api_version",
            review.group.to_string(),
        ));
    } else {
        span.set_attribute(KeyValue::new(
            "tollgate.review.group",
            review.group.to_string(),
        ));
        span.set_attribute(KeyValue::new(
            "tollgate.review.kind",
            review.kind.to_string(),
        ));
    }
}

/// The policies that judged the review: their names as one attribute (to filter on), and one
/// event per policy with what it decided.
fn record_policies(span: &mut Span, policies: &[PolicyOutcome]) {
    if policies.is_empty() {
        return;
    }
    let names: Vec<opentelemetry::StringValue> =
        policies.iter().map(|p| p.policy.clone().into()).collect();
    span.set_attribute(KeyValue::new(
        "tollgate.policies",
        opentelemetry::Value::Array(names.into()),
    ));
    for outcome in policies {
        span.add_event(
            "tollgate.policy",
            vec![
                KeyValue::new("tollgate.policy.name", outcome.policy.clone()),
                KeyValue::new("tollgate.policy.decision", outcome.decision),
                KeyValue::new("tollgate.policy.violations", outcome.violations as i64),
                KeyValue::new("tollgate.policy.ratcheted", outcome.ratcheted as i64),
            ],
        );
    }
}

/// The protocol the standard variables ask for; gRPC is refused by name rather than ignored.
fn protocol() -> Result<Protocol, TraceError> {
    for variable in [TRACES_PROTOCOL, PROTOCOL] {
        let Ok(value) = std::env::var(variable) else {
            continue;
        };
        return match value.trim().to_ascii_lowercase().as_str() {
            "" => continue,
            "http/protobuf" => Ok(Protocol::HttpBinary),
            "http/json" => Ok(Protocol::HttpJson),
            _ => Err(TraceError::Protocol { variable, value }),
        };
    }
    Ok(Protocol::HttpBinary)
}

/// `--otlp-endpoint` is a base URL, like `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn traces_url(base: &str) -> Result<String, TraceError> {
    let base = base.trim();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(TraceError::Endpoint(base.to_string()));
    }
    Ok(format!("{}/v1/traces", base.trim_end_matches('/')))
}

/// service.name is "tollgate" unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` names it.
fn resource() -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let builder = Resource::builder()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if named {
        builder.build()
    } else {
        builder.with_service_name("tollgate").build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_is_a_base_url_as_the_standard_variable_is() {
        assert_eq!(
            traces_url("http://collector:4318").ok().as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        assert_eq!(
            traces_url("https://collector:4318/").ok().as_deref(),
            Some("https://collector:4318/v1/traces")
        );
        assert!(matches!(
            traces_url("collector:4317"),
            Err(TraceError::Endpoint(_))
        ));
    }
}
