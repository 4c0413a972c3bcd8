//! Admission throughput and latency on the shipped example policy, printed as figures.
//! Run with `cargo bench --bench admission`.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a broken benchmark setup should stop loudly

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate::admission::{Mode, review_body};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .expect("fixture")
}

fn measure(label: &str, body: &[u8], mode: Mode, store: &tollgate::policy::Store) {
    // Warm up, then run for a fixed wall-clock budget and report the mean and the slowest.
    for _ in 0..50 {
        black_box(review_body(store, body, mode).expect("review"));
    }
    let budget = Duration::from_secs(2);
    let started = Instant::now();
    let mut runs = 0u64;
    let mut slowest = Duration::ZERO;
    while started.elapsed() < budget {
        let one = Instant::now();
        black_box(review_body(store, body, mode).expect("review"));
        slowest = slowest.max(one.elapsed());
        runs += 1;
    }
    let mean = started.elapsed() / runs.max(1) as u32;
    println!(
        "{label:<40} {:>10.1} µs/op  {:>10.0} ops/s  max {:>8.1} µs  ({} bytes)",
        mean.as_secs_f64() * 1e6,
        runs as f64 / started.elapsed().as_secs_f64(),
        slowest.as_secs_f64() * 1e6,
        body.len()
    );
}

fn main() {
    let store = tollgate::policy::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"))
        .expect("policies");
    println!("tollgate admission benchmark (single thread, parse + evaluate + encode)");
    measure(
        "validate: allowed",
        &fixture("validate-allow.json"),
        Mode::Validate,
        &store,
    );
    measure(
        "validate: denied (10 violations)",
        &fixture("validate-deny.json"),
        Mode::Validate,
        &store,
    );
    measure(
        "validate: immutable update",
        &fixture("update-immutable.json"),
        Mode::Validate,
        &store,
    );
    measure(
        "mutate: defaults patch",
        &fixture("mutate-defaults.json"),
        Mode::Mutate,
        &store,
    );

    let mut big: Value = serde_json::from_slice(&fixture("update-allowed.json")).expect("json");
    let blob = "x".repeat(3 * 1024 * 1024);
    big["request"]["object"]["metadata"]["annotations"] = json!({"example.com/blob": blob});
    big["request"]["oldObject"]["metadata"]["annotations"] = json!({"example.com/blob": blob});
    let big = serde_json::to_vec(&big).expect("json");
    measure(
        "validate: UPDATE with 2 x 3 MiB objects",
        &big,
        Mode::Validate,
        &store,
    );
    measure(
        "mutate: UPDATE with 2 x 3 MiB objects",
        &big,
        Mode::Mutate,
        &store,
    );
}
