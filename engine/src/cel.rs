//! CEL rules, in the two syntaxes Kubernetes users already write (evaluated by kube-cel, the
//! crate behind kube's `cel` feature):
//!
//! - `x-kubernetes-validations` anywhere in a policy's schema, with CRD validation-rule semantics
//!   (`self`, transition rules with `oldSelf`, `optionalOldSelf`, `messageExpression`, `reason`,
//!   `fieldPath`);
//! - `spec.validations` and `spec.matchConditions` in the style of ValidatingAdmissionPolicy, with
//!   `object`, `oldObject` and `request`.
//!
//! Everything is compiled once at load; a rule that does not compile is a load error pointing at
//! its line. Messages come from the policy (`message` / `messageExpression`) or name the rule,
//! never the submitted values.

use std::cell::RefCell;

use std::collections::HashMap;
use std::sync::Arc;

use kube_cel::cel::objects::{Key, Map};
use kube_cel::cel::{Context, Program, Value as CelValue};
use kube_cel::{CompiledSchema, KubeCelExt, Validator};
use serde::Deserialize;
use serde_json::Value;

use crate::path::{FieldPath, Segment, escape_pointer};
use crate::validate::Violation;

const RULES_KEY: &str = "x-kubernetes-validations";

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
    pub object: &'a Value,
    pub old_object: Option<&'a Value>,
    pub operation: &'a str,
    pub namespace: Option<&'a str>,
    pub request: &'a RequestInfo<'a>,
}

/// Who asks, and how: what `request` holds for policy-level expressions.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestInfo<'a> {
    pub name: &'a str,
    pub username: &'a str,
    pub groups: &'a [String],
    pub dry_run: bool,
}

/// The compiled schema rules of one policy.
pub struct SchemaRules {
    compiled: CompiledSchema,
}

impl std::fmt::Debug for SchemaRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRules").finish_non_exhaustive()
    }
}

thread_local! {
    // Building a validator registers every Kubernetes CEL function: do it once per thread.
    static VALIDATOR: RefCell<Option<Validator>> = const { RefCell::new(None) };
}

