//! Test support shared by every integration test: repository paths and fixtures, a real tollgate
//! server over TLS (`server`), and a real etcd + kube-apiserver on loopback (`cluster`).
#![allow(dead_code)]

pub mod cluster;
pub mod server;

use std::path::{Path, PathBuf};

use serde_json::Value;

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A JSON fixture from `tests/fixtures`; a missing or malformed file fails the test by name.
pub fn fixture(name: &str) -> Value {
    let path = repo_path("tests/fixtures").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}
