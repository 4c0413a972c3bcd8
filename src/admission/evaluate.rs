//! Policy decisions for one admission request. Pure and synchronous: the HTTP layer decides
//! where it runs and for how long.

use kube::core::admission::Operation;
use serde_json::Value;

use super::review::{AdmissionRequestIn, AdmissionResponseOut};
use crate::policy::{Enforcement, OperationName, Store, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Validate,
    Mutate,
}

impl Mode {
    pub fn endpoint(self) -> &'static str {
        match self {
            Self::Validate => "validate",
            Self::Mutate => "mutate",
        }
    }
}

pub fn evaluate(store: &Store, request: &AdmissionRequestIn, mode: Mode) -> AdmissionResponseOut {
    let uid = request.uid.as_str();
    // Subresources (status, scale) and DELETE/CONNECT carry no object for our policies to judge.
    if request
        .sub_resource
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        return AdmissionResponseOut::allowed(uid);
    }
    let operation = match request.operation {
        Operation::Create => OperationName::Create,
        Operation::Update => OperationName::Update,
        _ => return AdmissionResponseOut::allowed(uid),
    };
    let Some(object) = request.object.as_ref().filter(|o| !o.is_null()) else {
        return AdmissionResponseOut::allowed(uid);
    };
    let target = Target {
        group: &request.kind.group,
        version: &request.kind.version,
        kind: &request.kind.kind,
        operation,
        namespace: request.namespace.as_deref().filter(|ns| !ns.is_empty()),
        object: Some(object),
        old_object: request.old_object.as_ref().filter(|o| !o.is_null()),
    };
    match mode {
        Mode::Validate => validate(store, &target, object, uid, &request.name),
        Mode::Mutate => mutate(store, &target, object, uid),
    }
}

fn validate(
    store: &Store,
    target: &Target<'_>,
    object: &Value,
    uid: &str,
    name: &str,
) -> AdmissionResponseOut {
    let mut denials = Vec::new();
    let mut warnings = Vec::new();
    for policy in store.matching(target) {
        let mut violations = policy.schema_violations(object);
        if let Some(old) = target.old_object
            && target.operation == OperationName::Update
        {
            violations.extend(policy.immutable_violations(object, old));
        }
        match policy.enforcement {
            Enforcement::Enforce => denials.extend(violations),
            Enforcement::Warn => warnings.extend(
                violations
                    .into_iter()
                    .map(|v| format!("policy {:?} (warn): {v}", policy.name)),
            ),
        }
    }
    if denials.is_empty() {
        return AdmissionResponseOut::allowed(uid).with_warnings(warnings);
    }
    denials.sort();
    denials.dedup();
    let listed: Vec<String> = denials.iter().map(ToString::to_string).collect();
    let subject = if name.is_empty() {
        target.kind.to_string()
    } else {
        format!("{} {name:?}", target.kind)
    };
    AdmissionResponseOut::denied(uid, format!("{subject} is invalid: {}", listed.join("; ")))
        .with_warnings(warnings)
}

fn mutate(store: &Store, target: &Target<'_>, object: &Value, uid: &str) -> AdmissionResponseOut {
    let mut defaulted = object.clone();
    for policy in store.matching(target) {
        policy.apply_defaults(&mut defaulted);
    }
    let patch = json_patch::diff(object, &defaulted);
    if patch.0.is_empty() {
        return AdmissionResponseOut::allowed(uid);
    }
    AdmissionResponseOut::patched(uid, &patch).unwrap_or_else(|e| {
        AdmissionResponseOut::errored(uid, 500, format!("cannot encode the JSON patch: {e}"))
    })
}