impl SchemaRules {
    /// `Ok(None)` when the schema has no rules; `Err` lists every rule that does not compile,
    /// as (JSON pointer inside the schema, message).
    pub fn compile(schema: &Value) -> Result<Option<Self>, Vec<(String, String)>> {
        let mut located = Vec::new();
        collect_rules(schema, String::new(), &mut located);
        if located.is_empty() {
            return Ok(None);
        }
        let mut errors = Vec::new();
        for (pointer, node) in &located {
            let compiled_node = kube_cel::compile_schema(node);
            let texts = node
                .get(RULES_KEY)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (idx, result) in compiled_node.validations.iter().enumerate() {
                let at = format!("{pointer}/{RULES_KEY}/{idx}");
                if let Err(e) = result {
                    errors.push((at, e.to_string()));
                    continue;
                }
                // As the apiserver does for CRDs: a rule whose worst case exceeds the cost budget
                // (unbounded lists or strings) is refused. kube-cel's scope check is not used: it
                // mistakes comprehension variables (`self.all(x, ...)`) for unknown ones.
                let rule = texts
                    .get(idx)
                    .and_then(|r| r.get("rule"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let problems = kube_cel::estimate_rule_cost(rule, &compiled_node)
                    .into_iter()
                    .filter(|w| w.kind == kube_cel::WarningKind::CostExceeded);
                for warning in problems {
                    errors.push((at.clone(), warning.message));
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Some(Self {
            compiled: kube_cel::compile_schema(schema),
        }))
    }

    /// Every rule that fails for `object` (with `old_object` for transition rules).
    pub fn violations(&self, object: &Value, old_object: Option<&Value>) -> Vec<Violation> {
        let outcome = VALIDATOR.with(|cell| {
            let mut slot = cell.borrow_mut();
            let validator = slot.get_or_insert_with(Validator::new);
            validator.validate_compiled(&self.compiled, object, old_object)
        });
        match outcome {
            Ok(()) => Vec::new(),
            Err(errors) => errors
                .into_vec()
                .into_iter()
                .map(|e| Violation {
                    path: field_path(&e.field_path),
                    message: e.message,
                })
                .collect(),
        }
    }
}

/// Every schema node that has `x-kubernetes-validations`, with its pointer.
fn collect_rules(node: &Value, pointer: String, out: &mut Vec<(String, Value)>) {
    let Some(map) = node.as_object() else {
        if let Some(items) = node.as_array() {
            for (idx, item) in items.iter().enumerate() {
                collect_rules(item, format!("{pointer}/{idx}"), out);
            }
        }
        return;
    };
    for (key, value) in map {
        let here = format!("{pointer}/{}", escape_pointer(key));
        if key == RULES_KEY {
            out.push((pointer.clone(), node.clone()));
        } else if matches!(
            key.as_str(),
            "properties" | "patternProperties" | "$defs" | "definitions"
        ) {
            if let Some(children) = value.as_object() {
                for (name, child) in children {
                    collect_rules(child, format!("{here}/{}", escape_pointer(name)), out);
                }
            }
        } else if value.is_object() || value.is_array() {
            collect_rules(value, here, out);
        }
    }
}

/// kube-cel reports `spec.retry`, `items[1]`; anything else is kept whole as one key.
fn field_path(text: &str) -> FieldPath {
    let trimmed = text.trim_start_matches('.');
    if trimmed.is_empty() {
        return FieldPath::default();
    }
    FieldPath::parse(trimmed).unwrap_or_else(|_| FieldPath(vec![Segment::Key(trimmed.to_string())]))
}

/// One compiled policy-level expression.
struct Expression {
    text: String,
    program: Program,
    message: Option<String>,
    message_program: Option<Program>,
}

/// Compiled `spec.matchConditions` and `spec.validations` of one policy.
pub struct PolicyRules {
    conditions: Vec<(String, Expression)>,
    validations: Vec<Expression>,
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
    static BASE: Context<'static> = Context::default().with_all();
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
                    Expression {
                        text: c.expression.clone(),
                        program,
                        message: None,
                        message_program: None,
                    },
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
                compiled_validations.push(Expression {
                    text: v.expression.clone(),
                    program,
                    message: v.message.clone(),
                    message_program,
                });
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Some(Self {
            conditions: compiled_conditions,
            validations: compiled_validations,
        }))
    }

    /// Runs `f` with a context holding the bindings.
    fn with_context<T>(bindings: &Bindings<'_>, f: impl FnOnce(&Context<'_>) -> T) -> T {
        BASE.with(|base| {
            let mut ctx = base.new_inner_scope();
            ctx.add_variable_from_value("object", to_cel(bindings.object));
            ctx.add_variable_from_value(
                "oldObject",
                bindings.old_object.map_or(CelValue::Null, to_cel),
            );
            ctx.add_variable_from_value(
                "request",
                request_value(bindings.operation, bindings.namespace, bindings.request),
            );
            f(&ctx)
        })
    }

    pub fn applies(&self, bindings: &Bindings<'_>) -> Applies {
        if self.conditions.is_empty() {
            return Applies::Yes;
        }
        Self::with_context(bindings, |ctx| {
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

    pub fn violations(&self, bindings: &Bindings<'_>) -> Vec<Violation> {
        if self.validations.is_empty() {
            return Vec::new();
        }
        Self::with_context(bindings, |ctx| {
            self.validations
                .iter()
                .filter_map(|v| {
                    let message = match v.program.execute(ctx) {
                        Ok(CelValue::Bool(true)) => return None,
                        Ok(CelValue::Bool(false)) => v
                            .message_program
                            .as_ref()
                            .and_then(|p| match p.execute(ctx) {
                                Ok(CelValue::String(s)) => Some(s.to_string()),
                                _ => None,
                            })
                            .or_else(|| v.message.clone())
                            .unwrap_or_else(|| format!("failed expression: {}", v.text)),
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

/// JSON as CEL sees Kubernetes objects: integers are `int`, never `uint`.
fn to_cel(value: &Value) -> CelValue {
    match value {
        Value::Null => CelValue::Null,
        Value::Bool(b) => CelValue::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => CelValue::Int(i),
            (None, Some(u)) => CelValue::UInt(u),
            _ => CelValue::Float(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => CelValue::String(Arc::new(s.clone())),
        Value::Array(items) => CelValue::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(map) => CelValue::Map(Map {
            map: Arc::new(
                map.iter()
                    .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                    .collect::<HashMap<_, _>>(),
            ),
        }),
    }
}

fn request_value(operation: &str, namespace: Option<&str>, request: &RequestInfo<'_>) -> CelValue {
    let text = |s: &str| CelValue::String(Arc::new(s.to_string()));
    let map = |entries: Vec<(&str, CelValue)>| {
        CelValue::Map(Map {
            map: Arc::new(
                entries
                    .into_iter()
                    .map(|(k, v)| (Key::String(Arc::new(k.to_string())), v))
                    .collect::<HashMap<_, _>>(),
            ),
        })
    };
    let groups = CelValue::List(Arc::new(request.groups.iter().map(|g| text(g)).collect()));
    map(vec![
        ("operation", text(operation)),
        ("name", text(request.name)),
        ("namespace", text(namespace.unwrap_or_default())),
        ("dryRun", CelValue::Bool(request.dry_run)),
        (
            "userInfo",
            map(vec![
                ("username", text(request.username)),
                ("groups", groups),
            ]),
        ),
    ])
}
