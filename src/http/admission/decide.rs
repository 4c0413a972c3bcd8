//! From one AdmissionRequest to one answer: which requests the engine judges at all, and how
//! its verdict or patch becomes a response. Pure and synchronous: the handler decides where it
//! runs and for how long.

use kube::core::admission::Operation;
use tollgate_engine::Store;
use tollgate_engine::cel::RequestInfo;
use tollgate_engine::evaluate::{self, PolicyOutcome};
use tollgate_engine::policy::{OperationName, Target};
use tollgate_engine::rollout;

use super::wire::{AdmissionRequestIn, AdmissionResponseOut, ObjectIn};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Validate,
    Mutate,
}

/// `restorer` is the username whose restores are judged on the state they return to; each
/// policy's outcome goes to `outcomes` when it is given (the review is traced).
pub fn evaluate(
    store: &Store,
    request: Box<AdmissionRequestIn<'_>>,
    mode: Mode,
    restorer: Option<&str>,
    outcomes: Option<&mut Vec<PolicyOutcome>>,
) -> AdmissionResponseOut {
    let Some(target) = target_of(&request, restorer) else {
        return AdmissionResponseOut::allowed(&request.uid);
    };
    let uid: &str = &request.uid;
    match mode {
        Mode::Validate => {
            let verdict = evaluate::validate_noting(store, &target, outcomes);
            let response = if verdict.is_allowed() {
                AdmissionResponseOut::allowed(uid)
            } else {
                AdmissionResponseOut::denied(
                    uid,
                    verdict.denial_message(target.kind, &request.name),
                )
            };
            response.with_warnings(verdict.warnings)
        }
        Mode::Mutate => {
            // The policies are chosen on the object as received; the patch is written from a
            // defaulted copy of it.
            let defaults = evaluate::defaults_for(store, &target);
            if let Some(outcomes) = outcomes {
                *outcomes = defaults.outcomes();
            }
            let Some(object) = target.object else {
                return AdmissionResponseOut::allowed(uid);
            };
            match defaults.patch_json(object) {
                Ok(None) => AdmissionResponseOut::allowed(uid),
                Ok(Some(patch)) => AdmissionResponseOut::patched(uid, &patch),
                Err(e) => AdmissionResponseOut::errored(
                    uid,
                    500,
                    format!("the defaulting patch could not be written: {e}"),
                ),
            }
        }
    }
}

/// What the policies judge, or `None` for requests they never concern: subresources (status,
/// scale), DELETE and CONNECT, and requests without an object.
fn target_of<'r>(
    request: &'r AdmissionRequestIn<'_>,
    restorer: Option<&str>,
) -> Option<Target<'r>> {
    if request
        .sub_resource
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        return None;
    }
    let operation = match request.operation {
        Operation::Create => OperationName::Create,
        Operation::Update => OperationName::Update,
        _ => return None,
    };
    let object = request
        .object
        .as_ref()
        .map(ObjectIn::instance)
        .filter(|o| !o.is_null())?;
    let old_object = request
        .old_object
        .as_ref()
        .map(ObjectIn::instance)
        .filter(|o| !o.is_null());
    let username: &str = &request.user_info.username;
    Some(Target {
        restore: operation == OperationName::Update
            && rollout::is_restore(restorer, username, object, old_object),
        group: &request.kind.group,
        version: &request.kind.version,
        kind: &request.kind.kind,
        operation,
        namespace: request.namespace.as_deref().filter(|ns| !ns.is_empty()),
        object: Some(object),
        old_object,
        request: RequestInfo {
            name: &request.name,
            username,
            groups: &request.user_info.groups,
            dry_run: request.dry_run.unwrap_or(false),
        },
    })
}
