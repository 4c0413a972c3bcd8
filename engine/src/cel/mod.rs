//! CEL rules, in the two syntaxes Kubernetes users already write (the `cel` interpreter with the
//! Kubernetes libraries of kube-cel, the crate behind kube's `cel` feature):
//!
//! - `x-kubernetes-validations` anywhere in a policy's schema, with CRD validation-rule semantics
//!   (`self`, transition rules with `oldSelf`, `optionalOldSelf`, `messageExpression`, `reason`,
//!   `fieldPath`);
//! - `spec.validations` and `spec.matchConditions` in the style of ValidatingAdmissionPolicy, with
//!   `object`, `oldObject` and `request`.
//!
//! Everything is compiled once at load; a rule that does not compile is a load error pointing at
//! its line. Messages come from the policy (`message` / `messageExpression`) or name the rule,
//! never the submitted values. At evaluation only the fields an expression can read are
//! converted to CEL values (`projection`), in one shared per-thread context holding the
//! Kubernetes CEL libraries.

mod cost;
mod escape;
mod projection;
mod schema_rules;
mod values;

use std::borrow::Cow;

use kube_cel::KubeCelExt;
use kube_cel::cel::common::types::CelNull;
use kube_cel::cel::{Context, Program, Value as CelValue};
use serde::Deserialize;

use crate::instance::Instance;
use crate::path::FieldPath;
use crate::validate::Violation;
use projection::Projection;
pub use schema_rules::{Failures, SchemaRules};
use values::Keys;

pub(crate) const RULES_KEY: &str = "x-kubernetes-validations";
pub(crate) use escape::{CEL_RESERVED_WORDS, escape_field_name};

/// `spec.validations[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValidationSpec {
    pub expression: String,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub message_expression: Option<String>,
    /// Accepted for compatibility with ValidatingAdmissionPolicy; the denial is always Forbidden.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `spec.matchConditions[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MatchConditionSpec {
    pub name: String,
    pub expression: String,
}

/// What policy-level expressions see: `object`, `oldObject` and `request`.
#[derive(Debug, Clone, Copy)]
pub struct Bindings<'a> {
    pub object: Instance<'a>,
    pub old_object: Option<Instance<'a>>,
    pub operation: &'a str,
    pub namespace: Option<&'a str>,
    pub request: &'a RequestInfo<'a>,
}

/// Who asks, and how: what `request` holds for policy-level expressions.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestInfo<'a> {
    pub name: &'a str,
    pub username: &'a str,
    pub groups: &'a [Cow<'a, str>],
    pub dry_run: bool,
}

/// One compiled expression with its failure message: a schema rule or a policy-level
/// validation or match condition.
struct Expression {
    text: String,
    program: Program,
    message: Option<String>,
    message_program: Option<Program>,
    /// How the default message names it: "rule" or "expression".
    label: &'static str,
}

impl Expression {
    fn new(
        label: &'static str,
        text: &str,
        program: Program,
        message: Option<String>,
        message_program: Option<Program>,
    ) -> Self {
        Self {
            text: text.to_string(),
            program,
            message,
            message_program,
            label,
        }
    }

    /// The expression and its message expression.
    fn programs(&self) -> impl Iterator<Item = &Program> {
        std::iter::once(&self.program).chain(&self.message_program)
    }

    fn iterates(&self) -> bool {
        self.programs()
            .any(|p| projection::iterates(p.expression()))
    }

    /// The message when the expression is false: its `messageExpression` when that yields a
    /// string, else its `message`, else one naming it.
    fn message_when_false(&self, ctx: &Context<'_>) -> String {
        self.message_program
            .as_ref()
            .and_then(|p| match p.execute(ctx) {
                Ok(CelValue::String(s)) => Some(s.to_string()),
                _ => None,
            })
            .unwrap_or_else(|| self.static_message())
    }

    fn static_message(&self) -> String {
        self.message
            .clone()
            .unwrap_or_else(|| format!("failed {}: {}", self.label, self.text))
    }
}

/// Compiled `spec.matchConditions` and `spec.validations` of one policy.
pub struct PolicyRules {
    conditions: Vec<(String, Expression)>,
    validations: Vec<Expression>,
    /// Per validation: whether it reads `oldObject` (a transition rule; a restore skips it).
    transitions: Vec<bool>,
    /// What the expressions read of `object`, `oldObject` and `request`.
    object: Projection,
    old_object: Projection,
    request: Projection,
    /// Whether any expression iterates (asked on every request, so found at load).
    iterates: bool,
}

impl std::fmt::Debug for PolicyRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.conditions.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("PolicyRules")
            .field("conditions", &names)
            .field("validations", &self.validations.len())
            .finish()
    }
}

/// Whether the match conditions let the policy apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applies {
    Yes,
    No,
    /// A condition could not be evaluated: the policy applies (fail closed) with this problem.
    Error(String),
}

