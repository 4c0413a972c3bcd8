//! In-tree enforcement documents: per policy, the ValidatingAdmissionPolicies and
//! MutatingAdmissionPolicy `tollgate_engine::in_tree` compiles, each with its binding, carrying
//! the policy's match. What does not compile stays with the webhook configurations, narrowed
//! to those policies.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use tollgate_engine::Store;
use tollgate_engine::in_tree::{self, InTree, Mutating, Validating};
use tollgate_engine::policy::{CompiledPolicy, Scope};

use super::{Options, labels};

const API_VERSION: &str = "admissionregistration.k8s.io/v1";

/// The name of a policy's admission-policy objects (and their bindings).
pub fn object_name(policy: &str, suffix: &str) -> String {
    format!("tollgate-{policy}{suffix}")
}

/// Each policy compiled, in the store's order.
pub fn compile_all(store: &Store, options: &Options) -> Vec<InTree> {
    let compile_options = in_tree::Options {
        restorer: options.restorer.clone(),
    };
    store
        .policies()
        .iter()
        .map(|p| in_tree::compile(p, &compile_options))
        .collect()
}

/// The admission policies and bindings for everything that compiled.
pub fn documents(store: &Store, compiled: &[InTree], options: &Options) -> Vec<Value> {
    let mut docs = Vec::new();
    for (policy, in_tree) in store.policies().iter().zip(compiled) {
        for validating in in_tree.validating.in_tree().into_iter().flatten() {
            docs.extend(validating_documents(policy, in_tree, validating, options));
        }
        if let Some(mutating) = in_tree.mutating.in_tree() {
            docs.extend(mutating_documents(policy, in_tree, mutating, options));
        }
    }
    docs
}

fn match_constraints(policy: &CompiledPolicy, operations: &[&str], options: &Options) -> Value {
    let m = &policy.matcher;
    let excluded: BTreeSet<&str> = [options.namespace.as_str(), "kube-system"]
        .into_iter()
        .collect();
    let mut expressions = vec![json!({
        "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded
    })];
    if !m.namespaces.is_empty() {
        expressions.push(json!({
            "key": "kubernetes.io/metadata.name", "operator": "In", "values": m.namespaces
        }));
    }
    let mut constraints = json!({
        "resourceRules": [{
            "apiGroups": [m.group],
            "apiVersions": m.versions,
            "resources": [m.resource],
            "operations": operations,
            "scope": match m.scope { Scope::Namespaced => "Namespaced", Scope::Cluster => "Cluster" },
        }],
        "matchPolicy": "Equivalent",
        "namespaceSelector": {"matchExpressions": expressions},
    });
    if let Some(selector) = &m.object_selector {
        constraints["objectSelector"] = json!(selector);
    }
    constraints
}

fn conditions(listed: &[(String, String)]) -> Value {
    listed
        .iter()
        .map(|(name, expression)| json!({"name": name, "expression": expression}))
        .collect()
}

fn validating_documents(
    policy: &CompiledPolicy,
    in_tree: &InTree,
    validating: &Validating,
    options: &Options,
) -> [Value; 2] {
    let name = object_name(&policy.name, validating.suffix);
    let operations: Vec<&str> = validating.operations.iter().map(|o| o.as_str()).collect();
    let variables: Vec<Value> = validating
        .variables
        .iter()
        .map(|v| json!({"name": v.name, "expression": v.expression}))
        .collect();
    let action = if validating.warn { "Warn" } else { "Deny" };
    [
        json!({
            "apiVersion": API_VERSION,
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name, "labels": labels()},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": match_constraints(policy, &operations, options),
                "matchConditions": conditions(&in_tree.validation_conditions),
                "variables": variables,
                "validations": [{
                    "expression": validating.expression,
                    "messageExpression": validating.message_expression,
                    "message": validating.message,
                    // The webhook's denials are 403 Forbidden too.
                    "reason": "Forbidden",
                }],
            },
        }),
        json!({
            "apiVersion": API_VERSION,
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name, "labels": labels()},
            "spec": {"policyName": name, "validationActions": [action]},
        }),
    ]
}

fn mutating_documents(
    policy: &CompiledPolicy,
    in_tree: &InTree,
    mutating: &Mutating,
    options: &Options,
) -> [Value; 2] {
    let name = object_name(&policy.name, "");
    let operations: Vec<&str> = policy
        .matcher
        .operations
        .iter()
        .map(|o| o.as_str())
        .collect();
    [
        json!({
            "apiVersion": API_VERSION,
            "kind": "MutatingAdmissionPolicy",
            "metadata": {"name": name, "labels": labels()},
            "spec": {
                "failurePolicy": "Fail",
                "reinvocationPolicy": "Never",
                "matchConstraints": match_constraints(policy, &operations, options),
                "matchConditions": conditions(&in_tree.match_conditions),
                "mutations": [{
                    "patchType": "JSONPatch",
                    "jsonPatch": {"expression": mutating.patch_expression},
                }],
            },
        }),
        json!({
            "apiVersion": API_VERSION,
            "kind": "MutatingAdmissionPolicyBinding",
            "metadata": {"name": name, "labels": labels()},
            "spec": {"policyName": name},
        }),
    ]
}

/// `tollgate check --in-tree`'s account of one policy: each part in-tree (with its estimated
/// cost against the apiserver's limit) or with the webhook, and why.
pub fn report(compiled: &InTree) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let limit = in_tree::PER_CALL_LIMIT;
    let _ = writeln!(out, "in-tree {}:", compiled.policy);
    let _ = writeln!(
        out,
        "  match conditions: estimated cost {} (limit {})",
        cost(compiled.match_cost),
        tollgate_engine::in_tree::MATCH_CONDITIONS_LIMIT
    );
    match &compiled.validating {
        in_tree::Part::Empty => {
            let _ = writeln!(out, "  validation: nothing to validate");
        }
        in_tree::Part::InTree(programs) => {
            for p in programs {
                let _ = writeln!(
                    out,
                    "  validation: ValidatingAdmissionPolicy {} ({}), estimated cost {} (limit {limit})",
                    object_name(&compiled.policy, p.suffix),
                    if p.warn { "Warn" } else { "Deny" },
                    cost(p.cost)
                );
            }
        }
        in_tree::Part::Webhook(reasons) => {
            let _ = writeln!(out, "  validation: stays with the webhook");
            for r in reasons {
                let _ = writeln!(out, "    {}: {}", r.at, r.reason);
            }
        }
    }
    match &compiled.mutating {
        in_tree::Part::Empty => {
            let _ = writeln!(out, "  defaults: nothing to insert");
        }
        in_tree::Part::InTree(m) => {
            let _ = writeln!(
                out,
                "  defaults: MutatingAdmissionPolicy {}, estimated cost {} (limit {limit})",
                object_name(&compiled.policy, ""),
                cost(m.cost)
            );
        }
        in_tree::Part::Webhook(reasons) => {
            let _ = writeln!(out, "  defaults: stay with the webhook");
            for r in reasons {
                let _ = writeln!(out, "    {}: {}", r.at, r.reason);
            }
        }
    }
    if compiled.conversion {
        let _ = writeln!(out, "  conversion: stays with the webhook (always)");
    }
    out
}

/// An estimate as `check --in-tree` prints it.
fn cost(estimate: u64) -> String {
    if estimate == in_tree::UNBOUNDED {
        "unbounded (grows with the object's size; the apiserver stops one evaluation past the limit)".into()
    } else {
        estimate.to_string()
    }
}
