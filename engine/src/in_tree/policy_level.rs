//! What a policy adds beyond its schema, as CEL: `spec.validations`, immutable fields, the
//! reconciler's restores, and the UPDATEs that only let an object go.

use super::{RESTORE, text};
use crate::cel::ValidationSpec;
use crate::path::{FieldPath, Segment};
use crate::rollout::RESTORED_ANNOTATION;

/// `spec.validations`, each failing at the object as the webhook reports it.
pub fn policy_validations(validations: &[ValidationSpec]) -> Option<String> {
    let parts: Vec<String> = validations
        .iter()
        .map(|v| {
            let message = match (&v.message_expression, &v.message) {
                (Some(m), _) => format!("'(object): ' + ({m})"),
                (None, Some(m)) => text::string(&format!("(object): {m}")),
                (None, None) => {
                    text::string(&format!("(object): failed expression: {}", v.expression))
                }
            };
            let holds = if crate::cel::references(&v.expression, "oldObject") {
                format!("{RESTORE} || ({})", v.expression)
            } else {
                format!("({})", v.expression)
            };
            format!("({holds} ? [] : [{message}])")
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(" + "))
}

/// Immutable fields on UPDATE: a value that was set may not change or go (a restore may drop
/// one its revision lacked).
pub fn immutable_checks(paths: &[FieldPath]) -> Option<String> {
    let parts: Vec<String> = paths
        .iter()
        .map(|path| {
            let (old_exists, old) = reach("oldObject", path);
            let (new_exists, new) = reach("object", path);
            let message = text::string(&format!(
                "{path}: is immutable and cannot be changed once set"
            ));
            format!(
                "(oldObject != null && {old_exists} && (({new_exists}) ? {new} != {old} : !{RESTORE}) ? [{message}] : [])"
            )
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(" + "))
}

/// Whether `path` exists below `root`, and the value there.
fn reach(root: &str, path: &FieldPath) -> (String, String) {
    let mut guards = Vec::new();
    let mut at = root.to_string();
    for segment in &path.0 {
        match segment {
            Segment::Key(key) => {
                guards.push(format!("type({at}) == map"));
                guards.push(text::has(&at, key));
                at = text::select(&at, key);
            }
            Segment::Index(index) => {
                guards.push(format!("type({at}) == list"));
                guards.push(format!("size({at}) > {index}"));
                at = format!("{at}[{index}]");
            }
        }
    }
    (format!("({})", guards.join(" && ")), at)
}

/// Whether an UPDATE is a restore by the trusted reconciler (`crate::rollout::is_restore`).
pub fn restore_expression(restorer: Option<&str>) -> String {
    let Some(restorer) = restorer else {
        return "false".into();
    };
    let key = text::string(RESTORED_ANNOTATION);
    let marker = |object: &str| {
        format!(
            "(has({object}.metadata.annotations) && {key} in {object}.metadata.annotations ? optional.of({object}.metadata.annotations[{key}]) : optional.none())"
        )
    };
    format!(
        "oldObject != null && request.userInfo.username == {} && {}.hasValue() && {} != {}",
        text::string(restorer),
        marker("object"),
        marker("object"),
        marker("oldObject"),
    )
}

/// False for an UPDATE tollgate never denies (`crate::ratchet::only_lets_go`): it removes
/// finalizers and changes nothing else, or it touches only metadata once the object is being
/// deleted.
pub fn lets_go_condition() -> String {
    let rest_same = "object.filter(k, k != 'metadata').all(k, k in oldObject && oldObject[k] == object[k]) && size(object.filter(k, k != 'metadata')) == size(oldObject.filter(k, k != 'metadata'))";
    let being_deleted =
        "has(object.metadata.deletionTimestamp) && object.metadata.deletionTimestamp != null";
    let finalizers = |o: &str| {
        format!(
            "(has({o}.metadata.finalizers) && {o}.metadata.finalizers != null ? {o}.metadata.finalizers : [])"
        )
    };
    let (now, before) = (finalizers("object"), finalizers("oldObject"));
    let skipped = "['finalizers', 'resourceVersion', 'managedFields']";
    let metadata_same = format!(
        "object.metadata.filter(k, !(k in {skipped})).all(k, k in oldObject.metadata && oldObject.metadata[k] == object.metadata[k]) && size(object.metadata.filter(k, !(k in {skipped}))) == size(oldObject.metadata.filter(k, !(k in {skipped})))"
    );
    format!(
        "oldObject == null || !(({being_deleted} && {rest_same}) || (size({now}) < size({before}) && {now}.all(f, f in {before}) && {rest_same} && {metadata_same}))"
    )
}
