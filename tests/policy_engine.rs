//! The policy engine through the library: matching, enforcement modes, immutability, defaults.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed step should fail the test loudly

mod support;

use serde_json::{Value, json};
use tollgate::http::{Mode, admission_review as review_body};
use tollgate_engine::{Store, policy};

fn store_from(yaml: &str) -> Store {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("p.yaml"), yaml).expect("write");
    policy::load_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"))
}

fn review(operation: &str, namespace: &str, object: Value, old: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "example.com", "version": "v1", "kind": "Widget"},
            "resource": {"group": "example.com", "version": "v1", "resource": "widgets"},
            "name": "w",
            "namespace": namespace,
            "operation": operation,
            "userInfo": {},
            "object": object,
            "oldObject": old,
        }
    })
}

fn answer(store: &Store, review: &Value, mode: Mode) -> Value {
    let body = serde_json::to_vec(review).expect("json");
    serde_json::to_value(review_body(store, &body, mode, None).expect("valid review"))
        .expect("json")["response"]
        .clone()
}

const WIDGETS: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: Policy
metadata: {name: widgets-strict}
spec:
  match:
    group: example.com
    kind: Widget
    resource: widgets
    versions: [v1]
    namespaces: [prod]
    objectSelector:
      matchExpressions:
        - {key: tier, operator: In, values: [gold]}
  immutable: [spec.size, spec.owner]
  schema:
    properties:
      spec:
        properties:
          size: {type: integer, maximum: 5}
          owner: {type: string}
---
apiVersion: tollgate.dev/v1alpha1
kind: Policy
metadata: {name: widgets-advice}
spec:
  match: {group: example.com, kind: Widget, resource: widgets, versions: [v1]}
  enforcement: warn
  defaults:
    annotations: {example.com/reviewed: "no"}
  schema:
    properties:
      spec:
        properties:
          colour: {type: string, enum: [red, blue], default: red}
"#;

fn widget(tier: &str, spec: Value) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "labels": {"tier": tier}}, "spec": spec})
}

#[test]
fn warn_mode_allows_and_returns_violations_as_warnings() {
    let store = store_from(WIDGETS);
    let response = answer(
        &store,
        &review(
            "CREATE",
            "dev",
            widget("silver", json!({"colour": "green"})),
            Value::Null,
        ),
        Mode::Validate,
    );
    assert_eq!(response["allowed"], true);
    let warnings = response["warnings"].as_array().cloned().unwrap_or_default();
    assert_eq!(warnings.len(), 1, "{response}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap_or_default()
            .contains("spec.colour: must be one of \"red\", \"blue\"")
    );
}

#[test]
fn namespace_and_label_selector_limit_where_a_policy_applies() {
    let store = store_from(WIDGETS);
    let too_big = json!({"size": 9, "colour": "red"});
    for (namespace, tier, denied) in [
        ("prod", "gold", true),
        ("prod", "silver", false),
        ("dev", "gold", false),
    ] {
        let response = answer(
            &store,
            &review(
                "CREATE",
                namespace,
                widget(tier, too_big.clone()),
                Value::Null,
            ),
            Mode::Validate,
        );
        assert_eq!(
            response["allowed"], !denied,
            "{namespace}/{tier}: {response}"
        );
    }
}

