//! tollgate-engine: the policy core of tollgate, with no web, TLS, CLI or Kubernetes client.
//!
//! `policy::load_dir` reads a directory of policy files into a compiled, immutable `Store`;
//! `evaluate` answers validation, defaulting and conversion questions against it.
//!
//! Modules depend only downwards: `path`, `violation`, `duration`, `document` and `instance` at
//! the bottom; `schema` (the CRD dialect, formats, list checks, nulls) on those; `validate`,
//! `ratchet`, `immutable`, `defaults`, `selector`, `conversion`, `rollout` and `cel` on those;
//! `policy` (format, loader, store) on all of them; `evaluate` and `in_tree` (policies compiled
//! to admission policies the apiserver runs) on `policy`; `suite` (PolicyTest
//! files) on `evaluate`.

#![forbid(unsafe_code)]

pub mod cel;
pub mod conversion;
mod defaults;
pub mod document;
pub mod duration;
pub mod evaluate;
mod immutable;
pub mod in_tree;
pub mod instance;
pub mod path;
pub mod policy;
mod ratchet;
pub mod rollout;
mod schema;
pub mod selector;
pub mod suite;
pub mod validate;
mod violation;

pub use evaluate::Verdict;
pub use path::FieldPath;
pub use policy::{CompiledPolicy, LoadError, PolicyError, Store, Target, load_dir};
pub use validate::Violation;
