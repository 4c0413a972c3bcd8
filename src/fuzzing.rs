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
    admission_against(example_store(), data);
}

fn admission_against(store: &Store, data: &[u8]) {
    for mode in [Mode::Validate, Mode::Mutate] {
        if let Ok(out) = http::admission_review(store, data, mode, None) {
            let _ = serde_json::to_vec(&out);
        }
    }
}

/// Decode, convert and encode a ConversionReview.
pub fn conversion_review(data: &[u8]) {
    let _ = http::conversion_answer(example_store(), data);
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
