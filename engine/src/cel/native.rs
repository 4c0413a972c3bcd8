//! The common shape of CEL rules — field selections, integer arithmetic, comparisons, `&&`,
//! `||`, `!`, `?:`, `size()`, `has()` — evaluated straight on the JSON, without building CEL
//! values. It answers only where the outcome is certain: any other construct, or any value that
//! is not a plain int, string or bool of the expected kind (a missing field, mixed types, an
//! overflow, a division by zero, a string the schema types as a timestamp), gives `None` and the
//! CEL interpreter decides, errors and messages included. So both always agree.

use std::sync::Arc;

use kube_cel::cel::IdedExpr;
use kube_cel::cel::common::ast::{Expr, LiteralValue};

use super::values::ValueSchema;
use crate::instance::Instance;

/// A variable the expression may read, with the schema of its value (none for admission-policy
/// expressions, whose keys are used as they are).
pub struct Binding<'a> {
    pub name: &'a str,
    pub value: Instance<'a>,
    pub schema: Option<&'a ValueSchema>,
}

#[derive(Clone, Copy)]
enum Val<'a> {
    Int(i64),
    Str(&'a str),
    Bool(bool),
    Json(Instance<'a>, Option<&'a ValueSchema>),
}

/// An expression made only of what this evaluator handles, compiled once at load: operators are
/// resolved here, not matched by name on every evaluation.
#[derive(Debug)]
pub struct Native(Node);

#[derive(Debug)]
enum Node {
    Ident(String),
    Int(i64),
    Str(String),
    Bool(bool),
    /// `operand.field`, or `has(operand.field)` when `test`.
    Select {
        operand: Box<Node>,
        field: String,
        test: bool,
        child: Child,
    },
    /// `_&&_` (`stop` false) or `_||_` (`stop` true): the left side decides alone when it is
    /// `stop`.
    Logic {
        stop: bool,
        left: Box<Node>,
        right: Box<Node>,
    },
    Not(Box<Node>),
    Negate(Box<Node>),
    Choose(Box<[Node; 3]>),
    Size(Box<Node>),
    Binary(Op, Box<[Node; 2]>),
}

