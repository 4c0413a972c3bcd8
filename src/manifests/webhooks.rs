//! The ValidatingWebhookConfiguration and MutatingWebhookConfiguration: one webhook each, with
//! a rule per policy.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use tollgate_engine::Store;
use tollgate_engine::policy::Scope;

use super::{Options, labels};

/// Which of the two admission webhook configurations to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavour {
    Validating,
    Mutating,
}

impl Flavour {
    fn name(self) -> &'static str {
        match self {
            Self::Validating => "Validating",
            Self::Mutating => "Mutating",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Self::Validating => "validate",
            Self::Mutating => "mutate",
        }
    }
}

/// The configuration for the policies whose index `includes` accepts; `None` when it accepts
/// none.
pub fn configuration(
    store: &Store,
    options: &Options,
    flavour: Flavour,
    includes: impl Fn(usize) -> bool,
) -> Option<Value> {
    let verb = flavour.verb();
    let path = format!("/{verb}");
    let rules: Vec<Value> = store
        .policies()
        .iter()
        .enumerate()
        .filter(|(idx, _)| includes(*idx))
        .map(|(_, p)| {
            json!({
                "apiGroups": [p.matcher.group],
                "apiVersions": p.matcher.versions,
                "resources": [p.matcher.resource],
                "operations": p.matcher.operations.iter().map(|o| o.as_str()).collect::<BTreeSet<_>>(),
                "scope": match p.matcher.scope { Scope::Namespaced => "Namespaced", Scope::Cluster => "Cluster" },
            })
        })
        .collect();
    if rules.is_empty() {
        return None;
    }
    let excluded: BTreeSet<&str> = [options.namespace.as_str(), "kube-system"]
        .into_iter()
        .collect();
    let mut webhook = json!({
        "name": format!("{verb}.tollgate.dev"),
        "clientConfig": options.target.client_config(&path, options.ca_bundle.as_deref()),
        "rules": rules,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "matchPolicy": "Equivalent",
        "failurePolicy": "Fail",
        "timeoutSeconds": options.timeout_seconds,
        // tollgate must never judge its own namespace (it could not start again) nor kube-system.
        "namespaceSelector": {"matchExpressions": [{
            "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded
        }]},
    });
    if flavour == Flavour::Mutating {
        webhook["reinvocationPolicy"] = json!("Never");
    }
    Some(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": format!("{}WebhookConfiguration", flavour.name()),
        "metadata": {"name": "tollgate", "labels": labels()},
        "webhooks": [webhook],
    }))
}
