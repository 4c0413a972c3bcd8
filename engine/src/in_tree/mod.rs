//! In-tree enforcement: a policy compiled to CEL the apiserver evaluates itself, as a
//! ValidatingAdmissionPolicy (its schema keywords, CRD rules, `spec.validations`, immutable
//! fields and ratcheting, with the webhook's field paths and messages) and a
//! MutatingAdmissionPolicy (its defaults as a JSON Patch), so a cluster can enforce it with no
//! webhook in the request path.
//!
//! A part of a policy compiles whole or not at all: anything the compiler cannot express with
//! the webhook's exact verdict is named (`Unsupported`) and that part stays with the webhook.
//! Conversion always does. The verdicts are held to the webhook's by the differential test
//! against a real apiserver (`tests/e2e_in_tree.rs`).

mod checks;
mod defaults;
mod policy_level;
mod ratchet;
mod schema;
mod structural;
mod text;

use serde_json::Value;

use crate::cel::{MatchConditionSpec, ValidationSpec};
use crate::path::FieldPath;
use crate::policy::{CompiledPolicy, Enforcement, OperationName};
use checks::{Select, Weight};

/// The variable saying an UPDATE is a restore by the trusted reconciler.
const RESTORE: &str = "variables.tg_restore";

/// The apiserver's runtime limit on one expression's cost (`celconfig.PerCallLimit`); variables
/// are evaluated inside the expression that reads them and count towards it.
pub const PER_CALL_LIMIT: u64 = 1_000_000;
/// The apiserver's runtime budget for one policy's match conditions together
/// (`celconfig.RuntimeCELCostBudgetMatchConditions`).
pub const MATCH_CONDITIONS_LIMIT: u64 = 2_500_000;

/// Something the compiler cannot express exactly: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    pub at: String,
    pub reason: String,
}

/// A named expression evaluated at most once per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    pub name: String,
    pub expression: String,
}

/// One ValidatingAdmissionPolicy's content.
#[derive(Debug, Clone)]
pub struct Validating {
    /// Appended to the policy's name (`""` for the main one).
    pub suffix: &'static str,
    pub operations: Vec<OperationName>,
    pub variables: Vec<Variable>,
    pub expression: String,
    pub message_expression: String,
    /// Shown when the message expression's result is too long for the apiserver (5 KiB).
    pub message: String,
    /// Warn (ratcheting warnings, `enforcement: warn`) rather than Deny.
    pub warn: bool,
    /// Estimated worst-case cost of evaluating the expression (variables included).
    pub cost: u64,
}

/// A part of a policy: in-tree, or with the webhook and why.
#[derive(Debug, Clone)]
pub enum Part<T> {
    /// The policy has nothing of this kind.
    Empty,
    InTree(T),
    Webhook(Vec<Unsupported>),
}

impl<T> Part<T> {
    pub fn in_tree(&self) -> Option<&T> {
        match self {
            Part::InTree(t) => Some(t),
            _ => None,
        }
    }

    pub fn stays_with_webhook(&self) -> bool {
        matches!(self, Part::Webhook(_))
    }
}

/// The MutatingAdmissionPolicy's content: one JSON Patch mutation.
#[derive(Debug, Clone)]
pub struct Mutating {
    pub patch_expression: String,
    pub cost: u64,
}

/// A policy compiled for in-tree enforcement.
#[derive(Debug, Clone)]
pub struct InTree {
    pub policy: String,
    /// The policy's own matchConditions (the mutating policy's).
    pub match_conditions: Vec<(String, String)>,
    /// The validating policies': the policy's own and one that lets an object go
    /// (`crate::ratchet::only_lets_go`; defaults are still inserted, as `/mutate` does).
    pub validation_conditions: Vec<(String, String)>,
    pub validating: Part<Vec<Validating>>,
    pub mutating: Part<Mutating>,
    /// Estimated cost of the match conditions together.
    pub match_cost: u64,
    /// The policy converts between versions: that always stays with the webhook.
    pub conversion: bool,
}

