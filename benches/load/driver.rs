//! The load driver: fixed keep-alive connections over TLS, HTTP/1.1 or h2, either at a fixed
//! request rate (for CPU per request and latency) or as fast as answers come back (throughput).
//! Latency is measured from the moment a request is sent to the last byte of its answer.
//! Like the apiserver's Go client, a connection the server retires (`Connection: close` after an
//! answer, GOAWAY on h2) is replaced by a new one, and a request the server refused unprocessed
//! on a retiring h2 connection is sent again on the new one.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    H2,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Self::Http1 => "HTTP/1.1",
            Self::H2 => "h2",
        }
    }
}

/// One kind of request, sent again and again, and how to tell its answer is the right one.
#[derive(Debug, Clone)]
pub struct Call {
    pub path: String,
    pub body: Bytes,
    /// A fragment every correct answer contains.
    pub expect: &'static str,
}

/// Where to send, and the client TLS configuration trusting the benchmark CA.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    h2: Arc<rustls::ClientConfig>,
}

impl Target {
    pub fn new(addr: SocketAddr, ca_file: &Path) -> anyhow::Result<Self> {
        let pem = std::fs::read(ca_file).with_context(|| ca_file.display().to_string())?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile_certs(&pem)? {
            roots.add(cert)?;
        }
        let base = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut tls = base.clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut h2 = base;
        h2.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            addr,
            tls: Arc::new(tls),
            h2: Arc::new(h2),
        })
    }

    async fn connect(&self, protocol: Protocol) -> anyhow::Result<Sender> {
        let connection = match self.open(protocol).await? {
            Connection::H2(sender) => {
                Connection::Shared(Arc::new(tokio::sync::RwLock::new((0, sender))))
            }
            other => other,
        };
        Ok(Sender::new(self.clone(), connection))
    }

    async fn open(&self, protocol: Protocol) -> anyhow::Result<Connection> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let config = match protocol {
            Protocol::Http1 => Arc::clone(&self.tls),
            Protocol::H2 => Arc::clone(&self.h2),
        };
        let name = ServerName::IpAddress(self.addr.ip().into());
        let tls = TlsConnector::from(config).connect(name, tcp).await?;
        let io = TokioIo::new(tls);
        Ok(match protocol {
            Protocol::Http1 => {
                let (sender, connection) = http1::handshake(io).await?;
                tokio::spawn(connection);
                Connection::Http1(sender)
            }
            Protocol::H2 => {
                let (sender, connection) = http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(connection);
                Connection::H2(sender)
            }
        })
    }

    /// `count` senders: separate connections for HTTP/1.1; for h2 one connection carrying every
    /// stream, as Go's HTTP/2 transport (the apiserver's client) does.
    pub async fn senders(&self, protocol: Protocol, count: usize) -> anyhow::Result<Vec<Sender>> {
        let mut senders = Vec::with_capacity(count);
        match protocol {
            Protocol::Http1 => {
                for _ in 0..count {
                    senders.push(self.connect(protocol).await?);
                }
            }
            Protocol::H2 => {
                if let Connection::H2(sender) = self.open(protocol).await? {
                    let shared = Arc::new(tokio::sync::RwLock::new((0, sender)));
                    senders.extend((0..count).map(|_| {
                        Sender::new(self.clone(), Connection::Shared(Arc::clone(&shared)))
                    }));
                }
            }
        }
        Ok(senders)
    }

    /// Sends `call` until it is answered correctly or `patience` runs out (servers starting up).
    pub async fn wait_until_answering(
        &self,
        call: &Call,
        patience: Duration,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let attempt = async {
                let mut sender = self.connect(Protocol::Http1).await?;
                sender.send(call).await
            };
            match attempt.await {
                Ok(()) => return Ok(()),
                Err(e) if started.elapsed() > patience => {
                    bail!(
                        "{} did not answer {} correctly: {e:#}",
                        self.addr,
                        call.path
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The body of one answer to `call` (fixed answers for the floor server are taken from here).
    pub async fn fetch(&self, call: &Call) -> anyhow::Result<Bytes> {
        let mut sender = self.connect(Protocol::Http1).await?;
        sender.exchange(call).await
    }
}

fn rustls_pemfile_certs(
    pem: &[u8],
) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .context("CA file is not PEM")
}

/// Longest wait for one answer (the apiserver's webhook timeout is at most 30 s).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// One live connection; h2 connections are shared by every sender of a run and replaced once
/// (the generation says which one a sender saw fail).
enum Connection {
    Http1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
    Shared(Arc<tokio::sync::RwLock<(u64, http2::SendRequest<Full<Bytes>>)>>),
}

pub struct Sender {
    target: Target,
    connection: Connection,
    retries: Retries,
    /// Where the current exchange is: an exchange that never ends says where it stopped.
    stage: &'static str,
    /// The shared h2 connection (generation, handle) the current exchange went out on.
    in_use: Option<(u64, http2::SendRequest<Full<Bytes>>)>,
}

/// Requests sent again on a fresh h2 connection after the first one failed, and why the first
/// of them failed: a retry is invisible in the answers, so it is counted here.
#[derive(Default)]
pub struct Retries {
    pub count: u64,
    pub first_reason: Option<String>,
}

impl Retries {
    fn merge(&mut self, other: Retries) {
        self.count += other.count;
        if self.first_reason.is_none() {
            self.first_reason = other.first_reason;
        }
    }
}

impl Sender {
    fn new(target: Target, connection: Connection) -> Self {
        Self {
            target,
            connection,
            retries: Retries::default(),
            stage: "",
            in_use: None,
        }
    }

    async fn exchange(&mut self, call: &Call) -> anyhow::Result<Bytes> {
        let request = || {
            hyper::Request::post(call.path.as_str())
                .header(hyper::header::HOST, "127.0.0.1")
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(call.body.clone()))
        };
        self.stage = "waiting for the connection";
        let response = match &mut self.connection {
            Connection::Http1(s) => {
                if s.ready().await.is_err() {
                    // Closed by the server after its last answer (`Connection: close`).
                    self.stage = "opening a new connection";
                    if let Connection::Http1(fresh) = self.target.open(Protocol::Http1).await? {
                        *s = fresh;
                    }
                    s.ready().await?;
                }
                self.stage = "waiting for the answer's head";
                s.send_request(request()?).await?
            }
            Connection::H2(s) => {
                s.ready().await?;
                s.send_request(request()?).await?
            }
            Connection::Shared(shared) => {
                let (generation, mut s) = shared.read().await.clone();
                self.in_use = Some((generation, s.clone()));
                let first = match s.ready().await {
                    Ok(()) => {
                        self.stage = "waiting for the answer's head";
                        s.send_request(request()?).await
                    }
                    Err(e) => Err(e),
                };
                match first {
                    Ok(response) => response,
                    // The connection is going away (GOAWAY: a stream beyond the server's last
                    // one was not processed); retried once on a fresh connection, as Go does.
                    Err(e) => {
                        self.retries.count += 1;
                        // `{:#}` prints the causes: hyper's own message does not say what
                        // the peer did.
                        self.retries
                            .first_reason
                            .get_or_insert_with(|| format!("{:#}", anyhow::Error::new(e)));
                        self.stage = "replacing the shared connection";
                        let mut current = shared.write().await;
                        if current.0 == generation
                            && let Connection::H2(fresh) = self.target.open(Protocol::H2).await?
                        {
                            *current = (generation + 1, fresh);
                        }
                        let mut s = current.1.clone();
                        self.in_use = Some((current.0, s.clone()));
                        drop(current);
                        s.ready().await?;
                        self.stage = "waiting for the answer's head, sent again";
                        s.send_request(request()?).await?
                    }
                }
            }
        };
        let status = response.status();
        self.stage = "reading the answer's body";
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(body)
    }

    /// For an exchange that never ended on a shared h2 connection: which connection it was on,
    /// whether that one has been replaced since, and whether its client side still takes
    /// requests.
    fn shared_connection_state(&self) -> String {
        let (Connection::Shared(shared), Some((generation, sender))) =
            (&self.connection, &self.in_use)
        else {
            return String::new();
        };
        let current = shared
            .try_read()
            .map_or_else(|_| "?".to_string(), |c| c.0.to_string());
        let state = if sender.is_closed() {
            "closed"
        } else if sender.is_ready() {
            "ready"
        } else {
            "open, not ready"
        };
        format!("; on h2 connection {generation}, current {current}, its client side {state}")
    }

    async fn send(&mut self, call: &Call) -> anyhow::Result<()> {
        // A request that never ends (a connection lost in a way the client does not notice)
        // becomes a counted failure instead of a benchmark that hangs.
        let body = tokio::time::timeout(EXCHANGE_TIMEOUT, self.exchange(call))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "no answer within {EXCHANGE_TIMEOUT:?} ({}{})",
                    self.stage,
                    self.shared_connection_state()
                )
            })??;
        if memchr_contains(&body, call.expect.as_bytes()) {
            Ok(())
        } else {
            bail!(
                "unexpected answer (wanted {:?}): {}",
                call.expect,
                String::from_utf8_lossy(&body)
            )
        }
    }
}

