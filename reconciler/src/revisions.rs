//! Revision history: each distinct spec of an object is an `apps/v1` ControllerRevision owned by
//! it. What the decision needs to know about an attempt (when it started, how it ended, whether
//! it was a rollback) is kept in the revision's own annotations, so a restart or a leader change
//! neither resets a deadline nor forgets a failure.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const HASH_LABEL: &str = "controller-revision-hash";
pub const OWNER_UID_LABEL: &str = "tollgate.dev/owner-uid";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
const STARTED_AT: &str = "tollgate.dev/started-at";
const OUTCOME: &str = "tollgate.dev/outcome";
const FAILURE: &str = "tollgate.dev/failure";
const FAILURE_REASON: &str = "tollgate.dev/failure-reason";
const RESTORE: &str = "tollgate.dev/restore";
const ROLLBACK_DENIED: &str = "tollgate.dev/rollback-denied";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Healthy,
    Failed,
}

/// A rollback that put this revision's spec back: from which revision, to which (its number
/// before it was renumbered), and whether a person asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restore {
    pub from: i64,
    pub to: i64,
    pub manual: bool,
}

/// One revision as the decision sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RevisionRecord {
    pub name: String,
    pub number: i64,
    pub hash: String,
    pub spec: Value,
    /// Start of the current attempt at this spec; the progress deadline counts from here.
    pub started_at: Timestamp,
    pub outcome: Outcome,
    pub failure: Option<String>,
    /// CamelCase reason of the failure (`ProgressDeadlineExceeded`, `HealthCheckFailed`).
    pub failure_reason: Option<String>,
    pub restore: Option<Restore>,
    /// The apiserver refused to restore an older spec over this one; its reason.
    pub rollback_denied: Option<String>,
}

/// Hash of a spec, independent of key order: equal specs share one revision.
pub fn spec_hash(spec: &Value) -> String {
    let mut hasher = Sha256::new();
    hash_into(spec, &mut hasher);
    hasher
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn hash_into(value: &Value, hasher: &mut Sha256) {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            hasher.update(b"{");
            for (k, v) in sorted {
                hasher.update(serde_json::to_string(k).unwrap_or_default().as_bytes());
                hasher.update(b":");
                hash_into(v, hasher);
                hasher.update(b",");
            }
            hasher.update(b"}");
        }
        Value::Array(items) => {
            hasher.update(b"[");
            for item in items {
                hash_into(item, hasher);
                hasher.update(b",");
            }
            hasher.update(b"]");
        }
        other => hasher.update(other.to_string().as_bytes()),
    }
}

