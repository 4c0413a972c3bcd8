//! `x-kubernetes-validations` with the semantics of CRD validation rules.
//!
//! Compiled once into a tree that holds only the schema nodes with rules (and the path to
//! them), so evaluation walks just those parts of the object. At each such node, `self` (and
//! `oldSelf` for transition rules) is converted from JSON once, restricted to the fields the
//! node's rules and messages can read.

use std::sync::Arc;

use kube_cel::cel::common::types::CelOptional;
use kube_cel::cel::{Context, Value as CelValue};
use serde::Deserialize;
use serde_json::Value;

use super::cost::{SchemaBudget, Scope};
use super::projection::Projection;
use super::values::{Keys, ValueSchema, bind, convert};
use super::{Expression, RULES_KEY, compile_expression};
use crate::instance::Instance;
use crate::path::{FieldPath, Segment, escape_pointer};
use crate::validate::Violation;

/// One entry of `x-kubernetes-validations`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleSpec {
    rule: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    message_expression: Option<String>,
    /// Accepted for compatibility; the denial is always Forbidden.
    #[serde(default)]
    #[allow(dead_code)]
    reason: Option<String>,
    #[serde(default)]
    field_path: Option<String>,
    #[serde(default)]
    optional_old_self: Option<bool>,
}

struct Rule {
    expression: Expression,
    /// Where a failure is reported, relative to the node.
    field_path: FieldPath,
    /// Reads `oldSelf`: runs on UPDATE only, unless `optional_old_self`.
    transition: bool,
    optional_old_self: bool,
}

#[derive(Default)]
struct RuleNode {
    rules: Vec<Rule>,
    /// The schema `self` and `oldSelf` have, the one `rules` were compiled for.
    schema: Arc<ValueSchema>,
    self_projection: Projection,
    old_projection: Projection,
    properties: Vec<(String, RuleNode)>,
    items: Option<Box<RuleNode>>,
    /// `x-kubernetes-list-type: map` keys: how list items correlate with their old selves.
    list_map_keys: Option<Vec<String>>,
    additional: Option<Box<RuleNode>>,
    /// Keys `additionalProperties` does not cover (declared in `properties`).
    declared: Vec<String>,
    branches: Vec<RuleNode>,
}

/// The compiled schema rules of one policy.
pub struct SchemaRules {
    root: RuleNode,
    /// Whether any rule or message iterates (asked on every request, so found at load).
    iterates: bool,
}

impl std::fmt::Debug for SchemaRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRules").finish_non_exhaustive()
    }
}

impl SchemaRules {
    /// `Ok(None)` when the schema has no rules; `Err` lists every rule that does not compile,
    /// as (JSON pointer inside the schema, message).
    pub fn compile(schema: &Value) -> Result<Option<Self>, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let mut budget = SchemaBudget::default();
        let root = build(schema, &Site::root(schema), &mut budget, &mut errors);
        errors.extend(budget.errors());
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(root.map(|root| Self {
            iterates: node_iterates(&root),
            root,
        }))
    }

    /// Whether any rule or message iterates over a list or map.
    pub fn iterates(&self) -> bool {
        self.iterates
    }

    /// Every rule that fails for `object` (with `old_object` for transition rules), split
    /// into those that deny and those ratcheting lets through (`crate::ratchet`): a rule that
    /// does not read `oldSelf`, failing on a value that did not change.
    ///
    /// With `state_only`, rules that read `oldSelf` are left out: a restore returns to a state
    /// that was admitted, and is judged on that state alone.
    pub fn violations(
        &self,
        object: Instance<'_>,
        old_object: Option<Instance<'_>>,
        state_only: bool,
    ) -> Failures {
        let mut out = Failures::default();
        super::with_base(|base| {
            walk(
                &self.root,
                Pair {
                    value: object,
                    old: old_object,
                    anchor: old_object.map(|old| (object, old)),
                },
                &mut WalkPath::new(),
                &mut out,
                Run { base, state_only },
            );
        });
        out
    }
}

fn node_iterates(node: &RuleNode) -> bool {
    node.rules.iter().any(|r| r.expression.iterates())
        || node.properties.iter().any(|(_, c)| node_iterates(c))
        || node.items.as_deref().is_some_and(node_iterates)
        || node.additional.as_deref().is_some_and(node_iterates)
        || node.branches.iter().any(node_iterates)
}

/// Where a schema node sits: its JSON pointer, the cost scope of its rules, the schema that
/// types `self` there, and the first ancestor below which old and new values cannot be
/// correlated (where `oldSelf` is refused).
struct Site<'s> {
    pointer: String,
    scope: Scope,
    typed_by: &'s Value,
    uncorrelatable: Option<String>,
}

