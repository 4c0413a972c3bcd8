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

use kube_cel::{CompiledSchema, CompiledVapExpression, Validator, VapEvaluator, VapExpression};
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

/// Compiled `spec.matchConditions` and `spec.validations` of one policy.
pub struct PolicyRules {
    /// Names of the match conditions, in the order of `conditions`.
    condition_names: Vec<String>,
    /// All compiled (the `Result` is the shape kube-cel evaluates).
    conditions: Vec<Result<CompiledVapExpression, kube_cel::VapError>>,
    validations: Vec<Result<CompiledVapExpression, kube_cel::VapError>>,
}

impl std::fmt::Debug for PolicyRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyRules")
            .field("conditions", &self.condition_names)
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
        let compiler = VapEvaluator::builder().build();
        let mut errors = Vec::new();
        let mut compiled_conditions = Vec::new();
        let mut condition_names = Vec::new();
        for (idx, c) in conditions.iter().enumerate() {
            let expr = VapExpression {
                expression: c.expression.clone(),
                message: None,
                message_expression: None,
            };
            match compiler
                .compile_expressions(std::slice::from_ref(&expr))
                .pop()
            {
                Some(Ok(program)) => {
                    condition_names.push(c.name.clone());
                    compiled_conditions.push(Ok(program));
                }
                Some(Err(e)) => errors.push((
                    format!("/spec/matchConditions/{idx}/expression"),
                    e.to_string(),
                )),
                None => {}
            }
        }
        let mut compiled_validations = Vec::new();
        for (idx, v) in validations.iter().enumerate() {
            let expr = VapExpression {
                expression: v.expression.clone(),
                message: v.message.clone(),
                message_expression: v.message_expression.clone(),
            };
            match compiler
                .compile_expressions(std::slice::from_ref(&expr))
                .pop()
            {
                Some(Ok(program)) => compiled_validations.push(Ok(program)),
                Some(Err(e)) => {
                    errors.push((format!("/spec/validations/{idx}/expression"), e.to_string()))
                }
                None => {}
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Some(Self {
            condition_names,
            conditions: compiled_conditions,
            validations: compiled_validations,
        }))
    }

    fn evaluator(
        object: &Value,
        old_object: Option<&Value>,
        operation: &str,
        namespace: Option<&str>,
        request: &RequestInfo<'_>,
    ) -> VapEvaluator {
        let mut builder =
            VapEvaluator::builder()
                .object(object.clone())
                .request(kube_cel::AdmissionRequest {
                    operation: operation.to_string(),
                    username: request.username.to_string(),
                    groups: request.groups.to_vec(),
                    name: request.name.to_string(),
                    namespace: namespace.unwrap_or_default().to_string(),
                    dry_run: request.dry_run,
                    ..Default::default()
                });
        if let Some(old) = old_object {
            builder = builder.old_object(old.clone());
        }
        builder.build()
    }

    pub fn applies(
        &self,
        object: &Value,
        old_object: Option<&Value>,
        operation: &str,
        namespace: Option<&str>,
        request: &RequestInfo<'_>,
    ) -> Applies {
        if self.conditions.is_empty() {
            return Applies::Yes;
        }
        let evaluator = Self::evaluator(object, old_object, operation, namespace, request);
        let results = evaluator.evaluate_compiled(&self.conditions);
        for (name, result) in self.condition_names.iter().zip(results) {
            if result.passed {
                continue;
            }
            let message = result.message.unwrap_or_default();
            if message.starts_with("validation expression") {
                return Applies::No;
            }
            return Applies::Error(format!(
                "matchCondition {name:?} could not be evaluated: {message}"
            ));
        }
        Applies::Yes
    }

    pub fn violations(
        &self,
        object: &Value,
        old_object: Option<&Value>,
        operation: &str,
        namespace: Option<&str>,
        request: &RequestInfo<'_>,
    ) -> Vec<Violation> {
        if self.validations.is_empty() {
            return Vec::new();
        }
        let evaluator = Self::evaluator(object, old_object, operation, namespace, request);
        evaluator
            .evaluate_compiled(&self.validations)
            .into_iter()
            .filter(|r| !r.passed)
            .map(|r| Violation {
                path: FieldPath::default(),
                message: r
                    .message
                    .unwrap_or_else(|| format!("failed rule: {}", r.expression)),
            })
            .collect()
    }
}
