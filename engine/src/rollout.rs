//! `spec.rollout`: how the reconciler judges a custom resource's health, how long a change may
//! take to become healthy, how many revisions it keeps, and whether it rolls back by itself.

use serde::Deserialize;
use serde_json::Value;

use crate::instance::Instance;
use crate::path::FieldPath;
use crate::schema;

pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: u64 = 600;
/// Left on the object by the patch that restores a spec, so the next round knows (atomically
/// with the spec itself) that the spec came from a rollback; the webhook knows it by it too.
pub const RESTORED_ANNOTATION: &str = "tollgate.dev/restored";

/// Whether an update is a restore by the reconciler: sent by the identity the server trusts
/// (`trusted`, the reconciler's ServiceAccount), setting a restore marker the old object did not
/// carry. Anyone else writing the marker is judged as every other update.
pub fn is_restore(
    trusted: Option<&str>,
    username: &str,
    object: Instance<'_>,
    old_object: Option<Instance<'_>>,
) -> bool {
    fn marker(object: Instance<'_>) -> Option<&str> {
        object
            .get("metadata")?
            .get("annotations")?
            .get(RESTORED_ANNOTATION)?
            .as_str()
    }
    let Some(old_object) = old_object else {
        return false;
    };
    trusted.is_some_and(|trusted| trusted == username)
        && marker(object).is_some_and(|new| marker(old_object) != Some(new))
}
pub const DEFAULT_REVISION_HISTORY_LIMIT: u32 = 10;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutSpec {
    pub health: HealthSpec,
    #[serde(default)]
    pub progress_deadline_seconds: Option<u64>,
    #[serde(default)]
    pub revision_history_limit: Option<u32>,
    #[serde(default)]
    pub auto_rollback: Option<bool>,
}

/// Exactly one of the three must be given; the loader reports anything else.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthSpec {
    #[serde(default)]
    pub workload: Option<WorkloadSpec>,
    #[serde(default)]
    pub pods: Option<PodsSpec>,
    #[serde(default)]
    pub condition: Option<ConditionSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    pub kind: WorkloadKind,
    pub name_from: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodsSpec {
    pub selector_from: String,
    #[serde(default)]
    pub min_ready_from: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConditionSpec {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub failure_types: Vec<String>,
}

/// The compiled section, with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    pub health: HealthRule,
    pub progress_deadline_seconds: u64,
    pub revision_history_limit: u32,
    pub auto_rollback: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthRule {
    /// The named workload (same namespace) has completed its rollout, as `kubectl rollout status`
    /// defines it; failed when its `Progressing` condition says `ProgressDeadlineExceeded`.
    Workload {
        kind: WorkloadKind,
        name_from: FieldPath,
    },
    /// At least `min_ready_from` (default 1) Pods matching the selector are Ready.
    Pods {
        selector_from: FieldPath,
        min_ready_from: Option<FieldPath>,
    },
    /// The object's own condition `type_` is True for the current generation; failed when any
    /// of `failure_types` is True.
    Condition {
        type_: String,
        failure_types: Vec<String>,
    },
}

/// Compiles the section, reporting each problem with the JSON pointer it concerns. Returns `None`
/// when anything was reported.
pub fn compile(
    spec: &RolloutSpec,
    object_schema: Option<&Value>,
    report: &mut dyn FnMut(&str, String),
) -> Option<Rollout> {
    let mut failed = 0usize;
    let mut fail = |pointer: &str, message: String| {
        failed += 1;
        report(pointer, message);
    };
    let health = compile_health(&spec.health, object_schema, &mut fail);
    if spec.progress_deadline_seconds == Some(0) {
        fail(
            "/spec/rollout/progressDeadlineSeconds",
            "spec.rollout.progressDeadlineSeconds must be at least 1".into(),
        );
    }
    if spec.revision_history_limit == Some(0) {
        fail(
            "/spec/rollout/revisionHistoryLimit",
            "spec.rollout.revisionHistoryLimit must be at least 1 (the current revision is always kept)".into(),
        );
    }
    if failed > 0 {
        return None;
    }
    Some(Rollout {
        health: health?,
        progress_deadline_seconds: spec
            .progress_deadline_seconds
            .unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECONDS),
        revision_history_limit: spec
            .revision_history_limit
            .unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT),
        auto_rollback: spec.auto_rollback.unwrap_or(true),
    })
}

fn compile_health(
    spec: &HealthSpec,
    object_schema: Option<&Value>,
    fail: &mut dyn FnMut(&str, String),
) -> Option<HealthRule> {
    let given = [
        spec.workload.is_some(),
        spec.pods.is_some(),
        spec.condition.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        fail(
            "/spec/rollout/health",
            "spec.rollout.health must give exactly one of workload, pods or condition".into(),
        );
        return None;
    }
    let mut field =
        |pointer: &str, label: &str, text: &str, expected: Option<&str>| match checked_path(
            text,
            object_schema,
            expected,
        ) {
            Ok(path) => Some(path),
            Err(reason) => {
                fail(pointer, format!("{label}: {reason}"));
                None
            }
        };
    if let Some(w) = &spec.workload {
        let name_from = field(
            "/spec/rollout/health/workload/nameFrom",
            "spec.rollout.health.workload.nameFrom",
            &w.name_from,
            Some("string"),
        )?;
        return Some(HealthRule::Workload {
            kind: w.kind,
            name_from,
        });
    }
    if let Some(p) = &spec.pods {
        let selector_from = field(
            "/spec/rollout/health/pods/selectorFrom",
            "spec.rollout.health.pods.selectorFrom",
            &p.selector_from,
            Some("object"),
        );
        let min_ready_from = match &p.min_ready_from {
            Some(text) => Some(field(
                "/spec/rollout/health/pods/minReadyFrom",
                "spec.rollout.health.pods.minReadyFrom",
                text,
                Some("integer"),
            )?),
            None => None,
        };
        return Some(HealthRule::Pods {
            selector_from: selector_from?,
            min_ready_from,
        });
    }
    let c = spec.condition.as_ref()?;
    if c.type_.is_empty() {
        fail(
            "/spec/rollout/health/condition/type",
            "spec.rollout.health.condition.type must not be empty".into(),
        );
        return None;
    }
    Some(HealthRule::Condition {
        type_: c.type_.clone(),
        failure_types: c.failure_types.clone(),
    })
}

/// A path the reconciler will read from every object: it must parse and, outside `metadata`
/// (which every object has), be declared by the schema with the expected JSON type.
fn checked_path(
    text: &str,
    object_schema: Option<&Value>,
    expected_type: Option<&str>,
) -> Result<FieldPath, String> {
    let path = FieldPath::parse(text).map_err(|e| e.to_string())?;
    let in_metadata = path.first_key() == Some("metadata");
    if in_metadata {
        return Ok(path);
    }
    let Some(object_schema) = object_schema else {
        return Err(format!(
            "{path} cannot be checked: the policy has no spec.schema"
        ));
    };
    let declared = schema::subschema(object_schema, &path)
        .ok_or_else(|| format!("{path} is not declared in spec.schema"))?;
    if let (Some(expected), Some(found)) =
        (expected_type, declared.get("type").and_then(Value::as_str))
        && expected != found
    {
        return Err(format!(
            "{path} has type {found:?} in spec.schema, expected {expected:?}"
        ));
    }
    Ok(path)
}
