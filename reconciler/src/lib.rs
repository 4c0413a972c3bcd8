//! tollgate-reconciler: owns the status of tollgate-managed custom resources, records each spec
//! as a revision, and rolls a resource back to its last healthy spec when a change fails.
//!
//! `decide` is the whole rule set as a pure function; `controller` runs it per object with
//! kube-runtime and carries out its actions; `leader` makes sure only one replica writes.

#![forbid(unsafe_code)]

pub mod controller;
pub mod decide;
pub mod error;
pub mod health;
pub mod kinds;
pub mod leader;
pub mod metrics;
pub mod patch;
pub mod revisions;
pub mod runner;
pub mod status;
pub mod supervisor;

pub use error::RunError;
pub use runner::{ReconcilerConfig, release_finalizers, run};
