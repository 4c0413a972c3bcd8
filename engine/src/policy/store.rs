//! The compiled, immutable policy set that requests are evaluated against.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use super::format::{Enforcement, MatchSpec, OperationName, Scope, Severity};
use crate::cel::{
    Applies, Bindings, MatchConditionSpec, PolicyRules, RequestInfo, SchemaRules, ValidationSpec,
};
use crate::conversion::KindConversion;
use crate::defaults::{Defaulter, Inserted, MetadataDefaults};
use crate::immutable;
use crate::instance::Instance;
use crate::path::FieldPath;
use crate::rollout::Rollout;
use crate::schema::CompiledSchema;
use crate::schema::{listtype, nulls};
use crate::selector::LabelSelector;
use crate::validate::{self, Raised, Violation};

/// Where a policy came from, for messages and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

#[derive(Debug)]
pub struct CompiledPolicy {
    pub name: String,
    pub origin: Origin,
    pub matcher: Matcher,
    pub enforcement: Enforcement,
    pub severity: Option<Severity>,
    pub(crate) schema: Option<CompiledSchema>,
    pub(crate) defaulter: Defaulter,
    pub(crate) metadata_defaults: MetadataDefaults,
    pub(crate) immutable: Vec<FieldPath>,
    pub(crate) schema_rules: Option<SchemaRules>,
    pub(crate) policy_rules: Option<PolicyRules>,
    /// `spec.validations` and `spec.matchConditions` as written, for in-tree compilation.
    pub(crate) validation_specs: Vec<ValidationSpec>,
    pub(crate) condition_specs: Vec<MatchConditionSpec>,
    pub conversion: Option<KindConversion>,
    pub rollout: Option<Rollout>,
}

#[derive(Debug)]
pub struct Matcher {
    pub group: String,
    pub kind: String,
    pub resource: String,
    pub versions: Vec<String>,
    pub scope: Scope,
    pub operations: Vec<OperationName>,
    pub namespaces: Vec<String>,
    /// `objectSelector` as written (rendered into admission policies).
    pub object_selector: Option<crate::selector::LabelSelectorSpec>,
    pub(crate) selector: Option<LabelSelector>,
}

impl Matcher {
    pub(crate) fn from_spec(spec: MatchSpec, selector: Option<LabelSelector>) -> Self {
        Self {
            group: spec.group,
            kind: spec.kind,
            resource: spec.resource,
            versions: spec.versions,
            scope: spec.scope,
            operations: spec.operations,
            namespaces: spec.namespaces,
            object_selector: spec.object_selector,
            selector,
        }
    }
}

/// What a policy needs to know about a request to decide whether it applies.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub group: &'a str,
    pub version: &'a str,
    pub kind: &'a str,
    pub operation: OperationName,
    pub namespace: Option<&'a str>,
    pub object: Option<Instance<'a>>,
    pub old_object: Option<Instance<'a>>,
    /// Who asks, for CEL expressions that look at `request`.
    pub request: RequestInfo<'a>,
    /// A restore by the trusted reconciler (`crate::rollout::is_restore`): judged on the state
    /// it returns to — no rule that reads the old object, immutable fields against the
    /// restored revision.
    pub restore: bool,
}

impl<'t> Target<'t> {
    /// The old object, only on UPDATE (where transition rules and immutability apply).
    fn previous(&self) -> Option<Instance<'t>> {
        self.old_object
            .filter(|_| self.operation == OperationName::Update)
    }

    fn bindings<'b>(
        &'b self,
        object: Instance<'b>,
        old_object: Option<Instance<'b>>,
    ) -> Bindings<'b> {
        Bindings {
            object,
            old_object,
            operation: self.operation.as_str(),
            namespace: self.namespace,
            request: &self.request,
        }
    }
}

impl CompiledPolicy {
    pub fn applies_to(&self, target: &Target<'_>) -> bool {
        let m = &self.matcher;
        m.versions.iter().any(|v| v == target.version)
            && m.operations.contains(&target.operation)
            && (m.namespaces.is_empty()
                || target
                    .namespace
                    .is_some_and(|ns| m.namespaces.iter().any(|n| n == ns)))
            && m.selector.as_ref().is_none_or(|selector| {
                // As in Kubernetes, an UPDATE matches if either the old or the new object does.
                [target.object, target.old_object]
                    .into_iter()
                    .flatten()
                    .any(|obj| selector.matches(&labels_of(obj)))
            })
    }

