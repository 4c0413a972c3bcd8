//! One connection's life after the handshake: the limits that end it (idle time, age, request
//! count), how the client is told to go elsewhere (`Connection: close` on HTTP/1.1, GOAWAY on
//! h2 — both let the apiserver's keep-alive traffic rebalance across replicas without failing a
//! request), and the HTTP settings that bound what one client may hold.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Request, Version, header};
use futures_util::future::Either;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::Notify;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::http::{AnonymousClient, Front};

/// Limits on connections and what each may do. The defaults suit the kube-apiserver: it keeps a
/// few long-lived HTTP/1.1 connections per replica and retries on `Retry-After`.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Connections served at once. Up to `OVERFLOW_CONNECTIONS` more are accepted only to be
    /// answered 503 with `Retry-After`; beyond that they are closed at once.
    pub max_connections: usize,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time allowed for a request's headers to arrive, and for an idle connection (no request in
    /// flight) before it is closed — on HTTP/1.1 and h2 alike, so slow clients cannot hold slots.
    pub header_read_timeout: Duration,
    /// Requests after which a connection is asked to reconnect.
    pub max_requests: u64,
    /// How old an h2 connection must be before `max_requests` retires it. Every stream of an h2
    /// client shares its one connection, so a retirement holds up all requests sent while the
    /// client makes its next handshake (about 2 ms on a busy two-core machine); counted alone,
    /// a client sending 4000 reviews/s would reconnect four times a second. With this bound a
    /// busy h2 connection still moves within seconds of a new replica starting. HTTP/1.1 keeps
    /// the exact count: there a retirement delays one connection's next request only.
    pub h2_request_limit_min_age: Duration,
    /// Age after which a connection is asked to reconnect.
    pub max_age: Duration,
    /// How long a closing connection may take to finish its in-flight requests.
    pub close_grace: Duration,
    pub h2_max_concurrent_streams: u32,
    pub h2_max_header_list_size: u32,
    /// Streams a client may reset before the server has accepted them (rapid-reset protection,
    /// CVE-2023-44487): more and the connection ends with GOAWAY ENHANCE_YOUR_CALM.
    pub h2_max_pending_reset_streams: usize,
    /// PING interval on h2 connections with streams open; a peer that does not answer within
    /// `header_read_timeout` is gone and its connection closed. Off by default: a connection
    /// with no request in flight is closed after `header_read_timeout` anyway, and every
    /// request in flight ends by its own deadlines, so a silent peer's slot is freed without
    /// them — while hyper's PING bookkeeping costs a lock and a clock read for every frame
    /// received (about 1.2k instructions an h2 review in a callgrind profile).
    pub h2_keep_alive_interval: Option<Duration>,
}

/// Extra connections accepted beyond `max_connections` only to answer 503 with `Retry-After`.
pub const OVERFLOW_CONNECTIONS: usize = 64;

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            // The apiserver's own --goaway-chance guidance is one in a thousand requests; one
            // extra handshake per thousand reviews costs well under 1 % of CPU.
            max_requests: 1000,
            h2_request_limit_min_age: Duration::from_secs(10),
            max_age: Duration::from_secs(300),
            close_grace: Duration::from_secs(25),
            // What most servers advertise (Go's is 250); the apiserver sends one review per
            // stream and rarely more than a few dozen at once per connection.
            h2_max_concurrent_streams: 100,
            // Admission requests carry a handful of small headers.
            h2_max_header_list_size: 16 * 1024,
            h2_max_pending_reset_streams: 20,
            h2_keep_alive_interval: None,
        }
    }
}

impl ConnectionLimits {
    /// The HTTP/1.1 + h2 server with these limits.
    pub fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // HTTP/1.1 is left at hyper's defaults. At most 100 headers a request (431 beyond) is
        // its default limit (hyper documents a per-request cost for setting the limit at all,
        // even to the default). Slow or stalled headers are cut off by the connection's own
        // idle deadline (`Lifecycle`: no request in flight for `header_read_timeout`, counted
        // from the last answer, however the bytes trickle in); hyper's own header timer would
        // do the same at the cost of a boxed timer and a clock read for every request.
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.h2_max_concurrent_streams)
            .max_header_list_size(self.h2_max_header_list_size)
            .max_pending_accept_reset_streams(self.h2_max_pending_reset_streams)
            .max_local_error_reset_streams(1024);
        if let Some(interval) = self.h2_keep_alive_interval {
            builder
                .http2()
                .keep_alive_interval(interval)
                .keep_alive_timeout(self.header_read_timeout);
        }
        builder
    }
}

