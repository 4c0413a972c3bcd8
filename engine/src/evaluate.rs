//! The three questions the webhooks ask of a policy set, answered without any wire format:
//! is this object valid, which defaults does it lack, and what is it in another version.

use serde_json::Value;

use crate::cel::Applies;
use crate::conversion::{ConvertError, split_api_version};
pub use crate::defaults::{Inserted, Operation as PatchOperation};
use crate::instance::Instance;
use crate::policy::{CompiledPolicy, Enforcement, Judgement, Store, Target};
use crate::validate::Violation;

/// The outcome of validating one object against every policy that applies to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Violations of enforcing policies, sorted by field path, without repeats.
    pub denials: Vec<Violation>,
    /// Violations of `warn` policies, phrased with the policy's name.
    pub warnings: Vec<String>,
}

impl Verdict {
    pub fn is_allowed(&self) -> bool {
        self.denials.is_empty()
    }

    /// One message naming every violated field: `PaymentGateway "x" is invalid: a: ...; b: ...`.
    pub fn denial_message(&self, kind: &str, name: &str) -> String {
        let listed: Vec<String> = self.denials.iter().map(ToString::to_string).collect();
        let subject = if name.is_empty() {
            kind.to_string()
        } else {
            format!("{kind} {name:?}")
        };
        format!("{subject} is invalid: {}", listed.join("; "))
    }
}

/// Each policy that applies to `target`, with what it makes of it: the webhook joins them into
/// one verdict, the audit reports them policy by policy.
pub fn judgements<'s: 't, 't>(
    store: &'s Store,
    target: &'t Target<'_>,
) -> impl Iterator<Item = (&'s CompiledPolicy, Judgement)> + 't {
    store
        .matching(target)
        .map(|policy| (policy, policy.judge(target)))
}

/// What one policy made of one review: what the server's traces record, policy by policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyOutcome {
    pub policy: String,
    /// "denied", "warned" or "allowed" when validating; "defaulted" when mutating.
    pub decision: &'static str,
    /// Violations raised (denying, or warning for a `warn` policy).
    pub violations: usize,
    /// Violations ratcheting admitted.
    pub ratcheted: usize,
}

pub fn validate(store: &Store, target: &Target<'_>) -> Verdict {
    validate_noting(store, target, None)
}

/// `validate`, also noting each policy's outcome in `outcomes` when it is given.
pub fn validate_noting(
    store: &Store,
    target: &Target<'_>,
    mut outcomes: Option<&mut Vec<PolicyOutcome>>,
) -> Verdict {
    let mut verdict = Verdict::default();
    for (policy, judgement) in judgements(store, target) {
        if let Some(outcomes) = outcomes.as_deref_mut() {
            let decision = match (judgement.denials.is_empty(), policy.enforcement) {
                (true, _) => "allowed",
                (false, Enforcement::Enforce) => "denied",
                (false, Enforcement::Warn) => "warned",
            };
            outcomes.push(PolicyOutcome {
                policy: policy.name.clone(),
                decision,
                violations: judgement.denials.len(),
                ratcheted: judgement.ratcheted.len(),
            });
        }
        match policy.enforcement {
            Enforcement::Enforce => verdict.denials.extend(judgement.denials),
            Enforcement::Warn => verdict.warnings.extend(
                judgement
                    .denials
                    .into_iter()
                    .map(|v| format!("policy {:?} (warn): {v}", policy.name)),
            ),
        }
        // Ratcheting admits these; the warning says what a change to them would meet.
        verdict
            .warnings
            .extend(judgement.ratcheted.into_iter().map(|v| {
                format!(
                    "policy {:?}: {v} (admitted: unchanged since it was stored)",
                    policy.name
                )
            }));
    }
    verdict.denials.sort();
    verdict.denials.dedup();
    verdict
}

/// The RFC 6902 patch that adds every missing default; empty when nothing is missing.
pub fn default_patch(store: &Store, target: &Target<'_>) -> json_patch::Patch {
    let Some(object) = target.object else {
        return json_patch::Patch(Vec::new());
    };
    let mut defaulted = object.to_value().into_owned();
    defaults_for(store, target).apply(&mut defaulted)
}