    /// Whether `spec.matchConditions` let this policy judge the target as it was sent (the
    /// question defaulting asks).
    pub fn conditions_hold(&self, target: &Target<'_>) -> Applies {
        match (&self.policy_rules, target.object) {
            (Some(rules), Some(object)) => {
                rules.applies(&target.bindings(object, target.previous()))
            }
            _ => Applies::Yes,
        }
    }

    /// Everything this policy finds wrong with the target: schema violations, the CRD
    /// dialect's list and embedded-resource checks, CEL rules in the schema and in
    /// `spec.validations`, and on UPDATE changed immutable fields — judged, as the apiserver
    /// judges a custom resource, on the object with its defaults in place and its forbidden
    /// `null`s dropped. On UPDATE, failures at values that did not change are ratcheted.
    pub fn judge(&self, target: &Target<'_>) -> Judgement {
        let mut judgement = Judgement::default();
        let Some(sent) = target.object else {
            return judgement;
        };
        let previous = target.previous();
        if previous.is_some_and(|old| crate::ratchet::only_lets_go(sent, old)) {
            return judgement;
        }
        // The apiserver calls validating webhooks after the mutating ones, and defaults a
        // custom resource as it decodes it: everything is judged with the defaults in place.
        let judged = self.as_judged(sent);
        let judged_previous = previous.map(|old| self.as_judged(old));
        let object = judged.get();
        let old = judged_previous.as_ref().map(Judged::get);
        if let Some(rules) = &self.policy_rules {
            let bindings = target.bindings(object, old);
            match rules.applies(&bindings) {
                Applies::No => return judgement,
                Applies::Error(message) => {
                    judgement.denials.push(Violation {
                        path: FieldPath::default(),
                        message,
                    });
                    return judgement;
                }
                Applies::Yes => judgement
                    .denials
                    .extend(rules.violations(&bindings, target.restore)),
            }
        }
        // As the apiserver: schema keywords, then embedded resources and list invariants, and
        // CEL rules only when none of those failed in a way that blocks them.
        let mut blocked = false;
        if let Some(schema) = &self.schema {
            for Raised {
                violation,
                node,
                blocking,
            } in validate::instance_violations(schema, object)
            {
                let ratcheted = old.is_some_and(|old| {
                    crate::ratchet::is_unchanged_at(Some(&schema.source), object, old, &node.0)
                });
                if ratcheted {
                    judgement.ratcheted.push(violation);
                } else {
                    blocked |= blocking;
                    judgement.denials.push(violation);
                }
            }
            if schema.structural {
                let found = listtype::violations(&schema.source, object);
                judgement.denials.extend(found.embedded);
                // On UPDATE, list invariants are checked only if the old object kept them.
                let old_lists_hold = || {
                    old.is_none_or(|old| listtype::violations(&schema.source, old).lists.is_empty())
                };
                if !found.lists.is_empty() && old_lists_hold() {
                    judgement.denials.extend(found.lists);
                }
            }
        }
        if let Some(rules) = &self.schema_rules {
            if blocked {
                judgement.denials.push(Violation {
                    path: FieldPath::default(),
                    message: "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation".into(),
                });
            } else {
                let failures = rules.violations(object, old, target.restore);
                judgement.denials.extend(failures.denied);
                judgement.ratcheted.extend(failures.ratcheted);
            }
        }
        if let Some(old) = previous {
            judgement.denials.extend(immutable::immutable_violations(
                &self.immutable,
                sent,
                old,
                target.restore,
            ));
        }
        judgement
    }

    /// `object` as the apiserver would judge it: its defaults in place, forbidden `null`s
    /// dropped — borrowed when that changes nothing.
    fn as_judged<'v>(&self, object: Instance<'v>) -> Judged<'v> {
        let drops_nulls = self
            .schema
            .as_ref()
            .is_some_and(|s| nulls::any_dropped(&s.source, object));
        if self.defaulter.is_complete(object) && !drops_nulls {
            return Judged::AsSent(object);
        }
        let mut copy = object.to_value().into_owned();
        self.defaulter.apply(&mut copy);
        if let Some(schema) = &self.schema {
            nulls::prune(&schema.source, &mut copy);
        }
        Judged::Copied(copy)
    }

    /// What in-tree compilation reads of the policy.
    pub(crate) fn in_tree_source(&self) -> crate::in_tree::Source<'_> {
        crate::in_tree::Source {
            schema: self.schema.as_ref().map(|s| &s.source),
            validations: &self.validation_specs,
            match_conditions: &self.condition_specs,
            immutable: &self.immutable,
            labels: &self.metadata_defaults.labels,
            annotations: &self.metadata_defaults.annotations,
        }
    }

    /// Applies the static labels/annotations and the schema defaults, never overwriting a value.
    pub(crate) fn apply_defaults<'p>(&'p self, object: &mut Value, inserted: &mut Inserted<'p>) {
        self.metadata_defaults.apply(object, inserted);
        self.defaulter.apply_noting(object, inserted);
    }

    /// Whether `object` already has every default `apply_defaults` would add.
    pub(crate) fn has_defaults(&self, object: Instance<'_>) -> bool {
        self.metadata_defaults.is_complete(object) && self.defaulter.is_complete(object)
    }
}

