//! The compiled, immutable policy set that requests are evaluated against.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use jsonschema::Validator;
use serde_json::Value;

use super::defaults::Defaulter;
use super::format::{Enforcement, MatchSpec, OperationName, Scope};
use super::path::FieldPath;
use super::selector::LabelSelector;
use super::violation::{self, Violation};
use crate::conversion::KindConversion;

/// Where a policy came from, for messages and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

#[derive(Debug)]
pub struct CompiledPolicy {
    pub name: String,
    pub origin: Origin,
    pub matcher: Matcher,
    pub enforcement: Enforcement,
    pub schema: Option<Validator>,
    pub defaulter: Defaulter,
    pub immutable: Vec<FieldPath>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub conversion: Option<KindConversion>,
}

#[derive(Debug)]
pub struct Matcher {
    pub group: String,
    pub kind: String,
    pub resource: String,
    pub versions: Vec<String>,
    pub scope: Scope,
    pub operations: Vec<OperationName>,
    pub namespaces: Vec<String>,
    pub selector: Option<LabelSelector>,
}

impl Matcher {
    pub fn from_spec(spec: MatchSpec, selector: Option<LabelSelector>) -> Self {
        Self {
            group: spec.group,
            kind: spec.kind,
            resource: spec.resource,
            versions: spec.versions,
            scope: spec.scope,
            operations: spec.operations,
            namespaces: spec.namespaces,
            selector,
        }
    }
}

/// What a policy needs to know about a request to decide whether it applies.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub group: &'a str,
    pub version: &'a str,
    pub kind: &'a str,
    pub operation: OperationName,
    pub namespace: Option<&'a str>,
    pub object: Option<&'a Value>,
    pub old_object: Option<&'a Value>,
}

impl CompiledPolicy {
    pub fn applies_to(&self, target: &Target<'_>) -> bool {
        let m = &self.matcher;
        m.versions.iter().any(|v| v == target.version)
            && m.operations.contains(&target.operation)
            && (m.namespaces.is_empty()
                || target
                    .namespace
                    .is_some_and(|ns| m.namespaces.iter().any(|n| n == ns)))
            && m.selector.as_ref().is_none_or(|selector| {
                // As in Kubernetes, an UPDATE matches if either the old or the new object does.
                [target.object, target.old_object]
                    .into_iter()
                    .flatten()
                    .any(|obj| selector.matches(&labels_of(obj)))
            })
    }

    /// Every schema violation of `object`, sorted by field path.
    pub fn schema_violations(&self, object: &Value) -> Vec<Violation> {
        let Some(validator) = &self.schema else {
            return Vec::new();
        };
        let mut found: Vec<Violation> = validator
            .iter_errors(object)
            .flat_map(|e| violation::from_schema_error(&e))
            .collect();
        found.sort();
        found.dedup();
        found
    }

    /// A field that was set may not change or disappear; setting a field that was absent is allowed.
    pub fn immutable_violations(&self, object: &Value, old_object: &Value) -> Vec<Violation> {
        self.immutable
            .iter()
            .filter_map(|path| {
                let old = path.get(old_object)?;
                (path.get(object) != Some(old)).then(|| Violation {
                    path: path.clone(),
                    message: "is immutable and cannot be changed once set".into(),
                })
            })
            .collect()
    }

    /// Applies schema defaults and the static labels/annotations, never overwriting a value.
    pub fn apply_defaults(&self, object: &mut Value) {
        let Some(map) = object.as_object_mut() else {
            return;
        };
        if !self.labels.is_empty() || !self.annotations.is_empty() {
            let metadata = map
                .entry("metadata")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(metadata) = metadata.as_object_mut() {
                insert_missing(metadata, "labels", &self.labels);
                insert_missing(metadata, "annotations", &self.annotations);
            }
        }
        self.defaulter.apply(object);
    }
}

fn insert_missing(
    metadata: &mut serde_json::Map<String, Value>,
    field: &str,
    entries: &BTreeMap<String, String>,
) {
    if entries.is_empty() {
        return;
    }
    let target = metadata
        .entry(field)
        .or_insert_with(|| Value::Object(Default::default()));
    if target.is_null() {
        *target = Value::Object(Default::default());
    }
    if let Some(target) = target.as_object_mut() {
        for (key, value) in entries {
            target
                .entry(key.clone())
                .or_insert_with(|| Value::String(value.clone()));
        }
    }
}

pub fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Immutable after construction; reloads build a new `Store` and swap it in whole.
#[derive(Debug, Default)]
pub struct Store {
    policies: Vec<Arc<CompiledPolicy>>,
    /// group -> kind -> indexes into `policies`; looked up by `&str` on every request.
    by_group_kind: HashMap<String, HashMap<String, Vec<usize>>>,
}

impl Store {
    pub fn new(mut policies: Vec<CompiledPolicy>) -> Self {
        // A stable order makes defaulting and messages deterministic across reloads.
        policies.sort_by(|a, b| a.name.cmp(&b.name));
        let mut by_group_kind: HashMap<String, HashMap<String, Vec<usize>>> = HashMap::new();
        for (idx, policy) in policies.iter().enumerate() {
            by_group_kind
                .entry(policy.matcher.group.clone())
                .or_default()
                .entry(policy.matcher.kind.clone())
                .or_default()
                .push(idx);
        }
        Self {
            policies: policies.into_iter().map(Arc::new).collect(),
            by_group_kind,
        }
    }

    /// The conversion rules for a kind (the loader allows one policy per kind to declare them).
    pub fn conversion_for(&self, group: &str, kind: &str) -> Option<&KindConversion> {
        self.for_kind(group, kind)
            .find_map(|p| p.conversion.as_ref())
    }

    pub fn policies(&self) -> &[Arc<CompiledPolicy>] {
        &self.policies
    }

    pub fn matching<'s>(
        &'s self,
        target: &'s Target<'_>,
    ) -> impl Iterator<Item = &'s CompiledPolicy> + 's {
        self.for_kind(target.group, target.kind)
            .filter(move |p| p.applies_to(target))
    }

    fn for_kind<'s>(
        &'s self,
        group: &str,
        kind: &str,
    ) -> impl Iterator<Item = &'s CompiledPolicy> + 's {
        self.by_group_kind
            .get(group)
            .and_then(|kinds| kinds.get(kind))
            .into_iter()
            .flatten()
            .filter_map(|idx| self.policies.get(*idx))
            .map(Arc::as_ref)
    }
}
