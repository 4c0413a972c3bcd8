//! `status.conditions` with Kubernetes semantics (metav1.Condition).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    pub observed_generation: Option<i64>,
    /// RFC 3339 timestamp of the last change of `status`.
    pub last_transition_time: String,
    pub reason: String,
    pub message: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(status: ConditionStatus, at: &str, generation: i64) -> Condition {
        Condition {
            type_: "Ready".into(),
            status,
            observed_generation: Some(generation),
            last_transition_time: at.into(),
            reason: "Reconciled".into(),
            message: String::new(),
        }
    }

    #[test]
    fn transition_time_moves_only_with_the_status() -> Result<(), ConditionError> {
        let mut conditions = Vec::new();
        assert!(set_condition(
            &mut conditions,
            ready(ConditionStatus::True, "t1", 1)
        )?);
        assert!(set_condition(
            &mut conditions,
            ready(ConditionStatus::True, "t2", 2)
        )?);
        assert_eq!(
            find(&conditions, "Ready").map(|c| c.last_transition_time.as_str()),
            Some("t1")
        );
        assert!(!set_condition(
            &mut conditions,
            ready(ConditionStatus::True, "t3", 2)
        )?);
        assert!(set_condition(
            &mut conditions,
            ready(ConditionStatus::False, "t4", 3)
        )?);
        assert_eq!(
            find(&conditions, "Ready").map(|c| c.last_transition_time.as_str()),
            Some("t4")
        );
        assert_eq!(conditions.len(), 1);
        Ok(())
    }

    #[test]
    fn rejects_invalid_reasons_and_types() {
        let mut conditions = Vec::new();
        let mut bad = ready(ConditionStatus::True, "t", 1);
        bad.reason = "not valid!".into();
        assert!(set_condition(&mut conditions, bad).is_err());
        let mut untyped = ready(ConditionStatus::True, "t", 1);
        untyped.type_.clear();
        assert_eq!(
            set_condition(&mut conditions, untyped),
            Err(ConditionError::EmptyType)
        );
    }

    #[test]
    fn serializes_like_metav1_condition() -> Result<(), serde_json::Error> {
        let json = serde_json::to_value(ready(ConditionStatus::True, "2026-01-01T00:00:00Z", 4))?;
        assert_eq!(json["type"], "Ready");
        assert_eq!(json["status"], "True");
        assert_eq!(json["observedGeneration"], 4);
        assert_eq!(json["lastTransitionTime"], "2026-01-01T00:00:00Z");
        Ok(())
    }
}