#[test]
fn immutable_fields_may_be_set_once_but_never_changed_or_removed() {
    let store = store_from(WIDGETS);
    let old = widget("gold", json!({"size": 1}));
    let cases = [
        (json!({"size": 1, "owner": "team-a"}), true),
        (json!({"size": 2}), false),
        (json!({}), false),
    ];
    for (spec, allowed) in cases {
        let response = answer(
            &store,
            &review("UPDATE", "prod", widget("gold", spec.clone()), old.clone()),
            Mode::Validate,
        );
        assert_eq!(response["allowed"], allowed, "{spec}: {response}");
        if !allowed {
            assert!(
                response["status"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("spec.size: is immutable")
            );
        }
    }
}

#[test]
fn an_update_matches_when_the_old_object_matched_the_selector() {
    let store = store_from(WIDGETS);
    let old = widget("gold", json!({"size": 1}));
    let relabelled = widget("silver", json!({"size": 3}));
    let response = answer(
        &store,
        &review("UPDATE", "prod", relabelled, old),
        Mode::Validate,
    );
    assert_eq!(
        response["allowed"], false,
        "dropping the label must not escape the policy: {response}"
    );
}

#[test]
fn defaults_from_every_matching_policy_are_combined_without_overwriting() {
    let store = store_from(WIDGETS);
    let mut object = widget("gold", json!({"size": 1}));
    object["metadata"]["annotations"] = json!({"example.com/reviewed": "yes"});
    let response = answer(
        &store,
        &review("CREATE", "prod", object.clone(), Value::Null),
        Mode::Mutate,
    );
    let patch = support::server::decode_patch(&json!({"response": response})).expect("patch");
    let patched = support::server::apply_strictly(&object, &patch).expect("applies");
    assert_eq!(patched["spec"], json!({"size": 1, "colour": "red"}));
    assert_eq!(
        patched["metadata"]["annotations"]["example.com/reviewed"],
        "yes"
    );
}

#[test]
fn subresources_other_versions_and_unlisted_operations_are_left_alone() {
    let store = store_from(WIDGETS);
    let bad = widget("gold", json!({"size": 99, "colour": "green"}));
    let mut status_update = review(
        "UPDATE",
        "prod",
        bad.clone(),
        widget("gold", json!({"size": 1})),
    );
    status_update["request"]["subResource"] = json!("status");
    assert_eq!(
        answer(&store, &status_update, Mode::Validate),
        json!({"uid": "u-1", "allowed": true})
    );

    let mut other_version = review("CREATE", "prod", bad.clone(), Value::Null);
    other_version["request"]["kind"]["version"] = json!("v2");
    assert_eq!(
        answer(&store, &other_version, Mode::Validate),
        json!({"uid": "u-1", "allowed": true})
    );
    assert_eq!(
        answer(&store, &other_version, Mode::Mutate),
        json!({"uid": "u-1", "allowed": true})
    );

    let connect = review("CONNECT", "prod", Value::Null, Value::Null);
    assert_eq!(
        answer(&store, &connect, Mode::Validate),
        json!({"uid": "u-1", "allowed": true})
    );
}

#[test]
fn policies_load_from_json_files_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let doc = json!({
        "apiVersion": "tollgate.dev/v1alpha1",
        "kind": "Policy",
        "metadata": {"name": "json-policy"},
        "spec": {"match": {"group": "example.com", "kind": "Widget", "resource": "widgets", "versions": ["v1"]},
                 "schema": {"properties": {"spec": {"required": ["size"]}}}}
    });
    std::fs::write(
        dir.path().join("p.json"),
        serde_json::to_string_pretty(&doc).expect("json"),
    )
    .expect("write");
    std::fs::write(dir.path().join(".hidden.yaml"), "not: a policy").expect("write");
    std::fs::write(dir.path().join("README.md"), "ignored").expect("write");
    let store = policy::load_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let response = answer(
        &store,
        &review("CREATE", "dev", widget("x", json!({})), Value::Null),
        Mode::Validate,
    );
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("spec.size: is required")
    );
}

#[test]
fn an_empty_directory_and_duplicate_names_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        policy::load_dir(dir.path()),
        Err(policy::LoadError::Empty(_))
    ));
    let one = "apiVersion: tollgate.dev/v1alpha1\nkind: Policy\nmetadata: {name: same}\nspec:\n  match: {group: g, kind: K, resource: ks, versions: [v1]}\n";
    std::fs::write(dir.path().join("a.yaml"), one).expect("write");
    std::fs::write(dir.path().join("b.yaml"), one).expect("write");
    let err = policy::load_dir(dir.path())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("b.yaml:1: policy name \"same\" is already used at"),
        "{err}"
    );
}
