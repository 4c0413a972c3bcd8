//! In-process micro-benchmarks of each step a review goes through, on the shipped example
//! policy: decode, validate, default + diff (the mutate patch), convert. No TLS, no HTTP (that
//! is `benches/load`). Run with `cargo bench --bench admission`.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a broken benchmark setup should stop loudly

use std::path::Path;
use std::sync::LazyLock;

use divan::{Bencher, black_box};
use serde_json::{Value, json};
use tollgate::http::{
    AdmissionReviewIn, Mode, admission_review, conversion_answer, conversion_review,
};
use tollgate_engine::Store;

// The allocator of the `tollgate` binary, so figures match the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    divan::main();
}

static STORE: LazyLock<Store> = LazyLock::new(|| {
    tollgate_engine::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"))
        .expect("policies")
});

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("json")
}

/// Compact, as the apiserver sends it.
fn body(review: &Value) -> Vec<u8> {
    serde_json::to_vec(review).expect("json")
}

/// The review with its object (and old object) grown to about `bytes` by 1 KiB annotations.
fn grown(name: &str, bytes: usize) -> Vec<u8> {
    let mut review = fixture(name);
    let annotations: serde_json::Map<String, Value> = (0..bytes / 1050)
        .map(|i| {
            (
                format!("bench.tollgate.dev/pad-{i:05}"),
                json!("v".repeat(1000)),
            )
        })
        .collect();
    for key in ["object", "oldObject"] {
        if review["request"][key].is_object() {
            review["request"][key]["metadata"]["annotations"] = Value::Object(annotations.clone());
        }
    }
    body(&review)
}

const SIZES: [usize; 3] = [1024, 64 * 1024, 1024 * 1024];

#[divan::bench(args = SIZES)]
fn decode(bencher: Bencher, size: usize) {
    let review = grown("validate-allow.json", size);
    bencher
        .counter(divan::counter::BytesCount::of_slice(&review))
        .bench(|| AdmissionReviewIn::from_slice(black_box(&review)).expect("review"));
}

/// The 1 KiB review through `serde_json`, for scale beside `decode`: into `IgnoredAny` (every
/// byte checked, nothing built: the least any JSON parser does with it) and into a `Value`.
#[divan::bench(args = ["IgnoredAny", "Value"])]
fn decode_with_serde_json(bencher: Bencher, into: &str) {
    let review = grown("validate-allow.json", 1024);
    match into {
        "IgnoredAny" => bencher.bench(|| {
            serde_json::from_slice::<serde::de::IgnoredAny>(black_box(&review)).expect("json")
        }),
        _ => bencher.bench(|| serde_json::from_slice::<Value>(black_box(&review)).expect("json")),
    }
}

#[divan::bench(args = ["validate-allow.json", "validate-deny.json", "update-immutable.json", "update-cel.json"])]
fn validate(bencher: Bencher, fixture_name: &str) {
    let review = body(&fixture(fixture_name));
    bencher.bench(|| {
        admission_review(&STORE, black_box(&review), Mode::Validate, None).expect("review")
    });
}

#[divan::bench(args = SIZES)]
fn validate_sized(bencher: Bencher, size: usize) {
    let review = grown("update-allowed.json", size);
    bencher
        .counter(divan::counter::BytesCount::of_slice(&review))
        .bench(|| {
            admission_review(&STORE, black_box(&review), Mode::Validate, None).expect("review")
        });
}

#[divan::bench(args = SIZES)]
fn default_and_diff(bencher: Bencher, size: usize) {
    let review = grown("mutate-defaults.json", size);
    bencher
        .counter(divan::counter::BytesCount::of_slice(&review))
        .bench(|| {
            admission_review(&STORE, black_box(&review), Mode::Mutate, None).expect("review")
        });
}

/// Larger than the last-level cache of the machines this runs on: reading it through leaves
/// none of a review's code or data cached.
const EVICTION_BYTES: usize = 64 << 20;

static EVICTION: LazyLock<std::sync::Mutex<Vec<u64>>> =
    LazyLock::new(|| std::sync::Mutex::new(vec![1; EVICTION_BYTES / 8]));