/// Options the compiled policies depend on.
#[derive(Debug, Clone)]
pub struct Options {
    /// Whose restores are judged on the state they return to (`serve --restorer`).
    pub restorer: Option<String>,
}

/// Compiles `policy`. Parsing the generated expressions to estimate their cost recurses as
/// deep as they nest, so it runs on a thread with a stack sized for that.
pub fn compile(policy: &CompiledPolicy, options: &Options) -> InTree {
    const STACK: usize = 256 << 20;
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("in-tree-compile".into())
            .stack_size(STACK)
            .spawn_scoped(scope, || compile_here(policy, options))
            .ok()
            .and_then(|worker| worker.join().ok())
    })
    .unwrap_or_else(|| InTree {
        policy: policy.name.clone(),
        match_conditions: Vec::new(),
        validation_conditions: Vec::new(),
        validating: Part::Webhook(vec![failed()]),
        mutating: Part::Webhook(vec![failed()]),
        match_cost: UNBOUNDED,
        conversion: policy.conversion.is_some(),
    })
}

fn failed() -> Unsupported {
    Unsupported {
        at: "(compiler)".into(),
        reason: "the in-tree compiler failed on this policy".into(),
    }
}

fn compile_here(policy: &CompiledPolicy, options: &Options) -> InTree {
    let source = policy.in_tree_source();
    let typed_schema = source.schema.unwrap_or(&Value::Null);
    let cost_of = |expression: &str| {
        crate::cel::estimated_admission_cost(expression, typed_schema).unwrap_or(u64::MAX)
    };
    let match_conditions: Vec<(String, String)> = source
        .match_conditions
        .iter()
        .map(|c| (c.name.clone(), c.expression.clone()))
        .collect();
    let mut validation_conditions = match_conditions.clone();
    validation_conditions.push((
        "tollgate-not-letting-go".into(),
        policy_level::lets_go_condition(),
    ));
    let match_cost = total_cost(
        validation_conditions.iter().map(|(_, e)| e.as_str()),
        &cost_of,
    );
    let mutating = {
        let mut unsupported = Vec::new();
        match defaults::patch_expression(
            source.schema,
            source.labels,
            source.annotations,
            &mut unsupported,
        ) {
            _ if !unsupported.is_empty() => Part::Webhook(unsupported),
            None => Part::Empty,
            Some(patch_expression) => {
                let cost = cost_of(&patch_expression);
                match over_limit(cost) {
                    Some(reason) => Part::Webhook(vec![reason]),
                    None => Part::InTree(Mutating {
                        patch_expression,
                        cost,
                    }),
                }
            }
        }
    };
    let validating = validating(policy, &source, options, &cost_of);
    InTree {
        policy: policy.name.clone(),
        match_conditions,
        validation_conditions,
        validating,
        mutating,
        match_cost,
        conversion: policy.conversion.is_some(),
    }
}

/// An estimate of `UNBOUNDED` grows with the object's size (an unbounded list or string): the
/// apiserver then stops an evaluation at its runtime limit only for objects far beyond the
/// usual, which `check --in-tree` says; a bounded estimate over the limit stays with the
/// webhook.
fn over_limit(cost: u64) -> Option<Unsupported> {
    (cost > PER_CALL_LIMIT && cost != UNBOUNDED).then(|| Unsupported {
        at: "(cost)".into(),
        reason: format!(
            "estimated cost {cost} exceeds the apiserver's per-expression limit of {PER_CALL_LIMIT}"
        ),
    })
}

/// The estimated cost of evaluating all of `expressions` in one call (variables count towards
/// the expression that reads them).
fn total_cost<'e>(
    expressions: impl Iterator<Item = &'e str>,
    cost_of: &dyn Fn(&str) -> u64,
) -> u64 {
    expressions.map(cost_of).fold(0, u64::saturating_add)
}

/// The estimate of an expression whose cost grows with the object's size without a bound.
pub const UNBOUNDED: u64 = u64::MAX;