/// `NAME-HASH`, shortened so the whole stays a valid object name (at most 253 characters).
pub fn revision_name(object_name: &str, hash: &str) -> String {
    let room = 253 - hash.len() - 1;
    let base: String = object_name.chars().take(room).collect();
    format!("{}-{hash}", base.trim_end_matches(['-', '.']))
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

impl RevisionRecord {
    /// Reads tollgate's bookkeeping back from a ControllerRevision; `None` for one that is not
    /// tollgate's (no hash label).
    pub fn from_controller_revision(revision: &ControllerRevision) -> Option<Self> {
        let meta = &revision.metadata;
        let hash = meta.labels.as_ref()?.get(HASH_LABEL)?.clone();
        let started_at = annotation(meta, STARTED_AT)
            .and_then(|t| t.parse().ok())
            .or_else(|| meta.creation_timestamp.as_ref().map(|t| t.0))
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let outcome = match annotation(meta, OUTCOME) {
            Some("healthy") => Outcome::Healthy,
            Some("failed") => Outcome::Failed,
            _ => Outcome::Pending,
        };
        Some(Self {
            name: meta.name.clone().unwrap_or_default(),
            number: revision.revision.unwrap_or(0),
            hash,
            spec: revision.data.0.clone(),
            started_at,
            outcome,
            failure: annotation(meta, FAILURE).map(str::to_string),
            failure_reason: annotation(meta, FAILURE_REASON).map(str::to_string),
            restore: annotation(meta, RESTORE).and_then(|t| serde_json::from_str(t).ok()),
            rollback_denied: annotation(meta, ROLLBACK_DENIED).map(str::to_string),
        })
    }

    /// The annotations that carry this record's bookkeeping (absent ones as `null`, so a merge
    /// patch removes them).
    pub fn bookkeeping(&self) -> serde_json::Map<String, Value> {
        let mut out = serde_json::Map::new();
        out.insert(
            STARTED_AT.into(),
            Value::String(self.started_at.to_string()),
        );
        let outcome = match self.outcome {
            Outcome::Pending => Value::Null,
            Outcome::Healthy => Value::String("healthy".into()),
            Outcome::Failed => Value::String("failed".into()),
        };
        out.insert(OUTCOME.into(), outcome);
        let text = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
        out.insert(FAILURE.into(), text(&self.failure));
        out.insert(FAILURE_REASON.into(), text(&self.failure_reason));
        out.insert(
            RESTORE.into(),
            self.restore
                .and_then(|r| serde_json::to_string(&r).ok())
                .map_or(Value::Null, Value::String),
        );
        out.insert(ROLLBACK_DENIED.into(), text(&self.rollback_denied));
        out
    }

    /// A new ControllerRevision for this record, owned (controller=true) by `owner`.
    pub fn to_controller_revision(
        &self,
        namespace: &str,
        owner: OwnerReference,
    ) -> ControllerRevision {
        let annotations = self
            .bookkeeping()
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_str()?.to_string())))
            .collect();
        let labels = BTreeMap::from([
            (HASH_LABEL.to_string(), self.hash.clone()),
            (OWNER_UID_LABEL.to_string(), owner.uid.clone()),
            (MANAGED_BY_LABEL.to_string(), "tollgate".to_string()),
        ]);
        ControllerRevision {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(namespace.to_string()),
                labels: Some(labels),
                annotations: Some(annotations),
                owner_references: Some(vec![owner]),
                ..ObjectMeta::default()
            },
            data: RawExtension(self.spec.clone()),
            revision: Some(self.number),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_specs_hash_equally_whatever_the_key_order() {
        let a: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": "s"}}"#).unwrap_or_default();
        let b: Value =
            serde_json::from_str(r#"{"a": {"x": "s", "y": [1, 2]}, "b": 1}"#).unwrap_or_default();
        assert_eq!(spec_hash(&a), spec_hash(&b));
        assert_ne!(spec_hash(&a), spec_hash(&json!({"b": 2})));
        assert_eq!(spec_hash(&a).len(), 16);
    }

    #[test]
    fn names_stay_valid_for_long_objects() {
        let long = "a".repeat(300);
        let name = revision_name(&long, "0123456789abcdef");
        assert_eq!(name.len(), 253);
        assert!(name.ends_with("-0123456789abcdef"));
        assert_eq!(revision_name("gw", "ff"), "gw-ff");
    }

    #[test]
    fn bookkeeping_round_trips_through_a_controller_revision() {
        let record = RevisionRecord {
            name: "gw-abc".into(),
            number: 4,
            hash: "abc".into(),
            spec: json!({"replicas": 2}),
            started_at: Timestamp::from_second(1_800_000_000).unwrap_or(Timestamp::UNIX_EPOCH),
            outcome: Outcome::Failed,
            failure: Some("deadline".into()),
            failure_reason: Some("ProgressDeadlineExceeded".into()),
            restore: Some(Restore {
                from: 3,
                to: 1,
                manual: false,
            }),
            rollback_denied: None,
        };
        let owner = OwnerReference {
            api_version: "payments.example.com/v1".into(),
            kind: "PaymentGateway".into(),
            name: "gw".into(),
            uid: "uid-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let revision = record.to_controller_revision("ns", owner);
        assert_eq!(
            RevisionRecord::from_controller_revision(&revision),
            Some(record)
        );
        let labels = revision.metadata.labels.unwrap_or_default();
        assert_eq!(labels.get(HASH_LABEL).map(String::as_str), Some("abc"));
        assert_eq!(
            labels.get(OWNER_UID_LABEL).map(String::as_str),
            Some("uid-1")
        );
    }
}
