//! tollgate-reconciler: owns the status of tollgate-managed custom resources.
//!
//! This first piece is the condition bookkeeping every status writer needs: conditions are
//! keyed by type, and `lastTransitionTime` moves only when the status really changes, so
//! watchers are not woken by rewrites that change nothing.

#![forbid(unsafe_code)]

pub mod conditions;