impl<'s> Site<'s> {
    fn root(schema: &'s Value) -> Self {
        Self {
            pointer: String::new(),
            scope: Scope::root(),
            typed_by: schema,
            uncorrelatable: None,
        }
    }

    /// The site of `child`, found at `step` below the node `schema` describes; `correlates`
    /// says whether old and new values still pair up across that step.
    fn child(&self, schema: &Value, child: &'s Value, step: &str, correlates: bool) -> Self {
        let uncorrelatable = match (&self.uncorrelatable, correlates) {
            (Some(above), _) => Some(above.clone()),
            (None, true) => None,
            (None, false) => Some(self.pointer.clone()),
        };
        Self {
            pointer: format!("{}/{step}", self.pointer),
            scope: self.scope.child(schema, child),
            typed_by: child,
            uncorrelatable,
        }
    }

    /// A branch (`allOf`...) judges the same value: its rules run where the node's do, with
    /// the node's types.
    fn branch(&self, step: &str) -> Self {
        Self {
            pointer: format!("{}/{step}", self.pointer),
            scope: self.scope.clone(),
            typed_by: self.typed_by,
            uncorrelatable: self.uncorrelatable.clone(),
        }
    }
}

/// The node for `schema` if it or anything below it has rules.
fn build<'s>(
    schema: &'s Value,
    site: &Site<'s>,
    budget: &mut SchemaBudget,
    errors: &mut Vec<(String, String)>,
) -> Option<RuleNode> {
    let pointer = &site.pointer;
    let object = schema.as_object()?;
    for nested in ["$defs", "definitions"] {
        if object
            .get(nested)
            .is_some_and(|d| d.to_string().contains(RULES_KEY))
        {
            errors.push((
                format!("{pointer}/{nested}"),
                format!(
                    "{RULES_KEY} inside {nested} are not evaluated; put them on the property itself"
                ),
            ));
        }
    }
    let mut node = RuleNode::default();
    if let Some((rules, rules_schema)) = compile_rules(schema, site, budget, errors) {
        node.rules = rules;
        node.schema = rules_schema;
    }
    if let Some(properties) = object.get("properties").and_then(Value::as_object) {
        // Properties of an atomic map are replaced whole: nothing below pairs with an old value.
        let correlates = object.get("x-kubernetes-map-type") != Some(&Value::from("atomic"));
        for (name, child) in properties {
            let step = format!("properties/{}", escape_pointer(name));
            let at = site.child(schema, child, &step, correlates);
            if let Some(child) = build(child, &at, budget, errors) {
                node.properties.push((name.clone(), child));
            }
        }
    }
    node.items = object
        .get("items")
        .and_then(|items| {
            // Only the items of a map list pair with old items (by their keys).
            let correlates = object.get("x-kubernetes-list-type") == Some(&Value::from("map"));
            let at = site.child(schema, items, "items", correlates);
            build(items, &at, budget, errors)
        })
        .map(Box::new);
    if node.items.is_some() && object.get("x-kubernetes-list-type") == Some(&Value::from("map")) {
        node.list_map_keys = crate::schema::listtype::map_keys(object);
    }
    node.additional = object
        .get("additionalProperties")
        .and_then(|a| {
            let at = site.child(schema, a, "additionalProperties", true);
            build(a, &at, budget, errors)
        })
        .map(Box::new);
    if node.additional.is_some() {
        node.declared = object
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
    }
    for keyword in ["allOf", "oneOf", "anyOf"] {
        for (idx, branch) in object
            .get(keyword)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let at = site.branch(&format!("{keyword}/{idx}"));
            if let Some(branch) = build(branch, &at, budget, errors) {
                node.branches.push(branch);
            }
        }
    }
    let has_rules = !node.rules.is_empty()
        || !node.properties.is_empty()
        || node.items.is_some()
        || node.additional.is_some()
        || !node.branches.is_empty();
    if !has_rules {
        return None;
    }
    if !node.rules.is_empty() {
        for rule in &node.rules {
            for program in rule.expression.programs() {
                node.self_projection.add_uses(program.expression(), "self");
                node.old_projection
                    .add_uses(program.expression(), "oldSelf");
            }
        }
    }
    Some(node)
}