/// What compiling reads of a policy: its source as written (schema resolved).
pub(crate) struct Source<'p> {
    pub schema: Option<&'p Value>,
    pub validations: &'p [ValidationSpec],
    pub match_conditions: &'p [MatchConditionSpec],
    pub immutable: &'p [FieldPath],
    pub labels: &'p std::collections::BTreeMap<String, String>,
    pub annotations: &'p std::collections::BTreeMap<String, String>,
}

fn validating(
    policy: &CompiledPolicy,
    source: &Source<'_>,
    options: &Options,
    cost_of: &dyn Fn(&str) -> u64,
) -> Part<Vec<Validating>> {
    let mut unsupported = Vec::new();
    let dialect = source.schema.map(crate::schema::dialect_of);
    let items = dialect
        .as_ref()
        .map(|schema| schema::SchemaCompiler::new(&mut unsupported).compile(schema))
        .unwrap_or_default();
    if !unsupported.is_empty() {
        return Part::Webhook(unsupported);
    }
    // List invariants are checked on UPDATE only if the old object kept them.
    let old_items = dialect
        .as_ref()
        .map(|schema| schema::SchemaCompiler::new(&mut Vec::new()).compile_old(schema))
        .unwrap_or_default();
    let lists = checks::render(&items, Select::Denied(Weight::List)).map(|lists| {
        match checks::render(&old_items, Select::Denied(Weight::List)) {
            Some(old) => format!("(oldObject == null || size({old}) == 0 ? {lists} : [])"),
            None => lists,
        }
    });
    let policy_checks = policy_level::policy_validations(source.validations);
    let immutable = policy_level::immutable_checks(source.immutable);
    let render = |select| checks::render(&items, select);
    let blocking = render(Select::Denied(Weight::Blocking));
    let schema_plain = render(Select::Denied(Weight::Plain));
    let rules = render(Select::Denied(Weight::Rule));
    let ratcheted_schema = render(Select::RatchetedSchema);
    let ratcheted_rules = render(Select::RatchetedRules);
    if blocking.is_none()
        && schema_plain.is_none()
        && rules.is_none()
        && lists.is_none()
        && policy_checks.is_none()
        && immutable.is_none()
    {
        return Part::Empty;
    }
    let restore = Variable {
        name: "tg_restore".into(),
        expression: policy_level::restore_expression(options.restorer.as_deref()),
    };
    // The webhook lists a failure raised twice at one place (by a node and its `allOf`) once.
    let blocking_variable = Variable {
        name: "tg_blocking".into(),
        expression: blocking.map_or_else(|| "[]".into(), |b| format!("{b}.distinct()")),
    };
    let schema_plain = schema_plain.map(|plain| format!("{plain}.distinct()"));
    const NOT_CHECKED: &str = "'(object): some validation rules were not checked because the object was invalid; correct the existing errors to complete validation'";
    let gated = |rules: String, otherwise: &str| {
        format!("(size(variables.tg_blocking) == 0 ? {rules} : {otherwise})")
    };
    let mut variables = vec![restore.clone(), blocking_variable.clone()];
    let mut listed = Vec::new();
    if let Some(checks) = policy_checks {
        variables.push(Variable {
            name: "tg_policy".into(),
            expression: checks,
        });
        listed.push("variables.tg_policy");
    }
    listed.push("variables.tg_blocking");
    if let Some(plain) = schema_plain {
        variables.push(Variable {
            name: "tg_schema".into(),
            expression: plain,
        });
        listed.push("variables.tg_schema");
    }
    if let Some(lists) = lists {
        variables.push(Variable {
            name: "tg_lists".into(),
            expression: lists,
        });
        listed.push("variables.tg_lists");
    }
    if let Some(rules) = rules {
        variables.push(Variable {
            name: "tg_rules".into(),
            expression: gated(rules, &format!("[{NOT_CHECKED}]")),
        });
        listed.push("variables.tg_rules");
    }
    if let Some(immutable) = immutable {
        variables.push(Variable {
            name: "tg_immutable".into(),
            expression: immutable,
        });
        listed.push("variables.tg_immutable");
    }
    variables.push(Variable {
        name: "tg_violations".into(),
        expression: listed.join(" + "),
    });
    let kind = text::string(&policy.matcher.kind);
    let (message_expression, message) = match policy.enforcement {
        Enforcement::Enforce => (
            format!(
                "{kind} + (request.name == '' ? '' : ' \"' + request.name + '\"') + ' is invalid: ' + variables.tg_violations.join('; ')"
            ),
            format!(
                "{} is invalid (too many violations to list here; `tollgate review` lists them)",
                policy.matcher.kind
            ),
        ),
        Enforcement::Warn => (
            format!(
                "variables.tg_violations.map(v, {} + v).join('; ')",
                text::string(&format!("policy {:?} (warn): ", policy.name))
            ),
            format!(
                "policy {:?} (warn): too many violations to list here",
                policy.name
            ),
        ),
    };
    let cost = total_cost(variables.iter().map(|v| v.expression.as_str()), cost_of);
    let mut programs = vec![Validating {
        suffix: "",
        operations: policy.matcher.operations.clone(),
        variables,
        expression: "size(variables.tg_violations) == 0".into(),
        message_expression,
        message,
        warn: policy.enforcement == Enforcement::Warn,
        cost,
    }];
    let ratcheted = match (ratcheted_schema, ratcheted_rules) {
        (None, None) => None,
        (Some(schema), None) => Some(schema),
        (schema, Some(rules)) => Some(
            [schema, Some(gated(rules, "[]"))]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" + "),
        ),
    };
    if let Some(ratcheted) = ratcheted
        && policy.matcher.operations.contains(&OperationName::Update)
    {
        let variables = vec![
            restore,
            blocking_variable,
            Variable {
                name: "tg_ratcheted".into(),
                expression: ratcheted,
            },
        ];
        let cost = total_cost(variables.iter().map(|v| v.expression.as_str()), cost_of);
        programs.push(Validating {
            suffix: "-ratcheted",
            operations: vec![OperationName::Update],
            variables,
            expression: "size(variables.tg_ratcheted) == 0".into(),
            message_expression: format!(
                "variables.tg_ratcheted.map(v, {} + v + ' (admitted: unchanged since it was stored)').join('; ')",
                text::string(&format!("policy {:?}: ", policy.name))
            ),
            message: format!(
                "policy {:?}: values that would now be refused were admitted unchanged",
                policy.name
            ),
            warn: true,
            cost,
        });
    }
    let over: Vec<Unsupported> = programs.iter().filter_map(|p| over_limit(p.cost)).collect();
    if !over.is_empty() {
        return Part::Webhook(over);
    }
    Part::InTree(programs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(schema: &str) -> InTree {
        let text = format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: Policy\nmetadata: {{name: p}}\nspec:\n  match: {{group: g.test, kind: K, resource: ks, versions: [v1]}}\n  schema: {schema}\n"
        );
        let store = crate::policy::load_str(std::path::Path::new("p.yaml"), &text)
            .unwrap_or_else(|e| panic!("{e}"));
        let options = Options {
            restorer: Some("system:serviceaccount:tollgate:tollgate-reconciler".into()),
        };
        compile(&store.policies()[0], &options)
    }

    fn reasons(part: &Part<Vec<Validating>>) -> Vec<String> {
        match part {
            Part::Webhook(reasons) => reasons
                .iter()
                .map(|r| format!("{}: {}", r.at, r.reason))
                .collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn the_shipped_example_compiles_but_for_conversion() {
        let store = crate::policy::load_dir(std::path::Path::new("../policies"))
            .unwrap_or_else(|e| panic!("{e}"));
        let options = Options { restorer: None };
        let compiled = compile(&store.policies()[0], &options);
        assert!(
            compiled.validating.in_tree().is_some(),
            "{:?}",
            reasons(&compiled.validating)
        );
        assert!(compiled.mutating.in_tree().is_some());
        assert!(compiled.conversion);
    }

    #[test]
    fn what_cannot_be_judged_exactly_stays_with_the_webhook_and_says_why() {
        let with_format = compiled("{properties: {host: {type: string, format: hostname}}}");
        assert_eq!(
            reasons(&with_format.validating),
            [
                "spec.schema.properties.host.format: format \"k8s-hostname\" is checked by the webhook (its checks are Go code in the apiserver, not CEL)"
            ]
        );
        let with_pattern_format = compiled("{properties: {id: {type: string, format: uuid}}}");
        assert!(with_pattern_format.validating.in_tree().is_some());
        let embedded_rule = compiled(
            "{properties: {template: {type: object, x-kubernetes-embedded-resource: true, x-kubernetes-preserve-unknown-fields: true, x-kubernetes-validations: [{rule: 'self.kind != \"\"'}]}}}",
        );
        assert!(reasons(&embedded_rule.validating)[0].contains("embedded resource completed"));
        let all_of = compiled("{allOf: [{required: [a]}]}");
        assert!(all_of.validating.in_tree().is_some());
        let any_of = compiled("{anyOf: [{required: [a]}, {required: [b]}]}");
        assert!(any_of.validating.in_tree().is_some());
        let pattern_properties = compiled("{patternProperties: {'^x': {type: string}}}");
        assert!(pattern_properties.validating.in_tree().is_some());
        let beside_additional = compiled(
            "{patternProperties: {'^x': {type: string}}, additionalProperties: {type: integer}}",
        );
        assert!(
            reasons(&beside_additional.validating)[0]
                .contains("beside an additionalProperties schema")
        );
        let if_then = compiled("{if: {required: [a]}, then: {required: [b]}}");
        assert!(reasons(&if_then.validating)[0].contains("the keyword if is not compiled"));
        let fractional = compiled("{properties: {f: {type: number, multipleOf: 0.5}}}");
        assert!(reasons(&fractional.validating)[0].contains("multipleOf is compiled only"));
        let rules_in_branch =
            compiled("{allOf: [{x-kubernetes-validations: [{rule: 'has(self.a)'}]}]}");
        assert!(reasons(&rules_in_branch.validating)[0].contains("inside allOf, a $ref target"));
        let recursive = compiled(
            "{$defs: {node: {type: object, properties: {next: {$ref: '#/$defs/node'}}}}, properties: {list: {$ref: '#/$defs/node'}}}",
        );
        assert!(reasons(&recursive.validating)[0].contains("is recursive"));
        let escaped = compiled(
            "{properties: {spec: {type: object, x-kubernetes-validations: [{rule: 'self.a__dash__b != 1'}], properties: {a-b: {type: integer}}}}}",
        );
        assert!(reasons(&escaped.validating)[0].contains("escaped name"));
        // A rule that reads neither the escaped name nor its object whole compiles.
        let elsewhere = compiled(
            "{properties: {spec: {type: object, x-kubernetes-validations: [{rule: 'self.b != 1'}], properties: {a-b: {type: integer}, b: {type: integer}}}}}",
        );
        assert!(
            elsewhere.validating.in_tree().is_some(),
            "{:?}",
            reasons(&elsewhere.validating)
        );
    }

    #[test]
    fn a_warn_policy_warns_and_a_ratcheting_policy_warns_on_update_only() {
        let plain = compiled("{properties: {n: {type: integer, maximum: 3}}}");
        let Part::InTree(programs) = &plain.validating else {
            panic!("{:?}", reasons(&plain.validating));
        };
        assert_eq!(programs.len(), 2);
        assert!(!programs[0].warn);
        assert_eq!(programs[1].suffix, "-ratcheted");
        assert!(programs[1].warn);
        assert_eq!(programs[1].operations, [OperationName::Update]);
        assert!(
            plain
                .validation_conditions
                .iter()
                .any(|(n, _)| n == "tollgate-not-letting-go")
        );
        assert!(plain.match_conditions.is_empty());
    }

    #[test]
    fn a_restore_is_recognised_by_user_and_a_new_marker() {
        let expression = policy_level::restore_expression(Some("sa"));
        assert!(expression.starts_with("oldObject != null && request.userInfo.username == 'sa'"));
        assert!(expression.contains("'tollgate.dev/restored'"));
        assert_eq!(policy_level::restore_expression(None), "false");
    }
}
