//! One thing wrong with an object, at a field path: what every check (schema keywords, the CRD
//! dialect's list and embedded-resource checks, CEL rules, immutable fields) reports. At the
//! bottom with `path`, so that any of them may report one.

use std::fmt;

use crate::path::FieldPath;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    pub path: FieldPath,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}