/// Whether the answer carries the fragment near its start or end (where a review's verdict is):
/// scanning a whole megabyte answer would cost the driver more CPU than the server spends.
fn memchr_contains(haystack: &[u8], needle: &[u8]) -> bool {
    const EDGE: usize = 4096;
    let found = |part: &[u8]| needle.is_empty() || part.windows(needle.len()).any(|w| w == needle);
    if haystack.len() <= 2 * EDGE {
        return found(haystack);
    }
    let tail_start = haystack.len() - EDGE - needle.len();
    found(&haystack[..EDGE + needle.len()]) || found(&haystack[tail_start..])
}

/// What one load phase produced.
pub struct Outcome {
    pub answered: u64,
    pub failed: u64,
    pub first_failure: Option<String>,
    /// Requests that failed once on a retiring h2 connection and were answered on a new one.
    pub retries: Retries,
    /// Microseconds.
    pub latency: Histogram<u64>,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn new() -> Self {
        Self {
            answered: 0,
            failed: 0,
            first_failure: None,
            retries: Retries::default(),
            latency: new_histogram(),
            elapsed: Duration::ZERO,
        }
    }

    pub fn merge(&mut self, other: Outcome) {
        self.answered += other.answered;
        self.failed += other.failed;
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
        self.retries.merge(other.retries);
        let _ = self.latency.add(&other.latency);
    }

