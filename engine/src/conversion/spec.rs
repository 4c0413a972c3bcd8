//! `spec.conversion` as written in a policy file.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// The hub is the storage version and its schema is `spec.schema`; every other served version
/// is a spoke that converts to and from the hub.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConversionSpec {
    pub hub: String,
    pub spokes: BTreeMap<String, SpokeSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpokeSpec {
    /// JSON Schema of the object in this version (used to decide what has a place in it).
    pub schema: Value,
    /// Fields whose path differs between this version and the hub.
    #[serde(default)]
    pub fields: Vec<FieldMove>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FieldMove {
    /// Path in this spoke version.
    pub spoke: String,
    /// Path of the same data in the hub version.
    pub hub: String,
}
