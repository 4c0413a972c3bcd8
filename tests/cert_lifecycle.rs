//! Certificate lifetimes, renewal while serving, and the file side of CA rotation
//! (`tollgate certs --rotate`, `--rotate-ca`), driven through the real binary and a real server.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed step should fail the test loudly

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use support::server::{TestServer, tls_connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn tollgate(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .arg("--cert-dir")
        .arg(dir)
        .output()
        .expect("runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// (subject, issuer, lifetime in seconds) of each certificate in a PEM file.
fn certificates(path: &Path) -> Vec<(String, String, i64)> {
    let pem = std::fs::read_to_string(path).expect("pem");
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|der| {
            let der = der.expect("pem block");
            let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
            let v = cert.validity();
            (
                cert.subject().to_string(),
                cert.issuer().to_string(),
                v.not_after.timestamp() - v.not_before.timestamp(),
            )
        })
        .collect()
}

#[test]
fn certs_takes_lifetimes_and_rotates_the_serving_certificate_and_the_ca_step_by_step() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ok, text) = tollgate(
        &["certs", "--cert-lifetime", "30s", "--ca-lifetime", "2h"],
        dir,
    );
    assert!(ok, "{text}");
    let serving = certificates(&dir.join("tls.crt"));
    let ca = certificates(&dir.join("ca.crt"));
    // The window includes a backdating of a tenth of the lifetime (at most an hour).
    assert_eq!(serving[0].2, 33);
    assert_eq!(ca[0].2, 7200 + 720);
    assert_eq!(serving[0].1, ca[0].0, "signed by the CA");

    let before = std::fs::read(dir.join("tls.crt")).unwrap();
    let (ok, text) = tollgate(&["certs", "--rotate"], dir);
    assert!(ok, "{text}");
    assert!(text.contains("new tls.crt"), "{text}");
    assert_ne!(std::fs::read(dir.join("tls.crt")).unwrap(), before);
    assert_eq!(certificates(&dir.join("ca.crt")), ca, "the CA is kept");

    let (ok, text) = tollgate(&["certs", "--rotate-ca"], dir);
    assert!(ok && text.contains("staged"), "{text}");
    let staged = certificates(&dir.join("ca.crt"));
    assert_eq!(staged.len(), 2);
    assert_eq!(
        certificates(&dir.join("tls.crt"))[0].1,
        ca[0].0,
        "the old CA still signs"
    );
    let (ok, text) = tollgate(&["certs", "--rotate-ca"], dir);
    assert!(ok && text.contains("switched"), "{text}");
    assert_eq!(
        certificates(&dir.join("tls.crt"))[0].1,
        staged[1].0,
        "the new CA signs"
    );
    assert_eq!(
        certificates(&dir.join("ca.crt")).len(),
        2,
        "both still trusted"
    );
    let (ok, text) = tollgate(&["certs", "--rotate-ca"], dir);
    assert!(ok && text.contains("completed"), "{text}");
    assert_eq!(
        certificates(&dir.join("ca.crt"))
            .into_iter()
            .map(|c| c.0)
            .collect::<Vec<_>>(),
        vec![staged[1].0.clone()]
    );
}

#[test]
fn bad_lifetimes_and_rotation_without_a_ca_key_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, text) = tollgate(&["certs", "--cert-lifetime", "0s"], tmp.path());
    assert!(!ok && text.contains("not a duration"), "{text}");
    let (ok, text) = tollgate(&["certs", "--rotate"], tmp.path());
    assert!(!ok && text.contains("ca.key"), "{text}");
    let (ok, _) = tollgate(&["certs"], tmp.path());
    assert!(ok);
    std::fs::remove_file(tmp.path().join("ca.key")).unwrap();
    let (ok, text) = tollgate(&["certs", "--rotate-ca"], tmp.path());
    assert!(!ok && text.contains("ca.key"), "{text}");
}

/// The serving certificate the server presents right now, and whether a review on that same
/// connection was answered 200.
async fn handshake_and_review(server: &TestServer, body: &[u8]) -> (Vec<u8>, bool) {
    let mut tls = tls_connect(
        server.addr,
        &server.ca_pem,
        &[b"http/1.1"],
        rustls::DEFAULT_VERSIONS,
        None,
    )
    .await
    .expect("handshake");
    let presented = tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec();
    let head = format!(
        "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.expect("head");
    tls.write_all(body).await.expect("body");
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    (presented, answer.starts_with(b"HTTP/1.1 200"))
}

#[tokio::test]
async fn the_serving_certificate_is_renewed_while_serving_without_a_failed_request() {
    let server = TestServer::start_with(support::repo_path("policies"), |c| {
        c.lifetimes.serving = Duration::from_secs(3);
        c.reload_interval = Duration::from_millis(100);
    })
    .await;
    let body = serde_json::to_vec(&support::fixture("validate-allow.json")).unwrap();
    let mut seen = BTreeSet::new();
    let (mut answered, mut failed) = (0, 0);
    tokio::time::timeout(Duration::from_secs(60), async {
        while seen.len() < 3 {
            let (certificate, ok) = handshake_and_review(&server, &body).await;
            seen.insert(certificate);
            if ok {
                answered += 1;
            } else {
                failed += 1;
            }
        }
    })
    .await
    .expect("two renewals within the bound");
    println!(
        "{} serving certificates, {answered} reviews answered, {failed} failed",
        seen.len()
    );
    assert_eq!(failed, 0);
    let metrics = server.state.metrics().encode().unwrap();
    let serving_expiry = certificates(&server.cert_dir.path().join("tls.crt"));
    assert!(!serving_expiry.is_empty());
    assert!(
        metrics.contains("tollgate_certificate_expiry_timestamp_seconds{certificate=\"serving\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollgate_certificate_expiry_timestamp_seconds{certificate=\"ca\"}"),
        "{metrics}"
    );
    server.finish().await;
}
