//! Replays every input the fuzz targets (`fuzz/`) ever crashed on, kept in
//! `tests/fuzz-regressions/TARGET/`, plus their seeds: each must be answered without a panic.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed step should fail the test loudly

use std::path::Path;

mod support;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let mut replayed = 0;
    for dir in [
        support::repo_path("tests/fuzz-regressions").join(target),
        support::repo_path("fuzz/seeds").join(target),
    ] {
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && !is_placeholder(p))
            .collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            eprintln!("replaying {}", file.display());
            run(&data);
            replayed += 1;
        }
    }
    replayed
}

fn is_placeholder(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == ".gitkeep")
}

#[test]
fn admission_review_inputs() {
    assert!(replay("admission_review", tollgate::fuzzing::admission_review) > 0);
}

#[test]
fn conversion_review_inputs() {
    assert!(replay("conversion_review", tollgate::fuzzing::conversion_review) > 0);
}

#[test]
fn policy_file_inputs() {
    assert!(replay("policy_file", tollgate::fuzzing::policy_file) > 0);
}
