//! Admission and conversion speed on the shipped example policy, printed as figures.
//! Run with `cargo bench --bench admission`.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a broken benchmark setup should stop loudly

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate::http::{Mode, admission_review as review_body};
use tollgate_engine::Store;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .expect("fixture")
}

/// Warms up, then runs for a fixed wall-clock budget and reports the mean and the slowest run.
fn time(label: &str, bytes: usize, mut run: impl FnMut()) {
    for _ in 0..5 {
        run();
    }
    let budget = Duration::from_secs(2);
    let started = Instant::now();
    let mut runs = 0u64;
    let mut slowest = Duration::ZERO;
    while started.elapsed() < budget {
        let one = Instant::now();
        run();
        slowest = slowest.max(one.elapsed());
        runs += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{label:<42} {:>10.1} µs/op {:>9.0} ops/s  max {:>9.1} µs  ({bytes} bytes)",
        elapsed / runs.max(1) as f64 * 1e6,
        runs as f64 / elapsed,
        slowest.as_secs_f64() * 1e6,
    );
}

fn admission(label: &str, body: &[u8], mode: Mode, store: &Store) {
    time(label, body.len(), || {
        black_box(review_body(store, body, mode).expect("review"));
    });
}

fn conversion_review(objects: Vec<Value>, desired: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "ConversionReview",
        "request": {"uid": "bench", "desiredAPIVersion": desired, "objects": objects}
    }))
    .expect("json")
}

fn converted(store: &Store, body: &[u8]) -> Vec<Value> {
    let out = tollgate::http::conversion_review(store, body).expect("review");
    let value = serde_json::to_value(out).expect("json");
    value["response"]["convertedObjects"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn main() {
    let store = tollgate_engine::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"))
        .expect("policies");
    println!("tollgate benchmark (one thread; parse + evaluate + encode)");
    admission(
        "validate: allowed",
        &fixture("validate-allow.json"),
        Mode::Validate,
        &store,
    );
    admission(
        "validate: denied (10 violations)",
        &fixture("validate-deny.json"),
        Mode::Validate,
        &store,
    );
    admission(
        "validate: immutable update",
        &fixture("update-immutable.json"),
        Mode::Validate,
        &store,
    );
    admission(
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
    admission(
        "validate: UPDATE with 2 x 3 MiB objects",
        &big,
        Mode::Validate,
        &store,
    );
    admission(
        "mutate: UPDATE with 2 x 3 MiB objects",
        &big,
        Mode::Mutate,
        &store,
    );

    let review: Value = serde_json::from_slice(&fixture("convert-down.json")).expect("json");
    let v1 = review["request"]["objects"][0].clone();
    let v1_objects: Vec<Value> = (0..2000)
        .map(|i| {
            let mut o = v1.clone();
            o["metadata"]["name"] = json!(format!("pg-{i}"));
            o
        })
        .collect();
    let down = conversion_review(v1_objects, "payments.example.com/v1alpha1");
    time("convert: 2000 objects v1 -> v1alpha1", down.len(), || {
        black_box(tollgate::http::conversion_review(&store, &down).expect("review"));
    });
    let up = conversion_review(converted(&store, &down), "payments.example.com/v1");
    time("convert: 2000 objects v1alpha1 -> v1", up.len(), || {
        black_box(tollgate::http::conversion_review(&store, &up).expect("review"));
    });
}
