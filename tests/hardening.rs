//! Connection limits, per-connection retirement, HTTP/2 limits and mutual TLS, each driven over
//! real TLS against the server. No timed assertions: bounds are generous safety nets only.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed step should fail the test loudly

mod support;

use std::time::Duration;

use serde_json::Value;
use support::h2;
use support::server::{ClientIdentity, TestCa, TestServer, tls_connect};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tollgate::ServeConfig;
use tollgate::server::ClientAuth;

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Safety net for steps that must end on their own; far above any expected time.
const BOUND: Duration = Duration::from_secs(30);

async fn start(adjust: impl FnOnce(&mut ServeConfig)) -> TestServer {
    TestServer::start_with(support::repo_path("policies"), adjust).await
}

async fn connect(server: &TestServer, alpn: &[&[u8]]) -> Tls {
    tls_connect(
        server.addr,
        &server.ca_pem,
        alpn,
        rustls::DEFAULT_VERSIONS,
        None,
    )
    .await
    .expect("handshake")
}

async fn h1(server: &TestServer) -> Tls {
    connect(server, &[b"http/1.1"]).await
}

fn review_bytes() -> Vec<u8> {
    serde_json::to_vec(&support::fixture("validate-allow.json")).expect("fixture")
}

struct Http1Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Http1Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

async fn send_review(stream: &mut Tls, path: &str, body: &[u8]) {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(body).await.expect("write body");
    stream.flush().await.expect("flush");
}

/// Reads one HTTP/1.1 response with a Content-Length body.
async fn read_response(stream: &mut Tls) -> Http1Response {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(BOUND, stream.read(&mut byte))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "connection closed before a response: {buf:?}");
        buf.push(byte[0]);
    }
    let text = String::from_utf8(buf).expect("ascii head");
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.expect("body");
    Http1Response {
        status,
        headers,
        body,
    }
}

async fn review_on(stream: &mut Tls) -> Http1Response {
    send_review(stream, "/validate", &review_bytes()).await;
    read_response(stream).await
}

/// Whether the server closes the connection (EOF or reset) within the safety bound.
async fn closed_by_server(stream: &mut (impl AsyncRead + Unpin)) -> bool {
    let mut sink = [0u8; 4096];
    let closing = async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(BOUND, closing).await.unwrap_or(false)
}

