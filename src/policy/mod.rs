//! Policy files: their format, loading with line-accurate errors, and the compiled store.

pub mod defaults;
pub mod format;
pub mod loader;
pub mod path;
pub mod schema;
pub mod selector;
pub mod store;
pub mod violation;
pub mod yaml;

pub use format::{Enforcement, OperationName};
pub use loader::{LoadError, PolicyError, load_dir};
pub use path::FieldPath;
pub use store::{CompiledPolicy, Store, Target};
pub use violation::Violation;