/// What the connection's driver and its requests share.
pub struct Lifecycle {
    born: Instant,
    max_requests: u64,
    h2_request_limit_min_age: Duration,
    max_age: Duration,
    idle_timeout: Duration,
    served: AtomicU64,
    in_flight: AtomicUsize,
    /// Milliseconds since `born` at the last request start or end.
    last_active_ms: AtomicU64,
    h2: AtomicBool,
    /// Set when an answer told the client to reconnect.
    retired: AtomicBool,
    goaway: Notify,
}

impl Lifecycle {
    /// `h2` when ALPN chose it; a client speaking h2 without ALPN is recognised at its first
    /// request. The request and age limits are shortened by up to a quarter at random (whole
    /// requests only, so small limits stay exact), so
    /// connections opened together (a client starting up) are not all retired at once — a burst
    /// of handshakes would show in everyone's latency.
    pub fn new(limits: &ConnectionLimits, max_requests: u64, h2: bool) -> Arc<Self> {
        let cut = jitter() / 4.0;
        let max_requests = max_requests.max(1);
        Arc::new(Self {
            born: Instant::now(),
            max_requests: max_requests - (max_requests as f64 * cut) as u64,
            h2_request_limit_min_age: limits.h2_request_limit_min_age.mul_f64(1.0 - cut),
            max_age: limits.max_age.mul_f64(1.0 - cut),
            idle_timeout: limits.header_read_timeout,
            served: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(0),
            h2: AtomicBool::new(h2),
            retired: AtomicBool::new(false),
            goaway: Notify::new(),
        })
    }

    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Marks the connection active `age` after it was born.
    fn touch(&self, age: Duration) {
        let ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    fn last_active(&self) -> Instant {
        self.born + Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed))
    }

    /// Whether this connection, `age` old, has had its share once the current request is
    /// answered.
    fn exhausted(&self, age: Duration) -> bool {
        let counted_out = self.served() >= self.max_requests
            && (!self.h2.load(Ordering::Relaxed) || age >= self.h2_request_limit_min_age);
        counted_out || age >= self.max_age
    }

    /// When the driver should look again.
    pub fn next_check(&self) -> Instant {
        let idle_deadline = if self.in_flight.load(Ordering::Relaxed) == 0 {
            self.last_active() + self.idle_timeout
        } else {
            Instant::now() + self.idle_timeout
        };
        if self.h2.load(Ordering::Relaxed) {
            idle_deadline.min(self.born + self.max_age)
        } else {
            idle_deadline
        }
    }

    /// Whether to close now: idle too long, or an h2 connection past its age (GOAWAY lets the
    /// client finish in-flight streams and retry the rest elsewhere). An HTTP/1.1 connection
    /// past its age is closed only through its next response, which carries `Connection: close`:
    /// closing it while idle could race a request the client is already sending.
    pub fn should_close(&self) -> bool {
        let now = Instant::now();
        let idle = self.in_flight.load(Ordering::Relaxed) == 0
            && now >= self.last_active() + self.idle_timeout;
        let aged = self.h2.load(Ordering::Relaxed) && now >= self.born + self.max_age;
        if aged {
            self.retired.store(true, Ordering::Relaxed);
        }
        idle || aged
    }

    pub fn retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    pub fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// Resolves when a request asked for the connection to end (h2: send GOAWAY).
    pub async fn goaway_requested(&self) {
        self.goaway.notified().await;
    }
}

/// A number in [0, 1), different for every connection.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Counts a request in flight until its future ends, answered or abandoned.
///
/// Only the end of a request marks the connection active: while one is in flight the
/// connection is not idle whatever `last_active` says, so the clock is read once per request
/// (the age the answer is checked against) rather than at both ends and for that check.
struct InFlight {
    lifecycle: Arc<Lifecycle>,
    /// The connection's age when the request was answered; `None` if it was dropped first.
    answered_at: Option<Duration>,
}

impl InFlight {
    fn enter(lifecycle: &Arc<Lifecycle>, h2: bool) -> Self {
        lifecycle.in_flight.fetch_add(1, Ordering::Relaxed);
        lifecycle.served.fetch_add(1, Ordering::Relaxed);
        if h2 {
            lifecycle.h2.store(true, Ordering::Relaxed);
        }
        Self {
            lifecycle: Arc::clone(lifecycle),
            answered_at: None,
        }
    }

    /// The request was answered when the connection was `age` old.
    fn end(mut self, age: Duration) {
        self.answered_at = Some(age);
    }
}