/// What one policy makes of a request.
#[derive(Debug, Default)]
pub struct Judgement {
    /// Violations that deny (or warn, for a `warn` policy).
    pub denials: Vec<Violation>,
    /// Violations ratcheting admitted: raised at values the UPDATE did not change.
    pub ratcheted: Vec<Violation>,
}

/// An object as judged: the object itself when judging changes nothing in it.
enum Judged<'v> {
    AsSent(Instance<'v>),
    Copied(Value),
}

impl Judged<'_> {
    fn get(&self) -> Instance<'_> {
        match self {
            Judged::AsSent(instance) => *instance,
            Judged::Copied(value) => Instance::Value(value),
        }
    }
}

fn labels_of(object: Instance<'_>) -> BTreeMap<String, String> {
    object
        .get("metadata")
        .and_then(|metadata| metadata.get("labels"))
        .into_iter()
        .flat_map(Instance::members)
        .filter_map(|(k, v)| Some((k.to_string(), v.as_str()?.to_string())))
        .collect()
}

/// Immutable after construction; reloads build a new `Store` and swap it in whole.
#[derive(Debug, Default)]
pub struct Store {
    policies: Vec<Arc<CompiledPolicy>>,
    /// group -> kind -> indexes into `policies`; looked up by `&str` on every request (ordered
    /// maps: a few string comparisons cost less than hashing both names with SipHash).
    by_group_kind: BTreeMap<String, BTreeMap<String, Vec<usize>>>,
    /// Names the files the set was loaded from (see `load_dir`).
    digest: String,
}

impl Store {
    pub(crate) fn new(mut policies: Vec<CompiledPolicy>, digest: String) -> Self {
        // A stable order makes defaulting and messages deterministic across reloads.
        policies.sort_by(|a, b| a.name.cmp(&b.name));
        let mut by_group_kind: BTreeMap<String, BTreeMap<String, Vec<usize>>> = BTreeMap::new();
        for (idx, policy) in policies.iter().enumerate() {
            by_group_kind
                .entry(policy.matcher.group.clone())
                .or_default()
                .entry(policy.matcher.kind.clone())
                .or_default()
                .push(idx);
        }
        Self {
            policies: policies.into_iter().map(Arc::new).collect(),
            by_group_kind,
            digest,
        }
    }

    /// A short digest of the policy files this set was loaded from.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The conversion rules for a kind (the loader allows one policy per kind to declare them).
    pub fn conversion_for(&self, group: &str, kind: &str) -> Option<&KindConversion> {
        self.for_kind(group, kind)
            .find_map(|p| p.conversion.as_ref())
    }

    /// Whether judging this kind costs no more than reading the object: no CEL expression
    /// iterates. Such reviews, when small, can be evaluated without a deadline.
    pub fn evaluation_is_linear(&self, group: &str, kind: &str) -> bool {
        !self.for_kind(group, kind).any(|p| {
            p.schema_rules.as_ref().is_some_and(SchemaRules::iterates)
                || p.policy_rules.as_ref().is_some_and(PolicyRules::iterates)
        })
    }

    pub fn policies(&self) -> &[Arc<CompiledPolicy>] {
        &self.policies
    }

    pub fn matching<'s: 't, 't>(
        &'s self,
        target: &'t Target<'_>,
    ) -> impl Iterator<Item = &'s CompiledPolicy> + 't {
        self.for_kind(target.group, target.kind)
            .filter(move |p| p.applies_to(target))
    }

    fn for_kind<'s>(
        &'s self,
        group: &str,
        kind: &str,
    ) -> impl Iterator<Item = &'s CompiledPolicy> + 's {
        self.by_group_kind
            .get(group)
            .and_then(|kinds| kinds.get(kind))
            .into_iter()
            .flatten()
            .filter_map(|idx| self.policies.get(*idx))
            .map(Arc::as_ref)
    }
}
