//! The common shape of CEL rules — field selections, integer arithmetic, comparisons, `&&`,
//! `||`, `!`, `?:`, `size()`, `has()` — evaluated straight on the JSON, without building CEL
//! values. It answers only where the outcome is certain: any other construct, or any value that
//! is not a plain int, string or bool of the expected kind (a missing field, mixed types, an
//! overflow, a division by zero, a string the schema types as a timestamp), gives `None` and the
//! CEL interpreter decides, errors and messages included. So both always agree.

use kube_cel::cel::IdedExpr;
use kube_cel::cel::common::ast::{Expr, LiteralValue};
use serde_json::Value;

use super::values::ValueSchema;

/// A variable the expression may read, with the schema of its value (none for admission-policy
/// expressions, whose keys are used as they are).
pub struct Binding<'a> {
    pub name: &'a str,
    pub value: &'a Value,
    pub schema: Option<&'a ValueSchema>,
}

#[derive(Clone, Copy)]
enum Val<'a> {
    Int(i64),
    Str(&'a str),
    Bool(bool),
    Json(&'a Value, Option<&'a ValueSchema>),
}

/// Whether the expression is made only of what `evaluate` handles (checked once, at load).
pub fn supported(expr: &IdedExpr) -> bool {
    match &expr.expr {
        Expr::Ident(_) => true,
        Expr::Literal(literal) => matches!(
            literal,
            LiteralValue::Int(_) | LiteralValue::String(_) | LiteralValue::Boolean(_)
        ),
        // Escaped names (`foo__dash__bar`) are left to the interpreter.
        Expr::Select(select) => !select.field.contains("__") && supported(&select.operand),
        Expr::Call(call) => {
            let arity_ok = match call.func_name.as_str() {
                "_&&_" | "_||_" | "_==_" | "_!=_" | "_<_" | "_<=_" | "_>_" | "_>=_" | "_+_"
                | "_-_" | "_*_" | "_/_" | "_%_" => call.target.is_none() && call.args.len() == 2,
                "!_" | "-_" => call.target.is_none() && call.args.len() == 1,
                "_?_:_" => call.target.is_none() && call.args.len() == 3,
                "size" => usize::from(call.target.is_some()) + call.args.len() == 1,
                _ => false,
            };
            arity_ok
                && call.target.as_deref().is_none_or(supported)
                && call.args.iter().all(supported)
        }
        _ => false,
    }
}