/// Writes one word of every cache line of the first `bytes` of a buffer larger than the caches.
fn evict_caches(bytes: usize) {
    let mut buffer = EVICTION
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for word in buffer.iter_mut().take(bytes / 8).step_by(8) {
        *word = black_box(word.wrapping_add(1));
    }
}

/// A small review with little or nothing of it cached, as a server meets one: between two
/// reviews the connection's TLS, HTTP and the kernel's network stack (and, in the benchmark, the
/// load driver) run on the same cores. Hot in a loop, a review's code and the policy stay in the
/// caches, which hides what most of a review costs on the wire; this measures that (the eviction
/// itself is not timed). `MIB` is how much is written through the caches first: 4 MiB empties a
/// core's own caches (L1 and L2) and leaves the shared last level mostly warm — nearest to what
/// a review meets on the wire; 64 MiB empties them all. One review per sample.
#[divan::bench(consts = [4, 64], args = ["validate-allow.json", "mutate-defaults.json"], sample_count = 300, sample_size = 1)]
fn review_after_evicting_caches<const MIB: usize>(bencher: Bencher, fixture_name: &str) {
    let review = body(&fixture(fixture_name));
    let mode = if fixture_name.starts_with("mutate") {
        Mode::Mutate
    } else {
        Mode::Validate
    };
    bencher
        .with_inputs(|| {
            evict_caches(MIB << 20);
            review.as_slice()
        })
        .bench_values(|review| {
            admission_review(&STORE, black_box(review), mode, None).expect("review")
        });
}

fn conversion(objects: usize, desired: &str) -> Vec<u8> {
    let template = fixture("convert-down.json")["request"]["objects"][0].clone();
    let objects: Vec<Value> = (0..objects)
        .map(|i| {
            let mut o = template.clone();
            o["metadata"]["name"] = json!(format!("pg-{i}"));
            o
        })
        .collect();
    let down = body(&json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "ConversionReview",
        "request": {"uid": "bench", "desiredAPIVersion": desired, "objects": objects}
    }));
    if desired.ends_with("/v1") {
        // Objects in the spoke version, converted up to the hub.
        let out = conversion_review(
            &STORE,
            &conversion_of(&down, "payments.example.com/v1alpha1"),
        )
        .expect("review");
        let converted =
            serde_json::to_value(out).expect("json")["response"]["convertedObjects"].clone();
        return body(&json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "ConversionReview",
            "request": {"uid": "bench", "desiredAPIVersion": desired, "objects": converted}
        }));
    }
    down
}

fn conversion_of(review: &[u8], desired: &str) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(review).expect("json");
    value["request"]["desiredAPIVersion"] = json!(desired);
    body(&value)
}

#[divan::bench(args = [1, 100, 2000])]
fn convert_down(bencher: Bencher, objects: usize) {
    let review = conversion(objects, "payments.example.com/v1alpha1");
    bencher
        .counter(divan::counter::ItemsCount::new(objects))
        .bench(|| conversion_answer(&STORE, black_box(&review)).expect("review"));
}

#[divan::bench(args = [1, 100, 2000])]
fn convert_up(bencher: Bencher, objects: usize) {
    let review = conversion(objects, "payments.example.com/v1");
    bencher
        .counter(divan::counter::ItemsCount::new(objects))
        .bench(|| conversion_answer(&STORE, black_box(&review)).expect("review"));
}

/// A review's object read as a `serde_json::Value` or as a document (borrowed strings, flat
/// vectors), and dropped: what each costs before any policy looks at it.
#[divan::bench(args = ["value", "document"])]
fn decode_object(bencher: Bencher, into: &str) {
    let object =
        serde_json::to_string(&fixture("validate-allow.json")["request"]["object"]).expect("json");
    match into {
        "value" => {
            bencher.bench(|| serde_json::from_str::<Value>(black_box(&object)).expect("value"))
        }
        _ => bencher.bench(|| {
            serde_json::from_str::<tollgate_engine::document::Document<'_>>(black_box(&object))
                .expect("document")
                .root()
                .is_null()
        }),
    }
}