async fn a_valid_review_succeeds(server: &TestServer) {
    let (status, body) = server
        .post_json("/validate", &support::fixture("validate-allow.json"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["allowed"], true, "{body}");
}

#[tokio::test]
async fn slow_and_silent_clients_are_cut_off_on_http1_and_h2() {
    let server = start(|c| {
        c.connections.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    // Connected, never says anything.
    let mut silent = h1(&server).await;
    // HTTP/1.1 headers that never finish.
    let mut slow_h1 = h1(&server).await;
    slow_h1
        .write_all(b"POST /validate HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("partial head");
    // HTTP/1.1 headers trickling in, a line every 200 ms, never finishing.
    let mut trickling = h1(&server).await;
    trickling
        .write_all(b"POST /validate HTTP/1.1\r\n")
        .await
        .expect("request line");
    let (mut trickle_read, mut trickle_write) = tokio::io::split(trickling);
    let trickle = tokio::spawn(async move {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let line = format!("X-Slow-{i}: x\r\n");
            if trickle_write.write_all(line.as_bytes()).await.is_err() {
                return i;
            }
        }
        0
    });
    // One whole review, then the next request's headers never finish.
    let mut stalled_after_one = h1(&server).await;
    assert_eq!(review_on(&mut stalled_after_one).await.status, 200);
    stalled_after_one
        .write_all(b"POST /validate HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("partial second head");
    // h2: preface and settings, then a header block that never ends (no END_HEADERS).
    let mut slow_h2 = connect(&server, &[b"h2"]).await;
    h2::start(&mut slow_h2).await;
    h2::write_frame(&mut slow_h2, h2::HEADERS, 0, 1, &h2::POST_ROOT).await;
    let mut idle_h2 = connect(&server, &[b"h2"]).await;
    h2::start(&mut idle_h2).await;

    a_valid_review_succeeds(&server).await;
    assert!(closed_by_server(&mut silent).await, "silent client kept");
    assert!(closed_by_server(&mut slow_h1).await, "slow h1 headers kept");
    assert!(
        closed_by_server(&mut trickle_read).await,
        "trickling h1 headers kept"
    );
    trickle.abort();
    assert!(
        closed_by_server(&mut stalled_after_one).await,
        "a stalled second request kept"
    );
    assert!(closed_by_server(&mut slow_h2).await, "slow h2 headers kept");
    assert!(closed_by_server(&mut idle_h2).await, "idle h2 kept");
    a_valid_review_succeeds(&server).await;
    server.finish().await;
}

#[tokio::test]
async fn h2_pings_probe_open_streams_only_when_an_interval_is_set() {
    // A stream whose body is slow to come: the server waits on it, the connection is not idle.
    async fn pinged(server: &TestServer, within: Duration) -> bool {
        let mut stream = connect(server, &[b"h2"]).await;
        h2::start(&mut stream).await;
        h2::open_post(&mut stream, 1).await;
        h2::pinged_within(&mut stream, within).await
    }
    let quiet = start(|c| c.http.body_read_timeout = Duration::from_secs(60)).await;
    assert!(
        !pinged(&quiet, Duration::from_millis(2500)).await,
        "PINGs by default"
    );
    quiet.finish().await;
    let probing = start(|c| {
        c.http.body_read_timeout = Duration::from_secs(60);
        c.connections.h2_keep_alive_interval = Some(Duration::from_secs(1));
    })
    .await;
    assert!(
        pinged(&probing, Duration::from_secs(20)).await,
        "no PING with an interval of 1 s"
    );
    probing.finish().await;
}

#[tokio::test]
async fn a_client_gone_mid_body_is_counted_as_closed_not_as_a_bad_request() {
    const CANCEL: u32 = 0x8;
    let server = start(|_| {}).await;
    // HTTP/1.1: the connection closed with the body half sent.
    let stream = hold_in_flight_slot(&server).await;
    wait_for_in_flight(&server, 1).await;
    drop(stream);
    wait_for_in_flight(&server, 0).await;
    // h2: the stream reset with its body half sent (what the apiserver does when its webhook
    // timeout runs out), the connection left open.
    let mut multiplexed = connect(&server, &[b"h2"]).await;
    h2::start(&mut multiplexed).await;
    h2::open_post(&mut multiplexed, 1).await;
    h2::write_frame(&mut multiplexed, h2::DATA, 0, 1, b"{").await;
    wait_for_in_flight(&server, 1).await;
    h2::write_frame(
        &mut multiplexed,
        h2::RST_STREAM,
        0,
        1,
        &CANCEL.to_be_bytes(),
    )
    .await;
    wait_for_in_flight(&server, 0).await;
    let metrics = server.state.metrics().encode().expect("metrics");
    assert!(
        metrics.contains(
            "tollgate_requests_total{endpoint=\"validate\",decision=\"client_closed\"} 2"
        ),
        "{metrics}"
    );
    assert!(!metrics.contains("decision=\"bad_request\""), "{metrics}");
    drop(multiplexed);
    a_valid_review_succeeds(&server).await;
    server.finish().await;
}

#[tokio::test]
async fn a_request_with_more_than_a_hundred_headers_gets_431() {
    let server = start(|_| {}).await;
    let body = review_bytes();
    let send = |extra: usize| {
        let mut head = format!(
            "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        for i in 0..extra {
            head.push_str(&format!("X-Extra-{i}: {i}\r\n"));
        }
        head.push_str("\r\n");
        head
    };
    // Three headers of the request itself: 97 more is the most allowed, 98 one too many.
    let mut fine = h1(&server).await;
    fine.write_all(send(97).as_bytes())
        .await
        .expect("write head");
    fine.write_all(&body).await.expect("write body");
    assert_eq!(read_response(&mut fine).await.status, 200);
    let mut too_many = h1(&server).await;
    too_many
        .write_all(send(98).as_bytes())
        .await
        .expect("write head");
    too_many.write_all(&body).await.expect("write body");
    assert_eq!(read_response(&mut too_many).await.status, 431);
    a_valid_review_succeeds(&server).await;
}

#[tokio::test]
async fn a_handshake_that_never_finishes_is_cut_off() {
    let server = start(|c| c.connections.handshake_timeout = Duration::from_secs(1)).await;
    let mut silent = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let mut half = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    // The first bytes of a ClientHello record, then nothing.
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .expect("partial hello");
    a_valid_review_succeeds(&server).await;
    assert!(
        closed_by_server(&mut silent).await,
        "silent TCP client kept"
    );
    assert!(closed_by_server(&mut half).await, "half handshake kept");
    let metrics = server.state.metrics().encode().expect("metrics");
    assert!(
        metrics.contains("tollgate_connections_refused_total{reason=\"handshake_timeout\"} 2"),
        "{metrics}"
    );
    server.finish().await;
}

/// Holds one in-flight slot: headers sent, body announced but never finished.
async fn hold_in_flight_slot(server: &TestServer) -> Tls {
    let mut stream = h1(server).await;
    stream
        .write_all(b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        .await
        .expect("partial request");
    stream.flush().await.expect("flush");
    stream
}

async fn in_flight(server: &TestServer) -> i64 {
    server.state.metrics().in_flight.get()
}

async fn wait_for_in_flight(server: &TestServer, expected: i64) {
    tokio::time::timeout(BOUND, async {
        while in_flight(server).await != expected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("in-flight count reached");
}

#[tokio::test]
async fn the_in_flight_cap_answers_429_with_retry_after_and_frees_up() {
    let server = start(|c| {
        c.http.max_in_flight = 2;
        c.http.body_read_timeout = Duration::from_secs(60);
    })
    .await;
    let first = hold_in_flight_slot(&server).await;
    wait_for_in_flight(&server, 1).await;
    // One slot left: a valid review on another connection is answered.
    a_valid_review_succeeds(&server).await;
    let second = hold_in_flight_slot(&server).await;
    wait_for_in_flight(&server, 2).await;

    let mut other = h1(&server).await;
    let refused = review_on(&mut other).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("retry-after"), Some("1"));
    let body = refused.json();
    assert_eq!(body["reason"], "TooManyRequests", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("limit 2"),
        "{body}"
    );
    // Probes are never counted against the cap.
    let health = server
        .client()
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);

    drop(second);
    wait_for_in_flight(&server, 1).await;
    let accepted = review_on(&mut other).await;
    assert_eq!(accepted.status, 200);
    drop(first);
    server.finish().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_get_503_with_retry_after_then_room_is_made() {
    let server = start(|c| {
        c.connections.max_connections = 1;
        c.connections.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let mut holder = h1(&server).await;
    assert_eq!(review_on(&mut holder).await.status, 200);

    let mut extra = h1(&server).await;
    let refused = review_on(&mut extra).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.header("connection"), Some("close"));
    assert_eq!(refused.json()["reason"], "ServiceUnavailable");
    assert!(closed_by_server(&mut extra).await);
    let metrics = server.state.metrics().encode().expect("metrics");
    assert!(
        metrics.contains("tollgate_connections_refused_total{reason=\"limit\"} 1"),
        "{metrics}"
    );

    drop(holder);
    tokio::time::timeout(BOUND, async {
        while server.state.metrics().connections_open.get() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the held connection is released");
    let mut next = h1(&server).await;
    assert_eq!(review_on(&mut next).await.status, 200);
    server.finish().await;
}

#[tokio::test]
async fn an_http1_connection_is_closed_after_its_maximum_request_count() {
    let server = start(|c| c.connections.max_requests = 3).await;
    let mut stream = h1(&server).await;
    for _ in 0..2 {
        let response = review_on(&mut stream).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.header("connection"), None);
    }
    let last = review_on(&mut stream).await;
    assert_eq!(last.status, 200);
    assert_eq!(last.header("connection"), Some("close"));
    assert!(closed_by_server(&mut stream).await);
    let metrics = server.state.metrics().encode().expect("metrics");
    assert!(
        metrics.contains("tollgate_connections_retired_total 1"),
        "{metrics}"
    );
    server.finish().await;
}

#[tokio::test]
async fn an_h2_connection_gets_goaway_after_its_maximum_request_count_or_age() {
    let server = start(|c| {
        c.connections.max_requests = 3;
        c.connections.h2_request_limit_min_age = Duration::ZERO;
    })
    .await;
    let mut stream = connect(&server, &[b"h2"]).await;
    h2::start(&mut stream).await;
    let body = review_bytes();
    for id in [1, 3, 5] {
        h2::post(&mut stream, id, &body).await;
    }
    let goaway = h2::read_until_goaway(&mut stream).await;
    assert_eq!(goaway.error_code, 0, "a graceful GOAWAY (NO_ERROR)");
    assert_eq!(goaway.answered, vec![1, 3, 5], "every stream answered");
    server.finish().await;

    let server = start(|c| {
        c.connections.max_age = Duration::from_millis(500);
        c.connections.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let mut stream = connect(&server, &[b"h2"]).await;
    h2::start(&mut stream).await;
    h2::post(&mut stream, 1, &body).await;
    let goaway = h2::read_until_goaway(&mut stream).await;
    assert_eq!(goaway.error_code, 0);
    assert_eq!(goaway.answered, vec![1]);
    server.finish().await;
}

#[tokio::test]
async fn an_h2_connection_counted_out_is_retired_only_past_its_minimum_age() {
    let server = start(|c| {
        c.connections.max_requests = 3;
        c.connections.h2_request_limit_min_age = Duration::from_secs(60);
    })
    .await;
    let mut stream = connect(&server, &[b"h2"]).await;
    h2::start(&mut stream).await;
    let body = review_bytes();
    for id in [1, 3, 5, 7, 9] {
        h2::post(&mut stream, id, &body).await;
        assert!(
            !h2::read_answers(&mut stream, 1).await,
            "no GOAWAY by stream {id}"
        );
    }
    assert!(!h2::goaway_within(&mut stream, Duration::from_millis(300)).await);
    drop(stream);
    server.finish().await;

    // Limits are shortened by up to a quarter at random: the three answers come well within
    // 750 ms, and 1.2 s is past any 1 s limit.
    let server = start(|c| {
        c.connections.max_requests = 3;
        c.connections.h2_request_limit_min_age = Duration::from_secs(1);
    })
    .await;
    let mut stream = connect(&server, &[b"h2"]).await;
    h2::start(&mut stream).await;
    for id in [1, 3, 5] {
        h2::post(&mut stream, id, &body).await;
    }
    assert!(!h2::read_answers(&mut stream, 3).await);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    h2::post(&mut stream, 7, &body).await;
    let goaway = h2::read_until_goaway(&mut stream).await;
    assert_eq!(goaway.error_code, 0, "a graceful GOAWAY (NO_ERROR)");
    assert_eq!(goaway.answered, vec![7]);
    server.finish().await;
}

#[tokio::test]
async fn an_http1_connection_past_its_age_says_close_on_its_next_answer() {
    let server = start(|c| {
        c.connections.max_age = Duration::from_millis(200);
        c.connections.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let mut stream = h1(&server).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let response = review_on(&mut stream).await;
    assert_eq!(
        response.status, 200,
        "an idle aged connection is not cut mid-way"
    );
    assert_eq!(response.header("connection"), Some("close"));
    assert!(closed_by_server(&mut stream).await);
    server.finish().await;
}

#[tokio::test]
async fn h2_settings_advertise_the_stream_and_header_limits() {
    let server = start(|c| {
        c.connections.h2_max_concurrent_streams = 7;
        c.connections.h2_max_header_list_size = 4096;
    })
    .await;
    let mut stream = connect(&server, &[b"h2"]).await;
    h2::start(&mut stream).await;
    let settings = h2::read_server_settings(&mut stream).await;
    assert!(
        settings.contains(&(h2::MAX_CONCURRENT_STREAMS, 7)),
        "{settings:?}"
    );
    assert!(
        settings.contains(&(h2::MAX_HEADER_LIST_SIZE, 4096)),
        "{settings:?}"
    );
    server.finish().await;
}

#[tokio::test]
async fn rapid_stream_resets_end_the_connection_and_others_are_served() {
    let server = start(|_| {}).await;
    let mut stream = connect(&server, &[b"h2"]).await;
    h2::start(&mut stream).await;
    let burst = h2::reset_burst(500);
    // The server may close mid-burst; that is the point.
    let _ = stream.write_all(&burst).await;
    let _ = stream.flush().await;
    let goaway = h2::read_until_goaway(&mut stream).await;
    assert_eq!(goaway.error_code, 0xb, "GOAWAY ENHANCE_YOUR_CALM");
    a_valid_review_succeeds(&server).await;
    server.finish().await;
}

// ---- mutual TLS ----

async fn mtls_server(ca: &TestCa, anonymous: &[tollgate::http::Endpoint]) -> TestServer {
    mtls_server_in(&tempfile::tempdir().expect("tempdir").keep(), ca, anonymous).await
}

async fn mtls_server_in(
    dir: &std::path::Path,
    ca: &TestCa,
    anonymous: &[tollgate::http::Endpoint],
) -> TestServer {
    let ca_file = dir.join("client-ca.crt");
    std::fs::write(&ca_file, &ca.pem).expect("client CA written");
    let anonymous = anonymous.to_vec();
    start(move |c| {
        c.client_auth = ClientAuth::Verify {
            ca_file,
            allow_anonymous: !anonymous.is_empty(),
        };
        c.http.anonymous_endpoints = anonymous;
        c.reload_interval = Duration::from_millis(200);
    })
    .await
}

async fn mtls_connect(
    server: &TestServer,
    identity: Option<&ClientIdentity>,
) -> std::io::Result<Tls> {
    let mut stream = tls_connect(
        server.addr,
        &server.ca_pem,
        &[b"http/1.1"],
        rustls::DEFAULT_VERSIONS,
        identity,
    )
    .await?;
    // With TLS 1.3 the server's verdict on the client certificate arrives after the client
    // considers the handshake done: a first exchange surfaces it.
    send_review(&mut stream, "/healthz-probe", b"{}").await;
    let mut byte = [0u8; 1];
    match stream.read(&mut byte).await {
        Ok(0) => Err(std::io::Error::other("closed by the server")),
        Ok(_) => Ok(stream),
        Err(e) => Err(e),
    }
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_or_from_another_ca() {
    let ca = TestCa::new("apiserver-clients");
    let server = mtls_server(&ca, &[]).await;
    let trusted = ca.client("kube-apiserver");
    let stranger = TestCa::new("someone-else").client("kube-apiserver");

    assert!(
        mtls_connect(&server, None).await.is_err(),
        "no certificate accepted"
    );
    assert!(
        mtls_connect(&server, Some(&stranger)).await.is_err(),
        "foreign CA accepted"
    );
    let mut stream = tls_connect(
        server.addr,
        &server.ca_pem,
        &[b"http/1.1"],
        rustls::DEFAULT_VERSIONS,
        Some(&trusted),
    )
    .await
    .expect("trusted client");
    assert_eq!(review_on(&mut stream).await.status, 200);
    let metrics = server.state.metrics().encode().expect("metrics");
    assert!(
        metrics.contains("tollgate_connections_refused_total{reason=\"handshake_failed\"} 2"),
        "{metrics}"
    );
    server.finish().await;
}

#[tokio::test]
async fn anonymous_clients_reach_only_the_endpoints_opened_to_them() {
    use tollgate::http::Endpoint;
    let ca = TestCa::new("apiserver-clients");
    let server = mtls_server(&ca, &[Endpoint::Convert, Endpoint::Healthz]).await;
    let mut anonymous = tls_connect(
        server.addr,
        &server.ca_pem,
        &[b"http/1.1"],
        rustls::DEFAULT_VERSIONS,
        None,
    )
    .await
    .expect("anonymous handshake");
    let refused = review_on(&mut anonymous).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["reason"], "Forbidden");
    let conversion = serde_json::to_vec(&support::fixture("convert-up.json")).expect("fixture");
    send_review(&mut anonymous, "/convert", &conversion).await;
    let converted = read_response(&mut anonymous).await;
    assert_eq!(converted.status, 200);
    assert_eq!(converted.json()["response"]["result"]["status"], "Success");

    let stranger = TestCa::new("someone-else").client("x");
    assert!(
        mtls_connect(&server, Some(&stranger)).await.is_err(),
        "foreign CA accepted"
    );
    let mut trusted = tls_connect(
        server.addr,
        &server.ca_pem,
        &[b"http/1.1"],
        rustls::DEFAULT_VERSIONS,
        Some(&ca.client("kube-apiserver")),
    )
    .await
    .expect("trusted client");
    assert_eq!(review_on(&mut trusted).await.status, 200);
    server.finish().await;
}

#[tokio::test]
async fn a_replaced_client_ca_file_is_picked_up_while_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = TestCa::new("old-clients");
    let new = TestCa::new("new-clients");
    let server = mtls_server_in(dir.path(), &old, &[]).await;
    let (old_client, new_client) = (old.client("apiserver"), new.client("apiserver"));
    assert!(mtls_connect(&server, Some(&old_client)).await.is_ok());
    assert!(mtls_connect(&server, Some(&new_client)).await.is_err());

    // A broken file is refused and the CA in force kept.
    std::fs::write(dir.path().join("client-ca.crt"), "not a certificate").expect("write");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(mtls_connect(&server, Some(&old_client)).await.is_ok());

    std::fs::write(dir.path().join("client-ca.crt"), &new.pem).expect("write");
    tokio::time::timeout(BOUND, async {
        while mtls_connect(&server, Some(&new_client)).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the new client CA is in force");
    assert!(mtls_connect(&server, Some(&old_client)).await.is_err());
    server.finish().await;
}
