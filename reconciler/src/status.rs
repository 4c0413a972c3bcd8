//! The status tollgate owns on a custom resource: phase, revision numbers, and metav1.Condition
//! bookkeeping (k8s-openapi's `Condition`), where `lastTransitionTime` moves only when the status
//! really flips so watchers are not woken by rewrites that change nothing.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde::Serialize;
use serde_json::Value;

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const ROLLED_BACK: &str = "RolledBack";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Phase {
    Pending,
    Progressing,
    Ready,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Progressing => "Progressing",
            Self::Ready => "Ready",
            Self::Failed => "Failed",
        }
    }

    pub const ALL: [Self; 4] = [Self::Pending, Self::Progressing, Self::Ready, Self::Failed];
}

/// One condition as the decision wants it; times are filled in by `merge_conditions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredCondition {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

/// What tollgate writes under `.status` (server-side apply, field manager `tollgate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredStatus {
    pub observed_generation: i64,
    pub phase: Phase,
    pub current_revision: Option<i64>,
    pub last_healthy_revision: Option<i64>,
    pub conditions: Vec<DesiredCondition>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    /// Kubernetes requires reason to be a CamelCase identifier.
    #[error(
        "condition reason {0:?} must start with a letter and contain only letters, digits, '_' or ','"
    )]
    InvalidReason(String),
    #[error("condition type must not be empty")]
    EmptyType,
}

/// Inserts or updates the condition of `update.type_`. Returns whether anything changed.
/// `lastTransitionTime` is kept when the status is unchanged, whatever `update` carries.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    update: Condition,
) -> Result<bool, ConditionError> {
    if update.type_.is_empty() {
        return Err(ConditionError::EmptyType);
    }
    let reason_ok = update.reason.starts_with(|c: char| c.is_ascii_alphabetic())
        && update
            .reason
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ',');
    if !reason_ok {
        return Err(ConditionError::InvalidReason(update.reason));
    }
    match conditions.iter_mut().find(|c| c.type_ == update.type_) {
        None => {
            conditions.push(update);
            Ok(true)
        }
        Some(existing) => {
            let transition_time = if existing.status == update.status {
                existing.last_transition_time.clone()
            } else {
                update.last_transition_time.clone()
            };
            let next = Condition {
                last_transition_time: transition_time,
                ..update
            };
            let changed = *existing != next;
            *existing = next;
            Ok(changed)
        }
    }
}

pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// The conditions currently on the object (`status.conditions`), ignoring entries that are not
/// valid metav1.Conditions.
pub fn current_conditions(object: &Value) -> Vec<Condition> {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|c| serde_json::from_value(c.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The conditions to write: the existing ones tollgate owns, updated by `desired` with
/// metav1.Condition semantics at time `now`. Conditions of other types are left out, since
/// server-side apply keeps other managers' entries (the list is a map keyed by `type`).
pub fn merge_conditions(
    existing: &[Condition],
    desired: &[DesiredCondition],
    generation: i64,
    now: Timestamp,
) -> Result<Vec<Condition>, ConditionError> {
    let mut merged: Vec<Condition> = existing
        .iter()
        .filter(|c| desired.iter().any(|d| d.type_ == c.type_))
        .cloned()
        .collect();
    for d in desired {
        set_condition(
            &mut merged,
            Condition {
                type_: d.type_.to_string(),
                status: if d.status { "True" } else { "False" }.to_string(),
                observed_generation: Some(generation),
                last_transition_time: Time(now),
                reason: d.reason.to_string(),
                message: d.message.clone(),
            },
        )?;
    }
    merged.sort_by(|a, b| a.type_.cmp(&b.type_));
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn ready(status: &str, seconds: i64, generation: i64) -> Condition {
        Condition {
            type_: READY.into(),
            status: status.into(),
            observed_generation: Some(generation),
            last_transition_time: Time(at(seconds)),
            reason: "Reconciled".into(),
            message: String::new(),
        }
    }

    #[test]
    fn transition_time_moves_only_with_the_status() -> Result<(), ConditionError> {
        let mut conditions = Vec::new();
        assert!(set_condition(&mut conditions, ready("True", 1, 1))?);
        assert!(set_condition(&mut conditions, ready("True", 2, 2))?);
        assert_eq!(
            find(&conditions, READY).map(|c| c.last_transition_time.0),
            Some(at(1))
        );
        assert!(!set_condition(&mut conditions, ready("True", 3, 2))?);
        assert!(set_condition(&mut conditions, ready("False", 4, 3))?);
        assert_eq!(
            find(&conditions, READY).map(|c| c.last_transition_time.0),
            Some(at(4))
        );
        assert_eq!(conditions.len(), 1);
        Ok(())
    }

    #[test]
    fn rejects_invalid_reasons_and_types() {
        let mut conditions = Vec::new();
        let mut bad = ready("True", 0, 1);
        bad.reason = "not valid!".into();
        assert!(set_condition(&mut conditions, bad).is_err());
        let mut untyped = ready("True", 0, 1);
        untyped.type_.clear();
        assert_eq!(
            set_condition(&mut conditions, untyped),
            Err(ConditionError::EmptyType)
        );
    }

    #[test]
    fn merge_keeps_transition_times_and_drops_foreign_types() -> Result<(), ConditionError> {
        let existing = vec![
            ready("True", 1, 1),
            Condition {
                type_: "Available".into(),
                ..ready("True", 1, 1)
            },
        ];
        let desired = [
            DesiredCondition {
                type_: READY,
                status: true,
                reason: "Healthy",
                message: "ok".into(),
            },
            DesiredCondition {
                type_: ROLLED_BACK,
                status: false,
                reason: "NoRollback",
                message: String::new(),
            },
        ];
        let merged = merge_conditions(&existing, &desired, 2, at(9))?;
        let summary: Vec<(&str, &str, Timestamp, Option<i64>)> = merged
            .iter()
            .map(|c| {
                (
                    c.type_.as_str(),
                    c.status.as_str(),
                    c.last_transition_time.0,
                    c.observed_generation,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (READY, "True", at(1), Some(2)),
                (ROLLED_BACK, "False", at(9), Some(2))
            ]
        );
        Ok(())
    }

    #[test]
    fn serializes_like_metav1_condition() -> Result<(), serde_json::Error> {
        let json = serde_json::to_value(ready("True", 0, 4))?;
        assert_eq!(json["type"], "Ready");
        assert_eq!(json["status"], "True");
        assert_eq!(json["observedGeneration"], 4);
        assert_eq!(json["lastTransitionTime"], "2027-01-15T08:00:00Z");
        Ok(())
    }
}