thread_local! {
    // Registering every Kubernetes CEL function costs tens of microseconds: once per thread,
    // then each request only adds its variables in an inner scope.
    static BASE: Context<'static> = {
        let mut context = Context::default().with_all();
        context.add_function("size", size);
        context
    };
}

/// `size()` as the CEL spec and Kubernetes define it: a string's size is its number of Unicode
/// code points (the interpreter's built-in counts UTF-8 bytes).
fn size(
    ftx: &kube_cel::cel::FunctionContext,
    kube_cel::cel::extractors::This(this): kube_cel::cel::extractors::This<CelValue>,
) -> Result<i64, kube_cel::cel::ExecutionError> {
    let size = match this {
        CelValue::List(l) => l.len(),
        CelValue::Map(m) => m.map.len(),
        CelValue::String(s) => s.chars().count(),
        CelValue::Bytes(b) => b.len(),
        other => return Err(ftx.error(format!("cannot determine the size of {other:?}"))),
    };
    i64::try_from(size).map_err(|_| ftx.error("size does not fit in an int"))
}

fn with_base<T>(f: impl FnOnce(&Context<'static>) -> T) -> T {
    BASE.with(f)
}

/// The apiserver's estimated worst-case cost of one CEL expression over a value of `schema`
/// (`self`, and `oldSelf` beside it), before it is multiplied by how often the rule can run:
/// what `x-kubernetes-validations` and the in-tree policies tollgate writes are held to.
pub fn estimated_cost(expression: &str, schema: &serde_json::Value) -> Result<u64, String> {
    let program = Program::compile(expression).map_err(|e| e.to_string())?;
    let typed =
        cost::Typed::of(schema).ok_or_else(|| "the schema declares no CEL type".to_string())?;
    Ok(typed.expression_cost(program.expression(), false))
}

/// The apiserver's estimated worst-case cost of one admission-policy expression (a
/// ValidatingAdmissionPolicy's or MutatingAdmissionPolicy's), with `object` and `oldObject`
/// typed by the policy's `schema` and everything else `dyn`.
pub fn estimated_admission_cost(
    expression: &str,
    schema: &serde_json::Value,
) -> Result<u64, String> {
    let program = Program::compile(expression).map_err(|e| e.to_string())?;
    let typed =
        cost::Typed::of(schema).ok_or_else(|| "the schema declares no CEL type".to_string())?;
    Ok(typed.admission_cost(program.expression()))
}

/// Whether `text` (a CEL expression) reads `variable`; `false` when it does not compile.
pub(crate) fn references(text: &str, variable: &str) -> bool {
    Program::compile(text).is_ok_and(|p| p.references().has_variable(variable))
}

/// Whether `text` can read the value at `path` (property names as written) below `variable`,
/// or all of it; `true` when it does not compile.
pub(crate) fn reads_path(text: &str, variable: &str, path: &[String]) -> bool {
    let Ok(program) = Program::compile(text) else {
        return true;
    };
    let mut uses = Projection::default();
    uses.add_uses(program.expression(), variable);
    let mut at = &uses;
    for step in path {
        if matches!(at, Projection::Whole) {
            return true;
        }
        let Some(below) = escape_field_name(step).and_then(|name| at.field(&name)) else {
            return false;
        };
        at = below;
    }
    at.is_used()
}

/// Whether a rule at a resource's root can read `self.metadata` (which CRD rules see trimmed
/// to `name` and `generateName`).
pub(crate) fn reads_root_metadata(text: &str) -> bool {
    let Ok(program) = Program::compile(text) else {
        return true;
    };
    let mut uses = Projection::default();
    uses.add_uses(program.expression(), "self");
    uses.field("metadata").is_some()
}

fn compile_expression(
    text: &str,
    pointer: String,
    errors: &mut Vec<(String, String)>,
) -> Option<Program> {
    match Program::compile(text) {
        Ok(program) => Some(program),
        Err(e) => {
            errors.push((pointer, format!("failed to compile {text:?}: {e}")));
            None
        }
    }
}

impl PolicyRules {
    /// `Ok(None)` when there is nothing to compile; `Err` lists (JSON pointer, message) of every
    /// expression that does not compile.
    pub fn compile(
        conditions: &[MatchConditionSpec],
        validations: &[ValidationSpec],
    ) -> Result<Option<Self>, Vec<(String, String)>> {
        if conditions.is_empty() && validations.is_empty() {
            return Ok(None);
        }
        let mut errors = Vec::new();
        let mut compiled_conditions = Vec::new();
        for (idx, c) in conditions.iter().enumerate() {
            let at = format!("/spec/matchConditions/{idx}/expression");
            if let Some(program) = compile_expression(&c.expression, at, &mut errors) {
                compiled_conditions.push((
                    c.name.clone(),
                    Expression::new("expression", &c.expression, program, None, None),
                ));
            }
        }
        let mut compiled_validations = Vec::new();
        for (idx, v) in validations.iter().enumerate() {
            let at = format!("/spec/validations/{idx}/expression");
            let program = compile_expression(&v.expression, at, &mut errors);
            let message_program = v.message_expression.as_ref().and_then(|m| {
                compile_expression(
                    m,
                    format!("/spec/validations/{idx}/messageExpression"),
                    &mut errors,
                )
            });
            if let Some(program) = program {
                compiled_validations.push(Expression::new(
                    "expression",
                    &v.expression,
                    program,
                    v.message.clone(),
                    message_program,
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut rules = Self {
            conditions: compiled_conditions,
            transitions: compiled_validations
                .iter()
                .map(|v| v.program.references().has_variable("oldObject"))
                .collect(),
            validations: compiled_validations,
            object: Projection::Unused,
            old_object: Projection::Unused,
            request: Projection::Unused,
            iterates: false,
        };
        let (mut object, mut old_object, mut request) = Default::default();
        for program in rules.expressions().flat_map(Expression::programs) {
            Projection::add_uses(&mut object, program.expression(), "object");
            Projection::add_uses(&mut old_object, program.expression(), "oldObject");
            Projection::add_uses(&mut request, program.expression(), "request");
        }
        (rules.object, rules.old_object, rules.request) = (object, old_object, request);
        let iterates = rules.expressions().any(Expression::iterates);
        rules.iterates = iterates;
        Ok(Some(rules))
    }

    /// Runs `f` with a context holding the bindings (as far as the expressions read them).
    fn with_context<T>(&self, bindings: &Bindings<'_>, f: impl FnOnce(&Context<'_>) -> T) -> T {
        with_base(|base| {
            let mut ctx = base.new_inner_scope();
            if self.object.is_used() {
                let object = values::convert(bindings.object, None, &self.object, Keys::AsIs);
                values::bind(&mut ctx, "object", object);
            }
            if self.old_object.is_used() {
                let old = bindings.old_object.map_or_else(
                    || Box::new(CelNull) as values::CelVal,
                    |o| values::convert(o, None, &self.old_object, Keys::AsIs),
                );
                values::bind(&mut ctx, "oldObject", old);
            }
            if self.request.is_used() {
                let request =
                    request_value(bindings.operation, bindings.namespace, bindings.request);
                values::bind(&mut ctx, "request", request);
            }
            f(&ctx)
        })
    }

    /// Whether any expression iterates over a list or map.
    pub fn iterates(&self) -> bool {
        self.iterates
    }

    fn expressions(&self) -> impl Iterator<Item = &Expression> {
        self.conditions
            .iter()
            .map(|(_, c)| c)
            .chain(&self.validations)
    }

    pub fn applies(&self, bindings: &Bindings<'_>) -> Applies {
        if self.conditions.is_empty() {
            return Applies::Yes;
        }
        self.with_context(bindings, |ctx| {
            for (name, condition) in &self.conditions {
                match condition.program.execute(ctx) {
                    Ok(CelValue::Bool(true)) => {}
                    Ok(CelValue::Bool(false)) => return Applies::No,
                    Ok(other) => {
                        return Applies::Error(format!(
                            "matchCondition {name:?} could not be evaluated: it returned {other:?}, not a boolean"
                        ));
                    }
                    Err(e) => {
                        return Applies::Error(format!(
                            "matchCondition {name:?} could not be evaluated: {e}"
                        ));
                    }
                }
            }
            Applies::Yes
        })
    }

    /// Every validation that fails; with `state_only`, those reading `oldObject` are left out
    /// (a restore is judged on the state it returns to).
    pub fn violations(&self, bindings: &Bindings<'_>, state_only: bool) -> Vec<Violation> {
        if self.validations.is_empty() {
            return Vec::new();
        }
        self.with_context(bindings, |ctx| {
            self.validations
                .iter()
                .zip(&self.transitions)
                .filter(|(_, transition)| !(state_only && **transition))
                .filter_map(|(v, _)| {
                    let message = match v.program.execute(ctx) {
                        Ok(CelValue::Bool(true)) => return None,
                        Ok(CelValue::Bool(false)) => v.message_when_false(ctx),
                        Ok(other) => {
                            format!("expression {:?} returned {other:?}, not a boolean", v.text)
                        }
                        Err(e) => format!("expression {:?} could not be evaluated: {e}", v.text),
                    };
                    Some(Violation {
                        path: FieldPath::default(),
                        message,
                    })
                })
                .collect()
        })
    }
}

fn request_value(
    operation: &str,
    namespace: Option<&str>,
    request: &RequestInfo<'_>,
) -> values::CelVal {
    use values::{boolean, list, map, text};
    let groups = list(request.groups.iter().map(|g| text(g)).collect());
    map(vec![
        ("operation", text(operation)),
        ("name", text(request.name)),
        ("namespace", text(namespace.unwrap_or_default())),
        ("dryRun", boolean(request.dry_run)),
        (
            "userInfo",
            map(vec![
                ("username", text(request.username)),
                ("groups", groups),
            ]),
        ),
    ])
}