/// The node's rules, with the schema of the value they judge (`None` where it has none).
fn compile_rules(
    schema: &Value,
    site: &Site,
    budget: &mut SchemaBudget,
    errors: &mut Vec<(String, String)>,
) -> Option<(Vec<Rule>, Arc<ValueSchema>)> {
    let (pointer, scope) = (&site.pointer, &site.scope);
    let specs = schema.get(RULES_KEY)?;
    let Some(specs) = specs.as_array() else {
        errors.push((
            format!("{pointer}/{RULES_KEY}"),
            "must be a list of rules".into(),
        ));
        return None;
    };
    let value_schema = Arc::new(ValueSchema::new(schema));
    let typed = scope.types(site.typed_by);
    let mut rules = Vec::new();
    for (idx, spec) in specs.iter().enumerate() {
        let at = format!("{pointer}/{RULES_KEY}/{idx}");
        let spec: RuleSpec = match serde_json::from_value(spec.clone()) {
            Ok(spec) => spec,
            Err(e) => {
                errors.push((at, format!("invalid rule: {e}")));
                continue;
            }
        };
        let program = compile_expression(&spec.rule, format!("{at}/rule"), errors);
        let message_program = spec
            .message_expression
            .as_ref()
            .and_then(|m| compile_expression(m, format!("{at}/messageExpression"), errors));
        let field_path = match spec
            .field_path
            .as_deref()
            .map(|p| p.trim_start_matches('.'))
        {
            None | Some("") => FieldPath::default(),
            Some(text) => match FieldPath::parse(text) {
                Ok(path) => path,
                Err(e) => {
                    errors.push((format!("{at}/fieldPath"), e.to_string()));
                    continue;
                }
            },
        };
        let optional_old_self = spec.optional_old_self == Some(true);
        // As the apiserver does for CRDs: a rule whose worst case exceeds the cost budget
        // (unbounded lists or strings) is refused.
        if let Some(typed) = &typed {
            if let Some(program) = &program {
                let cost =
                    typed.rule_cost(typed.expression_cost(program.expression(), optional_old_self));
                budget.charge(format!("{at}/rule"), "estimated rule cost", cost, errors);
            }
            if let Some(message) = &message_program {
                let cost = typed.expression_cost(message.expression(), optional_old_self);
                let what = "estimated messageExpression cost";
                budget.charge(format!("{at}/messageExpression"), what, cost, errors);
            }
        }
        let Some(program) = program else {
            continue;
        };
        let transition = program.references().has_variable("oldSelf");
        if transition && let Some(above) = &site.uncorrelatable {
            errors.push((
                format!("{at}/rule"),
                format!(
                    "oldSelf cannot be used on the uncorrelatable portion of the schema within {}",
                    dotted(above)
                ),
            ));
        } else if !transition && spec.optional_old_self.is_some() {
            errors.push((
                format!("{at}/optionalOldSelf"),
                "may not be set if oldSelf is not used in rule".into(),
            ));
        }
        rules.push(Rule {
            transition,
            expression: Expression::new("rule", &spec.rule, program, spec.message, message_program),
            field_path,
            optional_old_self,
        });
    }
    Some((rules, value_schema))
}

/// A pointer inside the policy's schema as its errors name it: `spec.schema.properties.spec`.
fn dotted(pointer: &str) -> String {
    crate::path::keys_from_pointer(pointer)
        .iter()
        .fold("spec.schema".to_string(), |out, key| format!("{out}.{key}"))
}

/// The rules' failures: those that deny, and those ratcheting admitted.
#[derive(Debug, Default)]
pub struct Failures {
    pub denied: Vec<Violation>,
    pub ratcheted: Vec<Violation>,
}

/// A value with its old self where one correlates, and the nearest pair above it (or itself)
/// that correlates: what ratcheting compares.
#[derive(Clone, Copy)]
struct Pair<'a> {
    value: Instance<'a>,
    old: Option<Instance<'a>>,
    anchor: Option<(Instance<'a>, Instance<'a>)>,
}

impl<'a> Pair<'a> {
    fn child(self, value: Instance<'a>, old: Option<Instance<'a>>) -> Self {
        Self {
            value,
            old,
            anchor: old.map(|old| (value, old)).or(self.anchor),
        }
    }

    fn unchanged(&self) -> bool {
        self.anchor.is_some_and(|(value, old)| value == old)
    }
}

/// Where the walk is: borrowed from the rules and the object, made into a `FieldPath` only for
/// a violation (a key copied at every step cost an allocation per field with rules).
#[derive(Clone, Copy)]
enum At<'a> {
    Key(&'a str),
    Index(usize),
}

/// The walk's position from the root. Rule trees are shallow: held inline, the path costs no
/// allocation per review (as a `Vec` it was one of the few a small review made).
type WalkPath<'a> = smallvec::SmallVec<[At<'a>; 8]>;

/// What one walk over an object evaluates, with what.
#[derive(Clone, Copy)]
struct Run<'c> {
    base: &'c Context<'static>,
    /// Only the rules about the object's state: none that reads `oldSelf` (a restore).
    state_only: bool,
}

