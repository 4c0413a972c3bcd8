//! The paths the fuzz targets (`fuzz/`) drive, shared with the replay of every input they ever
//! crashed on (`tests/fuzz_regressions.rs`). Each takes arbitrary bytes; any outcome but a panic
//! (or a hang) is a pass — bad input must come back as an error.

use std::path::Path;
use std::sync::OnceLock;

use tollgate_engine::Store;

use crate::http::{self, Mode};

/// The shipped example policies, loaded once.
#[allow(clippy::expect_used)] // a harness without its policies cannot run at all
pub fn example_store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        tollgate_engine::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"))
            .expect("the example policies load")
    })
}

/// Decode, evaluate (validate and mutate) and encode an AdmissionReview.
pub fn admission_review(data: &[u8]) {
    reader_agrees_with_serde(data);
    admission_against(example_store(), data);
}

/// The direct review reader must read every body as `serde` does, or leave it to `serde`.
fn reader_agrees_with_serde(data: &[u8]) {
    if let Some(disagreement) = http::reader_disagreement(data) {
        panic!("the review reader disagrees with serde: {disagreement}");
    }
}

fn admission_against(store: &Store, data: &[u8]) {
    for mode in [Mode::Validate, Mode::Mutate] {
        if let Ok(out) = http::admission_review(store, data, mode) {
            let _ = serde_json::to_vec(&out);
        }
    }
}

/// Decode, convert and encode a ConversionReview: the answer the server writes object by object
/// is the one serde_json writes after every object was read and converted first.
pub fn conversion_review(data: &[u8]) {
    reader_agrees_with_serde(data);
    let whole = http::conversion_review(example_store(), data)
        .ok()
        .and_then(|review| serde_json::to_vec(&review).ok());
    let streamed = http::conversion_answer(example_store(), data).ok();
    if whole != streamed {
        panic!(
            "the streamed conversion answer differs: {:?} but {:?}",
            streamed.map(|s| String::from_utf8_lossy(&s).into_owned()),
            whole.map(|w| String::from_utf8_lossy(&w).into_owned())
        );
    }
}

/// Reviews a freshly compiled policy is exercised with.
const REVIEWS: [&str; 3] = [
    include_str!("../tests/fixtures/validate-allow.json"),
    include_str!("../tests/fixtures/update-cel.json"),
    include_str!("../tests/fixtures/mutate-defaults.json"),
];

/// Parse and compile a policy file; when it compiles, judge a few reviews with it.
pub fn policy_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let store = match tollgate_engine::policy::load_str(Path::new("fuzz.yaml"), text) {
        Ok(store) => store,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    for review in REVIEWS {
        admission_against(&store, review.as_bytes());
    }
}
