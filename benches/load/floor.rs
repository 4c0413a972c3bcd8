//! The floor: the least a webhook server on tollgate's stack can do per request. Same runtime,
//! same TLS (rustls with ring, TLS 1.3, ALPN h2 + http/1.1), same HTTP layer (hyper's auto
//! builder); it reads the whole body and answers a fixed document per path. Whatever tollgate
//! spends above this is its own cost.
//!
//! Started by the suite as `<bench binary> floor --cert-dir DIR --addr ADDR --answer PATH=FILE...`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_rustls::TlsAcceptor;

struct Options {
    cert_dir: std::path::PathBuf,
    addr: String,
    answers: HashMap<String, Bytes>,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut cert_dir = None;
    let mut addr = None;
    let mut answers = HashMap::new();
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--cert-dir" => cert_dir = Some(value.into()),
            "--addr" => addr = Some(value.clone()),
            "--answer" => {
                let (path, file) = value.split_once('=').context("--answer PATH=FILE")?;
                let body = std::fs::read(file).with_context(|| file.to_string())?;
                answers.insert(path.to_string(), Bytes::from(body));
            }
            other => bail!("unknown floor flag {other}"),
        }
    }
    Ok(Options {
        cert_dir: cert_dir.context("--cert-dir is required")?,
        addr: addr.context("--addr is required")?,
        answers,
    })
}

fn tls(cert_dir: &std::path::Path) -> anyhow::Result<TlsAcceptor> {
    let certs =
        CertificateDer::pem_file_iter(cert_dir.join("tls.crt"))?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(cert_dir.join("tls.key"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let options = parse(args)?;
    let acceptor = tls(&options.cert_dir)?;
    let answers = Arc::new(options.answers);
    tokio::runtime::Runtime::new()?.block_on(async move {
        let listener = TcpListener::bind(&options.addr).await?;
        let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
        // Returning from `main` on SIGTERM (as tollgate does) lets a profile-instrumented build
        // write its counts (`scripts/pgo.sh`).
        let mut terminate = signal(SignalKind::terminate())?;
        loop {
            let tcp = tokio::select! {
                accepted = listener.accept() => accepted?.0,
                _ = terminate.recv() => return Ok(()),
            };
            // As tollgate does (src/server/listener.rs), so both send frames alike.
            tcp.set_nodelay(true)?;
            let acceptor = acceptor.clone();
            let builder = Arc::clone(&builder);
            let answers = Arc::clone(&answers);
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let answers = Arc::clone(&answers);
                    async move { Ok::<_, Infallible>(answer(request, &answers).await) }
                });
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn answer(
    request: Request<Incoming>,
    answers: &HashMap<String, Bytes>,
) -> Response<Full<Bytes>> {
    let fixed = answers.get(request.uri().path()).cloned();
    let read = request.into_body().collect().await;
    let (status, body) = match (read, fixed) {
        (Ok(_), Some(body)) => (200, body),
        (Ok(_), None) => (
            404,
            Bytes::from_static(b"{\"message\":\"no answer for this path\"}"),
        ),
        (Err(_), _) => (400, Bytes::from_static(b"{\"message\":\"body not read\"}")),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
