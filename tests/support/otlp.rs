//! A small OTLP/HTTP trace receiver on loopback: what a collector's `otlp` receiver does with
//! `POST /v1/traces` (protobuf), keeping every span it is sent for the test to read.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;

/// A span as received, with the resource it came from.
#[derive(Debug, Clone)]
pub struct Received {
    pub resource: Vec<KeyValue>,
    pub span: Span,
}

#[derive(Clone, Default)]
pub struct OtlpReceiver {
    spans: Arc<Mutex<Vec<Received>>>,
    /// Each request's path and content type, to check what the exporter sent.
    requests: Arc<Mutex<Vec<(String, String)>>>,
}

impl OtlpReceiver {
    /// Listens on a loopback port until the test ends.
    pub async fn start() -> (Self, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind the receiver: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("receiver address: {e}"));
        let receiver = Self::default();
        let serving = receiver.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let receiver = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let receiver = receiver.clone();
                        async move { Ok::<_, hyper::Error>(receiver.export(request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        (receiver, addr)
    }

    async fn export(&self, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_string();
        let content_type = request
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        self.lock_requests().push((path, content_type));
        let body = match request.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => return status(400),
        };
        let Ok(export) = ExportTraceServiceRequest::decode(body) else {
            return status(400);
        };
        let mut spans = self.lock_spans();
        for resource_spans in export.resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| r.attributes)
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|span| Received {
                    resource: resource.clone(),
                    span,
                }));
            }
        }
        let mut response = Response::new(Full::new(Bytes::from(
            ExportTraceServiceResponse::default().encode_to_vec(),
        )));
        response.headers_mut().insert(
            "content-type",
            hyper::header::HeaderValue::from_static("application/x-protobuf"),
        );
        response
    }

    fn lock_spans(&self) -> std::sync::MutexGuard<'_, Vec<Received>> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_requests(&self) -> std::sync::MutexGuard<'_, Vec<(String, String)>> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn requests(&self) -> Vec<(String, String)> {
        self.lock_requests().clone()
    }

    /// The spans received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.lock_spans().clone()
    }

    /// Waits (up to `limit`) for a span `wanted` accepts.
    pub async fn span_where(
        &self,
        what: &str,
        limit: Duration,
        wanted: impl Fn(&Received) -> bool,
    ) -> Received {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(found) = self.spans().into_iter().find(&wanted) {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no span {what} within {limit:?}; received: {:#?}",
                self.spans()
                    .iter()
                    .map(|r| (&r.span.name, attributes(&r.span.attributes)))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn status(code: u16) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or_default();
    response
}

/// Attributes as (key, value as text) pairs; arrays as their items joined by ",".
pub fn attributes(list: &[KeyValue]) -> Vec<(String, String)> {
    list.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

/// One attribute's value as text, if it is there.
pub fn attribute(list: &[KeyValue], key: &str) -> Option<String> {
    list.iter()
        .find(|kv| kv.key == key)
        .map(|kv| text(kv.value.as_ref()))
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::ArrayValue(items)) => items
            .values
            .iter()
            .map(|v| text(Some(v)))
            .collect::<Vec<_>>()
            .join(","),
        _ => String::new(),
    }
}