/// The rule's boolean outcome, or `None` when the interpreter must decide.
pub fn evaluate(expr: &IdedExpr, bindings: &[Binding<'_>]) -> Option<bool> {
    match eval(expr, bindings)? {
        Val::Bool(b) => Some(b),
        _ => None,
    }
}

fn eval<'a>(expr: &'a IdedExpr, bindings: &[Binding<'a>]) -> Option<Val<'a>> {
    match &expr.expr {
        Expr::Ident(name) => bindings
            .iter()
            .find(|b| b.name == name)
            .map(|b| Val::Json(b.value, b.schema)),
        Expr::Literal(LiteralValue::Int(i)) => Some(Val::Int(*i.inner())),
        Expr::Literal(LiteralValue::String(s)) => Some(Val::Str(s.inner())),
        Expr::Literal(LiteralValue::Boolean(b)) => Some(Val::Bool(*b.inner())),
        Expr::Select(select) => {
            let Val::Json(Value::Object(map), schema) = eval(&select.operand, bindings)? else {
                return None;
            };
            if schema.is_some_and(ValueSchema::adds_fields) {
                return None;
            }
            let field = select.field.as_str();
            if select.test {
                return Some(Val::Bool(map.contains_key(field)));
            }
            let child = map.get(field)?;
            plain(child, schema.and_then(|s| s.child(field)))
        }
        Expr::Call(call) => {
            let arg = |i: usize| call.args.get(i);
            match call.func_name.as_str() {
                "_&&_" | "_||_" => {
                    let stop = call.func_name == "_||_";
                    // CEL: `false && x` is false and `true || x` true whatever x is.
                    match eval(arg(0)?, bindings)? {
                        Val::Bool(b) if b == stop => Some(Val::Bool(stop)),
                        Val::Bool(_) => match eval(arg(1)?, bindings)? {
                            Val::Bool(b) => Some(Val::Bool(b)),
                            _ => None,
                        },
                        _ => None,
                    }
                }
                "!_" => match eval(arg(0)?, bindings)? {
                    Val::Bool(b) => Some(Val::Bool(!b)),
                    _ => None,
                },
                "-_" => match eval(arg(0)?, bindings)? {
                    Val::Int(i) => i.checked_neg().map(Val::Int),
                    _ => None,
                },
                "_?_:_" => match eval(arg(0)?, bindings)? {
                    Val::Bool(true) => eval(arg(1)?, bindings),
                    Val::Bool(false) => eval(arg(2)?, bindings),
                    _ => None,
                },
                "size" => {
                    let of = call.target.as_deref().or_else(|| arg(0))?;
                    let len = match eval(of, bindings)? {
                        Val::Str(s) => s.chars().count(),
                        Val::Json(Value::Array(items), _) => items.len(),
                        Val::Json(Value::Object(map), schema) => {
                            if schema.is_some_and(ValueSchema::adds_fields) {
                                return None;
                            }
                            map.len()
                        }
                        _ => return None,
                    };
                    i64::try_from(len).ok().map(Val::Int)
                }
                op => binary(op, eval(arg(0)?, bindings)?, eval(arg(1)?, bindings)?),
            }
        }
        _ => None,
    }
}

/// A JSON leaf as the CEL value it stands for, when that is unambiguous.
fn plain<'a>(value: &'a Value, schema: Option<&'a ValueSchema>) -> Option<Val<'a>> {
    match value {
        Value::Bool(b) => Some(Val::Bool(*b)),
        Value::Number(n) => n.as_i64().map(Val::Int),
        Value::String(s) => schema
            .is_none_or(ValueSchema::string_is_plain)
            .then_some(Val::Str(s)),
        Value::Object(_) | Value::Array(_) => Some(Val::Json(value, schema)),
        Value::Null => None,
    }
}

fn binary<'a>(op: &str, left: Val<'a>, right: Val<'a>) -> Option<Val<'a>> {
    use std::cmp::Ordering;
    let order = match (left, right) {
        (Val::Int(a), Val::Int(b)) => {
            let arithmetic = match op {
                "_+_" => Some(a.checked_add(b)),
                "_-_" => Some(a.checked_sub(b)),
                "_*_" => Some(a.checked_mul(b)),
                "_/_" => Some(a.checked_div(b)),
                "_%_" => Some(a.checked_rem(b)),
                _ => None,
            };
            if let Some(result) = arithmetic {
                return result.map(Val::Int);
            }
            a.cmp(&b)
        }
        (Val::Str(a), Val::Str(b)) => a.cmp(b),
        (Val::Bool(a), Val::Bool(b)) if matches!(op, "_==_" | "_!=_") => a.cmp(&b),
        _ => return None,
    };
    let result = match op {
        "_==_" => order == Ordering::Equal,
        "_!=_" => order != Ordering::Equal,
        "_<_" => order == Ordering::Less,
        "_<=_" => order != Ordering::Greater,
        "_>_" => order == Ordering::Greater,
        "_>=_" => order != Ordering::Less,
        _ => return None,
    };
    Some(Val::Bool(result))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cel::projection::Projection;
    use crate::cel::values::{Keys, convert};
    use kube_cel::cel::{Program, Value as CelValue};
    use proptest::prelude::*;
    use serde_json::json;

    const EXPRESSIONS: &[&str] = &[
        "self.retry.maxAttempts * self.retry.backoffSeconds <= self.timeoutSeconds",
        "self.a >= self.b / 2 && self.b % 3 != 1",
        "self.a - self.b < 0 || -self.a == self.b",
        "self.name.size() <= 5 && size(self.name) >= 1",
        "self.name < self.other || self.name == 'x'",
        "has(self.a) ? self.a > 0 : !self.flag",
        "self.flag == true && self.flag != false",
        "self.when == '2026-01-01T00:00:00Z'",
        "size(self.list) == 2 && size(self.retry) > 1",
        "self.a / self.b == 1",
        "self.a == self.name",
    ];

    fn schema() -> ValueSchema {
        ValueSchema::new(&json!({
            "type": "object",
            "properties": {"when": {"type": "string", "format": "date-time"}}
        }))
    }

    fn interpreted(program: &Program, value: &Value, schema: &ValueSchema) -> Option<bool> {
        crate::cel::with_base(|base| {
            let mut scope = base.new_inner_scope();
            scope.add_variable_from_value(
                "self",
                convert(value, Some(schema), &Projection::Whole, Keys::Escaped),
            );
            match program.execute(&scope) {
                Ok(CelValue::Bool(b)) => Some(b),
                _ => None,
            }
        })
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-5i64..5).prop_map(Value::from),
            prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(-1i64)].prop_map(Value::from),
            Just(json!(u64::MAX)),
            Just(json!(1.5)),
            "[a-cé]{0,6}".prop_map(Value::from),
            Just(json!("2026-01-01T00:00:00Z")),
        ]
    }

    fn object() -> impl Strategy<Value = Value> {
        let field = proptest::option::of(scalar());
        (
            proptest::collection::vec(field, 8),
            proptest::option::of((scalar(), scalar())),
        )
            .prop_map(|(fields, retry)| {
                let names = [
                    "a",
                    "b",
                    "name",
                    "other",
                    "flag",
                    "timeoutSeconds",
                    "when",
                    "list",
                ];
                let mut map = serde_json::Map::new();
                for (name, value) in names.iter().zip(fields) {
                    if let Some(value) = value {
                        map.insert(name.to_string(), value);
                    }
                }
                if let Some((attempts, backoff)) = retry {
                    map.insert(
                        "retry".into(),
                        json!({"maxAttempts": attempts, "backoffSeconds": backoff}),
                    );
                }
                if map.get("list").is_some_and(|v| v.is_boolean()) {
                    map.insert("list".into(), json!([1, 2]));
                }
                Value::Object(map)
            })
    }

    proptest! {
        /// Whenever the native evaluator answers, the CEL interpreter gives the same answer.
        #[test]
        fn agrees_with_the_interpreter(value in object()) {
            let schema = schema();
            for text in EXPRESSIONS {
                let program = Program::compile(text).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(supported(program.expression()), "{text}");
                let bindings = [Binding { name: "self", value: &value, schema: Some(&schema) }];
                if let Some(native) = evaluate(program.expression(), &bindings) {
                    prop_assert_eq!(Some(native), interpreted(&program, &value, &schema), "{} on {}", text, value);
                }
            }
        }
    }

    #[test]
    fn answers_the_common_cases_and_defers_the_rest() {
        let schema = schema();
        let value = json!({"a": 4, "b": 2, "name": "abc", "when": "2026-01-01T00:00:00Z"});
        let run = |text: &str| {
            let program = Program::compile(text).ok()?;
            supported(program.expression()).then_some(())?;
            evaluate(
                program.expression(),
                &[Binding {
                    name: "self",
                    value: &value,
                    schema: Some(&schema),
                }],
            )
        };
        assert_eq!(run("self.a >= self.b / 2"), Some(true));
        assert_eq!(run("self.name.size() == 3"), Some(true));
        assert_eq!(run("has(self.missing)"), Some(false));
        assert_eq!(
            run("self.missing > 1"),
            None,
            "missing fields are the interpreter's error"
        );
        assert_eq!(run("self.when == 'x'"), None, "timestamps are not strings");
        assert_eq!(run("self.a / 0 == 1"), None);
        assert_eq!(
            run("self.name.startsWith('a')"),
            None,
            "not a supported function"
        );
        assert_eq!(run("self.my__dash__field == 1"), None);
    }
}