impl Drop for InFlight {
    /// Every request ends here; one dropped before its answer (the client went away) at the
    /// connection's current age.
    fn drop(&mut self) {
        let age = self
            .answered_at
            .unwrap_or_else(|| self.lifecycle.born.elapsed());
        self.lifecycle.touch(age);
        self.lifecycle.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Who answers a connection's requests.
#[derive(Clone)]
pub enum Responder {
    /// The whole HTTP surface.
    Regular(Front),
    /// A connection beyond the cap: every request gets 503 with `Retry-After`.
    Overflow(Router),
}

impl Responder {
    /// Not an `async fn`, which would hold the request a second time beside the future it
    /// awaits (see `Front::handle`).
    fn respond(
        self,
        request: Request<Incoming>,
    ) -> impl Future<Output = axum::response::Response> + Send + 'static {
        match self {
            Self::Regular(front) => Either::Left(front.handle(request)),
            Self::Overflow(router) => Either::Right(async move {
                let Ok(response) = router.oneshot(request).await;
                response
            }),
        }
    }
}

/// The per-connection service: the responder, plus the request counting and the "please
/// reconnect" signal on the last answer this connection gives.
pub fn service(
    responder: Responder,
    lifecycle: Arc<Lifecycle>,
    anonymous: bool,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = axum::response::Response,
    Error = Infallible,
    Future = impl Future<Output = Result<axum::response::Response, Infallible>> + Send + 'static,
> + Send
+ 'static {
    hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let responder = responder.clone();
        let lifecycle = Arc::clone(&lifecycle);
        if anonymous {
            request.extensions_mut().insert(AnonymousClient);
        }
        let h2 = request.version() == Version::HTTP_2;
        // Boxed: the answering future is kilobytes, and hyper moves what this returns a few
        // times (into an h2 stream task, for one) — a pointer is cheaper to move.
        let answering = Box::pin(responder.respond(request));
        async move {
            let in_flight = InFlight::enter(&lifecycle, h2);
            let mut response = answering.await;
            let age = lifecycle.born.elapsed();
            if lifecycle.exhausted(age) {
                lifecycle.retired.store(true, Ordering::Relaxed);
                if h2 {
                    lifecycle.goaway.notify_one();
                } else {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
            }
            in_flight.end(age);
            Ok(response)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_marks_its_connection_active_when_it_ends_or_is_dropped() {
        let limits = ConnectionLimits::default();
        let lifecycle = Lifecycle::new(&limits, 1000, false);
        let answered = InFlight::enter(&lifecycle, false);
        assert!(!lifecycle.idle());
        answered.end(Duration::from_secs(7));
        assert!(lifecycle.idle());
        assert_eq!(
            lifecycle.last_active(),
            lifecycle.born + Duration::from_secs(7)
        );
        // A client gone mid-request: the dropped request still ends, at the current age.
        let abandoned = InFlight::enter(&lifecycle, true);
        assert!(!lifecycle.idle());
        drop(abandoned);
        assert!(lifecycle.idle());
        assert!(lifecycle.last_active() < lifecycle.born + Duration::from_secs(7));
        assert_eq!(lifecycle.served(), 2);
    }

    /// `lifecycle` after `requests` answered requests.
    fn served(lifecycle: &Arc<Lifecycle>, requests: u64, h2: bool) {
        for _ in 0..requests {
            InFlight::enter(lifecycle, h2).end(Duration::ZERO);
        }
    }

    #[test]
    fn the_request_count_retires_an_h2_connection_only_past_its_minimum_age() {
        let limits = ConnectionLimits::default();
        let min_age = limits.h2_request_limit_min_age;
        let young = min_age.mul_f64(0.7);

        let http1 = Lifecycle::new(&limits, 3, false);
        served(&http1, 2, false);
        assert!(!http1.exhausted(Duration::ZERO));
        served(&http1, 1, false);
        assert!(http1.exhausted(Duration::ZERO), "HTTP/1.1: the exact count");

        let h2 = Lifecycle::new(&limits, 3, true);
        served(&h2, 3, true);
        assert!(!h2.exhausted(Duration::ZERO));
        assert!(
            !h2.exhausted(young),
            "counted out, but younger than {min_age:?}"
        );
        assert!(h2.exhausted(min_age));

        let quiet = Lifecycle::new(&limits, 3, true);
        served(&quiet, 1, true);
        assert!(!quiet.exhausted(min_age), "old enough, not counted out");
        assert!(quiet.exhausted(limits.max_age), "the age limit alone");
    }

    #[test]
    fn retirement_limits_are_spread_but_small_limits_stay_exact() {
        let limits = ConnectionLimits::default();
        let spread: std::collections::BTreeSet<u64> = (0..200)
            .map(|_| Lifecycle::new(&limits, 1000, false).max_requests)
            .collect();
        assert!(
            spread.iter().all(|&n| (750..=1000).contains(&n)),
            "{spread:?}"
        );
        assert!(spread.len() > 20, "not spread: {spread:?}");
        for _ in 0..50 {
            assert_eq!(Lifecycle::new(&limits, 3, false).max_requests, 3);
            assert_eq!(Lifecycle::new(&limits, 1, false).max_requests, 1);
            let age = Lifecycle::new(&limits, 1000, true).max_age;
            assert!(age > limits.max_age.mul_f64(0.74) && age <= limits.max_age);
        }
    }
}