fn walk<'a>(
    node: &'a RuleNode,
    at: Pair<'a>,
    path: &mut WalkPath<'a>,
    out: &mut Failures,
    run: Run<'_>,
) {
    let Pair { value, old, .. } = at;
    if !node.rules.is_empty() {
        evaluate(node, at, path, out, run);
    }
    for (name, child) in &node.properties {
        if let Some(child_value) = value.get(name) {
            path.push(At::Key(name));
            walk(
                child,
                at.child(child_value, old.and_then(|o| o.get(name))),
                path,
                out,
                run,
            );
            path.pop();
        }
    }
    if let (Some(items), Some(_)) = (&node.items, value.array_len()) {
        for (idx, item) in value.items().enumerate() {
            let old_item = node
                .list_map_keys
                .as_deref()
                .and_then(|keys| crate::ratchet::map_list_item(item, old?, keys));
            path.push(At::Index(idx));
            walk(items, at.child(item, old_item), path, out, run);
            path.pop();
        }
    }
    if let (Some(additional), Some(_)) = (&node.additional, value.object_len()) {
        for (key, child_value) in value.members() {
            if node.declared.iter().any(|d| d == key) {
                continue;
            }
            path.push(At::Key(key));
            walk(
                additional,
                at.child(child_value, old.and_then(|o| o.get(key))),
                path,
                out,
                run,
            );
            path.pop();
        }
    }
    for branch in &node.branches {
        walk(branch, at, path, out, run);
    }
}

fn evaluate(node: &RuleNode, at: Pair<'_>, path: &[At<'_>], out: &mut Failures, run: Run<'_>) {
    let Pair { value, old, .. } = at;
    // A transition rule without an old value (CREATE, or a field the old object lacked) is
    // not evaluated at all, as in Kubernetes; an optional `oldSelf` is bound either way.
    let runs = |rule: &&Rule| {
        !(run.state_only && rule.transition)
            && (rule.optional_old_self || !rule.transition || old.is_some())
    };
    if !node.rules.iter().any(|rule| runs(&rule)) {
        return;
    }
    let mut scope = run.base.new_inner_scope();
    if node.self_projection.is_used() {
        let value = convert(
            value,
            Some(&*node.schema),
            &node.self_projection,
            Keys::Escaped,
        );
        bind(&mut scope, "self", value);
    }
    let old_value = match old {
        Some(old) if node.old_projection.is_used() => Some(convert(
            old,
            Some(&*node.schema),
            &node.old_projection,
            Keys::Escaped,
        )),
        _ => None,
    };
    let has_old = old_value.is_some();
    // The old value is moved into the scope unless an `optionalOldSelf` rule wraps it again.
    let optional_runs = node
        .rules
        .iter()
        .any(|rule| runs(&rule) && rule.optional_old_self);
    let old_for_optional = match old_value {
        Some(old_value) if optional_runs => {
            bind(&mut scope, "oldSelf", old_value.clone_as_boxed());
            Some(old_value)
        }
        Some(old_value) => {
            bind(&mut scope, "oldSelf", old_value);
            None
        }
        None => None,
    };
    for rule in node.rules.iter().filter(runs) {
        let optional_scope;
        let ctx = if rule.optional_old_self {
            // Kubernetes binds an optional here: `oldSelf.hasValue()`, `oldSelf.value()`.
            let mut inner = scope.new_inner_scope();
            let optional = match &old_for_optional {
                Some(v) => CelOptional::of(v.clone_as_boxed()),
                None => CelOptional::none(),
            };
            bind(&mut inner, "oldSelf", Box::new(optional));
            optional_scope = inner;
            &optional_scope
        } else if rule.transition && !has_old {
            continue;
        } else {
            &scope
        };
        let expression = &rule.expression;
        let message = match expression.program.execute(ctx) {
            Ok(CelValue::Bool(true)) => continue,
            Ok(CelValue::Bool(false)) => expression.message_when_false(ctx),
            Ok(_) => format!("rule \"{}\" did not evaluate to bool", expression.text),
            Err(e) => format!("rule evaluation error: {e}"),
        };
        let found = violation(path, rule, message);
        if !rule.transition && at.unchanged() {
            out.ratcheted.push(found);
        } else {
            out.denied.push(found);
        }
    }
}

fn violation(path: &[At<'_>], rule: &Rule, message: String) -> Violation {
    let mut at: Vec<Segment> = path
        .iter()
        .map(|step| match *step {
            At::Key(key) => Segment::Key(key.to_string()),
            At::Index(index) => Segment::Index(index),
        })
        .collect();
    at.extend(rule.field_path.0.iter().cloned());
    Violation {
        path: FieldPath(at),
        message,
    }
}