/// The schema of a selected field.
#[derive(Debug)]
enum Child {
    /// Resolved at load: the operand is a chain of selections from a variable, whose schema is
    /// the one the expression was compiled for (a lookup per field read was a tenth of
    /// evaluating a rule).
    Resolved(Option<Arc<ValueSchema>>),
    /// Looked up in the operand's schema when evaluated (`(c ? a : b).field`).
    Lookup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Subtract,
    Multiply,
    Divide,
    Remainder,
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

impl Op {
    fn named(name: &str) -> Option<Self> {
        Some(match name {
            "_+_" => Self::Add,
            "_-_" => Self::Subtract,
            "_*_" => Self::Multiply,
            "_/_" => Self::Divide,
            "_%_" => Self::Remainder,
            "_==_" => Self::Equal,
            "_!=_" => Self::NotEqual,
            "_<_" => Self::Less,
            "_<=_" => Self::LessOrEqual,
            "_>_" => Self::Greater,
            "_>=_" => Self::GreaterOrEqual,
            _ => return None,
        })
    }
}

/// The expression in native form, or `None` when it uses anything else (the interpreter's).
///
/// `schema` is the schema of every variable's value (`self` and `oldSelf` of a CRD rule), or
/// `None` (admission-policy expressions); evaluation must bind values of that schema.
pub fn compile(expr: &IdedExpr, schema: Option<&Arc<ValueSchema>>) -> Option<Native> {
    node(expr, schema).map(Native)
}

impl Node {
    /// The schema of this node's value when it is known at load: `Some(schema)`.
    fn known_schema(
        &self,
        variables: Option<&Arc<ValueSchema>>,
    ) -> Option<Option<Arc<ValueSchema>>> {
        match self {
            Node::Ident(_) => Some(variables.cloned()),
            Node::Select {
                child: Child::Resolved(schema),
                test: false,
                ..
            } => Some(schema.clone()),
            _ => None,
        }
    }
}

fn node(expr: &IdedExpr, schema: Option<&Arc<ValueSchema>>) -> Option<Node> {
    Some(match &expr.expr {
        Expr::Ident(name) => Node::Ident(name.clone()),
        Expr::Literal(LiteralValue::Int(i)) => Node::Int(*i.inner()),
        Expr::Literal(LiteralValue::String(s)) => Node::Str(s.inner().to_string()),
        Expr::Literal(LiteralValue::Boolean(b)) => Node::Bool(*b.inner()),
        // Escaped names (`foo__dash__bar`) are left to the interpreter.
        Expr::Select(select) if !select.field.contains("__") => {
            let operand = node(&select.operand, schema)?;
            let child = match operand.known_schema(schema) {
                Some(known) => Child::Resolved(
                    known.and_then(|known| known.shared_child(&select.field).cloned()),
                ),
                None => Child::Lookup,
            };
            Node::Select {
                operand: Box::new(operand),
                field: select.field.clone(),
                test: select.test,
                child,
            }
        }
        Expr::Call(call) => {
            let name = call.func_name.as_str();
            if name == "size" {
                let [of] = match (&call.target, &call.args[..]) {
                    (Some(target), []) => [target.as_ref()],
                    (None, [arg]) => [arg],
                    _ => return None,
                };
                return Some(Node::Size(Box::new(node(of, schema)?)));
            }
            if call.target.is_some() {
                return None;
            }
            let mut args = call.args.iter().map(|arg| node(arg, schema));
            let mut next = || args.next().flatten().map(Box::new);
            match (name, call.args.len()) {
                ("_&&_" | "_||_", 2) => Node::Logic {
                    stop: name == "_||_",
                    left: next()?,
                    right: next()?,
                },
                ("!_", 1) => Node::Not(next()?),
                ("-_", 1) => Node::Negate(next()?),
                ("_?_:_", 3) => Node::Choose(Box::new([*next()?, *next()?, *next()?])),
                (_, 2) => Node::Binary(Op::named(name)?, Box::new([*next()?, *next()?])),
                _ => return None,
            }
        }
        _ => return None,
    })
}

impl Native {
    /// The rule's boolean outcome, or `None` when the interpreter must decide.
    pub fn evaluate(&self, bindings: &[Binding<'_>]) -> Option<bool> {
        match eval(&self.0, bindings)? {
            Val::Bool(b) => Some(b),
            _ => None,
        }
    }
}

fn eval<'a>(node: &'a Node, bindings: &[Binding<'a>]) -> Option<Val<'a>> {
    match node {
        Node::Ident(name) => bindings
            .iter()
            .find(|b| b.name == name)
            .map(|b| Val::Json(b.value, b.schema)),
        Node::Int(i) => Some(Val::Int(*i)),
        Node::Str(s) => Some(Val::Str(s)),
        Node::Bool(b) => Some(Val::Bool(*b)),
        Node::Select {
            operand,
            field,
            test,
            child: child_schema,
        } => {
            let Val::Json(object, schema) = eval(operand, bindings)? else {
                return None;
            };
            if !object.is_object() || schema.is_some_and(ValueSchema::adds_fields) {
                return None;
            }
            if *test {
                return Some(Val::Bool(object.get(field).is_some()));
            }
            let child = object.get(field)?;
            let child_schema = match child_schema {
                Child::Resolved(resolved) => resolved.as_deref(),
                Child::Lookup => schema.and_then(|s| s.child(field)),
            };
            plain(child, child_schema)
        }
        // CEL: `false && x` is false and `true || x` true whatever x is.
        Node::Logic { stop, left, right } => match eval(left, bindings)? {
            Val::Bool(b) if b == *stop => Some(Val::Bool(*stop)),
            Val::Bool(_) => match eval(right, bindings)? {
                Val::Bool(b) => Some(Val::Bool(b)),
                _ => None,
            },
            _ => None,
        },
        Node::Not(operand) => match eval(operand, bindings)? {
            Val::Bool(b) => Some(Val::Bool(!b)),
            _ => None,
        },
        Node::Negate(operand) => match eval(operand, bindings)? {
            Val::Int(i) => i.checked_neg().map(Val::Int),
            _ => None,
        },
        Node::Choose(parts) => {
            let [condition, then, otherwise] = parts.as_ref();
            match eval(condition, bindings)? {
                Val::Bool(true) => eval(then, bindings),
                Val::Bool(false) => eval(otherwise, bindings),
                _ => None,
            }
        }
        Node::Size(of) => {
            let len = match eval(of, bindings)? {
                Val::Str(s) => s.chars().count(),
                Val::Json(json, schema) => match (json.array_len(), json.object_len()) {
                    (Some(len), _) => len,
                    (None, Some(_)) if schema.is_some_and(ValueSchema::adds_fields) => return None,
                    (None, Some(len)) => len,
                    (None, None) => return None,
                },
                _ => return None,
            };
            i64::try_from(len).ok().map(Val::Int)
        }
        Node::Binary(op, sides) => {
            let [left, right] = sides.as_ref();
            binary(*op, eval(left, bindings)?, eval(right, bindings)?)
        }
    }
}

/// A JSON leaf as the CEL value it stands for, when that is unambiguous.
fn plain<'a>(value: Instance<'a>, schema: Option<&'a ValueSchema>) -> Option<Val<'a>> {
    if let Some(b) = value.as_bool() {
        Some(Val::Bool(b))
    } else if let Some(n) = value.as_number() {
        n.as_i64().map(Val::Int)
    } else if let Some(s) = value.as_str() {
        schema
            .is_none_or(ValueSchema::string_is_plain)
            .then_some(Val::Str(s))
    } else if value.is_null() {
        None
    } else {
        Some(Val::Json(value, schema))
    }
}

fn binary<'a>(op: Op, left: Val<'a>, right: Val<'a>) -> Option<Val<'a>> {
    use std::cmp::Ordering;
    let order = match (left, right) {
        (Val::Int(a), Val::Int(b)) => {
            let arithmetic = match op {
                Op::Add => Some(a.checked_add(b)),
                Op::Subtract => Some(a.checked_sub(b)),
                Op::Multiply => Some(a.checked_mul(b)),
                Op::Divide => Some(a.checked_div(b)),
                Op::Remainder => Some(a.checked_rem(b)),
                _ => None,
            };
            if let Some(result) = arithmetic {
                return result.map(Val::Int);
            }
            a.cmp(&b)
        }
        (Val::Str(a), Val::Str(b)) => a.cmp(b),
        (Val::Bool(a), Val::Bool(b)) if matches!(op, Op::Equal | Op::NotEqual) => a.cmp(&b),
        _ => return None,
    };
    let result = match op {
        Op::Equal => order == Ordering::Equal,
        Op::NotEqual => order != Ordering::Equal,
        Op::Less => order == Ordering::Less,
        Op::LessOrEqual => order != Ordering::Greater,
        Op::Greater => order == Ordering::Greater,
        Op::GreaterOrEqual => order != Ordering::Less,
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
    use serde_json::{Value, json};

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
        "(self.flag ? self : self).when == '2026-01-01T00:00:00Z'",
        "(self.flag ? self.retry : self.retry).maxAttempts >= 1",
    ];

    fn schema() -> Arc<ValueSchema> {
        Arc::new(ValueSchema::new(&json!({
            "type": "object",
            "properties": {"when": {"type": "string", "format": "date-time"}}
        })))
    }

    fn interpreted(program: &Program, value: &Value, schema: &ValueSchema) -> Option<bool> {
        crate::cel::with_base(|base| {
            let mut scope = base.new_inner_scope();
            scope.add_variable_from_value(
                "self",
                convert(
                    value.into(),
                    Some(schema),
                    &Projection::Whole,
                    Keys::Escaped,
                ),
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
        /// Whenever the native evaluator answers, the CEL interpreter gives the same answer; and
        /// it answers alike on a `Value` and on the document of that value.
        #[test]
        fn agrees_with_the_interpreter(value in object()) {
            let schema = schema();
            let doc = crate::document::Document::from_value(&value).unwrap_or_default();
            for text in EXPRESSIONS {
                let program = Program::compile(text).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let compiled = compile(program.expression(), Some(&schema));
                prop_assert!(compiled.is_some(), "{text}");
                let on = |value: Instance<'_>| {
                    let bindings = [Binding { name: "self", value, schema: Some(&*schema) }];
                    compiled.as_ref().and_then(|c| c.evaluate(&bindings))
                };
                let on_value = on((&value).into());
                prop_assert_eq!(on(doc.root().into()), on_value, "{} on {}", text, value);
                if let Some(native) = on_value {
                    prop_assert_eq!(Some(native), interpreted(&program, &value, &schema), "{} on {}", text, value);
                }
            }
        }
    }

    #[test]
    fn field_schemas_are_resolved_at_load_along_selections_from_a_variable() {
        let schema = schema();
        let compiled = |text: &str| {
            let program = Program::compile(text).ok()?;
            compile(program.expression(), Some(&schema)).map(|native| format!("{native:?}"))
        };
        let chain = compiled("self.retry.maxAttempts > 0").unwrap_or_default();
        assert!(
            chain.contains("Resolved") && !chain.contains("Lookup"),
            "{chain}"
        );
        let chosen = compiled("(self.flag ? self : self).when == 'x'").unwrap_or_default();
        assert!(chosen.contains("Lookup"), "{chosen}");
        let when = compiled("self.when == 'x'").unwrap_or_default();
        assert!(when.contains("DateTime"), "{when}");
    }

    #[test]
    fn answers_the_common_cases_and_defers_the_rest() {
        let schema = schema();
        let value = json!({"a": 4, "b": 2, "name": "abc", "when": "2026-01-01T00:00:00Z"});
        let run = |text: &str| {
            let program = Program::compile(text).ok()?;
            compile(program.expression(), Some(&schema))?.evaluate(&[Binding {
                name: "self",
                value: (&value).into(),
                schema: Some(&*schema),
            }])
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
