//! Policy files: their format, loading with line-accurate errors, and the compiled store.

pub mod format;
mod loader;
mod store;
pub mod yaml;

pub use format::{Enforcement, OperationName, Scope, Severity};
pub use loader::{
    DirFingerprint, LoadError, PolicyError, dir_fingerprint, load_dir, load_str, load_text,
    policy_files,
};
pub use store::{CompiledPolicy, Judgement, Matcher, Origin, Store, Target};
