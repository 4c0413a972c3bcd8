//! The policy file format: Kubernetes-style documents, so the same files could later be
//! served from the cluster as a custom resource.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::cel::{MatchConditionSpec, ValidationSpec};
use crate::conversion::ConversionSpec;
use crate::rollout::RolloutSpec;
use crate::selector::LabelSelectorSpec;

pub const POLICY_API_VERSION: &str = "tollgate.dev/v1alpha1";
pub const POLICY_KIND: &str = "Policy";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyDocument {
    pub api_version: String,
    pub kind: String,
    pub metadata: PolicyMetadata,
    pub spec: PolicySpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyMetadata {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    #[serde(rename = "match")]
    pub match_: MatchSpec,
    #[serde(default)]
    pub enforcement: Enforcement,
    /// How much a violation matters, for reports (`tollgate audit --write-reports`).
    #[serde(default)]
    pub severity: Option<Severity>,
    /// JSON Schema (draft 2020-12) for the whole object; `default` keywords drive defaulting.
    #[serde(default)]
    pub schema: Option<Value>,
    /// Takes `schema` from a CRD manifest instead, so the CRD stays the one source.
    #[serde(default)]
    pub schema_from: Option<SchemaFrom>,
    /// Field paths that may not change once set (checked on UPDATE).
    #[serde(default)]
    pub immutable: Vec<String>,
    #[serde(default)]
    pub defaults: StaticDefaults,
    /// How objects move between the versions of this kind (CRD conversion webhook).
    #[serde(default)]
    pub conversion: Option<ConversionSpec>,
    /// Status, revision history and rollback by the reconciler.
    #[serde(default)]
    pub rollout: Option<RolloutSpec>,
    /// CEL expressions over `object`, `oldObject` and `request`, as in ValidatingAdmissionPolicy.
    #[serde(default)]
    pub validations: Vec<ValidationSpec>,
    /// CEL expressions that must all be true for the policy to apply.
    #[serde(default)]
    pub match_conditions: Vec<MatchConditionSpec>,
}

/// `spec.schemaFrom`: the `openAPIV3Schema` of one version of a CRD manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SchemaFrom {
    /// The CRD's file, relative to the policy file.
    pub crd: std::path::PathBuf,
    /// The CRD version whose schema to take.
    pub version: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MatchSpec {
    pub group: String,
    pub kind: String,
    /// Plural resource name, used when registering the webhooks.
    pub resource: String,
    pub versions: Vec<String>,
    #[serde(default)]
    pub scope: Scope,
    #[serde(default = "default_operations")]
    pub operations: Vec<OperationName>,
    /// Only objects in these namespaces; empty means every namespace.
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub object_selector: Option<LabelSelectorSpec>,
}

fn default_operations() -> Vec<OperationName> {
    vec![OperationName::Create, OperationName::Update]
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum Scope {
    #[default]
    Namespaced,
    Cluster,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OperationName {
    Create,
    Update,
}

impl OperationName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// Violations deny the request.
    #[default]
    Enforce,
    /// Violations are returned as admission warnings; the request is allowed.
    Warn,
}

/// OpenReports' result severities.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::High => "high",
            Self::Medium => "medium",
            Self::Low => "low",
            Self::Info => "info",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticDefaults {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}