/// The policies whose defaults apply to `target`, chosen on the object as it came (match
/// conditions included), so the caller may then default that very object in place.
pub fn defaults_for<'s>(store: &'s Store, target: &Target<'_>) -> Defaults<'s> {
    Defaults(
        store
            .matching(target)
            // A policy whose match conditions do not hold (or cannot be evaluated) adds nothing.
            .filter(|policy| policy.conditions_hold(target) == Applies::Yes)
            .collect(),
    )
}

/// One operation of a defaulting patch as `json_patch` writes it (`op`, `path`, `value`),
/// borrowing its pointer and value.
#[derive(serde::Serialize)]
struct WireOperation<'a> {
    op: &'static str,
    path: &'a str,
    value: &'a Value,
}

/// The defaulting policies of one request, in order.
pub struct Defaults<'s>(Vec<&'s CompiledPolicy>);

impl Defaults<'_> {
    /// The outcome of each defaulting policy, for the review's trace.
    pub fn outcomes(&self) -> Vec<PolicyOutcome> {
        self.0
            .iter()
            .map(|policy| PolicyOutcome {
                policy: policy.name.clone(),
                decision: "defaulted",
                violations: 0,
                ratcheted: 0,
            })
            .collect()
    }

    /// Fills in `object`'s missing defaults and returns the patch from the object as it was:
    /// the patch `json_patch::diff` of the two would give, without a copy or a comparison.
    pub fn apply(&self, object: &mut Value) -> json_patch::Patch {
        let inserted = self.apply_noting(object);
        inserted.into_patch(object)
    }

    /// The patch that adds `object`'s missing defaults, as the JSON text of the patch document:
    /// written from a defaulted copy as each operation is found (no operation built, no default
    /// subtree copied); `None` when nothing is missing. The operations and their order are
    /// `apply`'s, and the text what `json_patch` would write of them.
    pub fn patch_json(&self, object: Instance<'_>) -> serde_json::Result<Option<Vec<u8>>> {
        use serde::ser::{SerializeSeq, Serializer};
        if self.0.iter().all(|policy| policy.has_defaults(object)) {
            return Ok(None);
        }
        let mut copy = object.to_value().into_owned();
        let inserted = self.apply_noting(&mut copy);
        let mut text = Vec::new();
        let mut writer = serde_json::Serializer::new(&mut text);
        let mut operations = writer.serialize_seq(None)?;
        let (mut written, mut failed) = (0usize, None);
        inserted.each_operation(&copy, |operation| {
            if failed.is_none() {
                let wire = WireOperation {
                    op: operation.op(),
                    path: operation.pointer,
                    value: operation.value,
                };
                match operations.serialize_element(&wire) {
                    Ok(()) => written += 1,
                    Err(e) => failed = Some(e),
                }
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        operations.end()?;
        Ok((written > 0).then_some(text))
    }

    /// Fills in `object`'s missing defaults and returns where they went, to hand the patch's
    /// operations over one by one (`Inserted::each_operation`).
    pub fn apply_noting(&self, object: &mut Value) -> Inserted<'_> {
        let mut inserted = Inserted::on();
        for policy in &self.0 {
            policy.apply_defaults(object, &mut inserted);
        }
        inserted
    }
}

/// Converts one object to `desired_api_version` (`group/version`) by its kind's rules. An object
/// already in that version is returned unchanged. The object is taken by value: its fields move
/// into the result instead of being copied.
pub fn convert(
    store: &Store,
    object: Value,
    desired_api_version: &str,
) -> Result<Value, ConvertError> {
    let Value::Object(map) = object else {
        return Err(ConvertError::NotAnObject);
    };
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or(ConvertError::MissingApiVersion)?;
    if api_version == desired_api_version {
        return Ok(Value::Object(map));
    }
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .ok_or(ConvertError::MissingKind)?;
    if map.get("metadata").is_some_and(|m| !m.is_object()) {
        return Err(ConvertError::Metadata);
    }
    let (group, from) = split_api_version(api_version);
    let (desired_group, target) = split_api_version(desired_api_version);
    if group != desired_group {
        return Err(ConvertError::WrongGroup {
            found: api_version.to_string(),
            expected: desired_group.to_string(),
        });
    }
    let rules = store
        .conversion_for(group, kind)
        .ok_or_else(|| ConvertError::NoRules {
            group: group.to_string(),
            kind: kind.to_string(),
        })?;
    // `from` points into the object, which moves into the conversion.
    let from = from.to_string();
    rules.convert(map, &from, target).map(Value::Object)
}