    fn record(&mut self, result: anyhow::Result<()>, took: Duration) {
        match result {
            Ok(()) => {
                self.answered += 1;
                let _ = self.latency.record(took.as_micros().max(1) as u64);
            }
            Err(e) => {
                self.failed += 1;
                if self.first_failure.is_none() {
                    self.first_failure = Some(format!("{e:#}"));
                }
            }
        }
    }

    pub fn per_second(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency at quantile `q` in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("constant histogram bounds")
}

/// `rate` requests per second in total, spread evenly over the senders, for `duration`.
/// The senders come back for the next phase.
pub async fn fixed_rate(
    senders: Vec<Sender>,
    call: &Call,
    rate: f64,
    duration: Duration,
) -> (Outcome, Vec<Sender>) {
    let count = senders.len();
    let interval = Duration::from_secs_f64(count as f64 / rate);
    let started = tokio::time::Instant::now();
    let end = started + duration;
    let workers = senders.into_iter().enumerate().map(|(i, mut sender)| {
        let call = call.clone();
        tokio::spawn(async move {
            let mut outcome = Outcome::new();
            let mut next = started + Duration::from_secs_f64(i as f64 / rate);
            while next < end {
                tokio::time::sleep_until(next).await;
                let sent = Instant::now();
                let result = sender.send(&call).await;
                outcome.record(result, sent.elapsed());
                next += interval;
            }
            (outcome, sender)
        })
    });
    collect(workers, started).await
}

/// Every sender sends its next request as soon as the previous answer arrived, for `duration`.
pub async fn open_throttle(senders: Vec<Sender>, call: &Call, duration: Duration) -> Outcome {
    let started = tokio::time::Instant::now();
    let end = started + duration;
    let workers = senders.into_iter().map(|mut sender| {
        let call = call.clone();
        tokio::spawn(async move {
            let mut outcome = Outcome::new();
            while tokio::time::Instant::now() < end {
                let sent = Instant::now();
                let result = sender.send(&call).await;
                outcome.record(result, sent.elapsed());
            }
            (outcome, sender)
        })
    });
    collect(workers, started).await.0
}

async fn collect(
    workers: impl Iterator<Item = tokio::task::JoinHandle<(Outcome, Sender)>>,
    started: tokio::time::Instant,
) -> (Outcome, Vec<Sender>) {
    let handles: Vec<_> = workers.collect();
    let mut total = Outcome::new();
    let mut senders = Vec::with_capacity(handles.len());
    for handle in handles {
        match handle.await {
            Ok((outcome, mut sender)) => {
                total.merge(outcome);
                total.retries.merge(std::mem::take(&mut sender.retries));
                senders.push(sender);
            }
            Err(e) => {
                total.failed += 1;
                total.first_failure.get_or_insert_with(|| e.to_string());
            }
        }
    }
    total.elapsed = started.elapsed();
    (total, senders)
}
