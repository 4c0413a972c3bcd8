//! Policies and certificates changed on disk are picked up by a running server; a broken change
//! is reported and the working set stays active.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed step should fail the test loudly

mod support;

use std::time::Duration;

use support::{fixture, repo_path, server::TestServer};

async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn policy_changes_apply_and_broken_changes_keep_the_previous_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy_file = dir.path().join("paymentgateway.yaml");
    let original =
        std::fs::read_to_string(repo_path("policies/paymentgateway.yaml")).expect("policy");
    std::fs::write(&policy_file, &original).expect("write");
    let server = TestServer::start_with(dir.path().to_path_buf(), |c| {
        c.reload_interval = Duration::from_millis(100)
    })
    .await;
    let (_, denied) = server
        .post_json("/validate", &fixture("validate-deny.json"))
        .await;
    assert_eq!(denied["response"]["allowed"], false);

    std::fs::write(
        &policy_file,
        original.replace("enforcement: enforce", "enforcement: warn"),
    )
    .expect("write");
    let switched = eventually(|| async {
        let (_, body) = server
            .post_json("/validate", &fixture("validate-deny.json"))
            .await;
        body["response"]["allowed"] == true && body["response"]["warnings"].is_array()
    })
    .await;
    assert!(switched, "the changed policy was not picked up");

    std::fs::write(
        dir.path().join("broken.yaml"),
        "apiVersion: tollgate.dev/v1alpha1\nkind: Policy\n",
    )
    .expect("write");
    let counted =
        eventually(|| async { server.state.metrics().policy_load_errors.get() > 0 }).await;
    assert!(counted, "a failed reload must be counted");
    let (_, still_warn) = server
        .post_json("/validate", &fixture("validate-deny.json"))
        .await;
    assert_eq!(
        still_warn["response"]["allowed"], true,
        "the previous policies must stay active"
    );
    server.finish().await;
}

#[tokio::test]
async fn renewed_certificates_are_served_without_a_restart() {
    let server = TestServer::start_with(repo_path("policies"), |c| {
        c.reload_interval = Duration::from_millis(100)
    })
    .await;
    let fresh = tempfile::tempdir().expect("tempdir");
    tollgate::certs::CertDir::new(fresh.path())
        .generate(&[])
        .expect("new certs");
    for file in ["tls.key", "tls.crt", "ca.crt", "ca.key"] {
        std::fs::copy(fresh.path().join(file), server.cert_dir.path().join(file)).expect("copy");
    }
    let new_ca = std::fs::read(fresh.path().join("ca.crt")).expect("ca");
    let client = support::server::https_client(&new_ca, server.addr)
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let url = server.url("/healthz");
    let served = eventually(|| async { client.get(&url).send().await.is_ok() }).await;
    assert!(served, "the renewed certificate was never served");
    server.finish().await;
}
