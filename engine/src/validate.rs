//! Schema validation: every failed check of an object, each phrased for the person who wrote it
//! (`spec.endpoint: must start with "https://"`).

use jsonschema::error::{ValidationError, ValidationErrorKind};
use jsonschema::paths::LocationSegment;
use serde_json::Value;

use crate::document::{Document, Node, TooLarge};
use crate::instance::Instance;
use crate::path::{FieldPath, Segment};
use crate::schema::CompiledSchema;

pub use crate::violation::Violation;

/// A violation with the node whose schema raised it (the object, for a missing or unknown
/// field of it): the value ratcheting compares with its old self.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Raised {
    pub violation: Violation,
    pub node: FieldPath,
    /// A failure the apiserver will not run CEL rules past (`hasBlockingErr`: a wrong type or
    /// format, a missing field, a value not in `enum`, too long, too many).
    pub blocking: bool,
}

/// Every schema violation of `object`, sorted by field path and without repeats.
pub(crate) fn instance_violations(schema: &CompiledSchema, object: Instance<'_>) -> Vec<Raised> {
    match object {
        Instance::Node(node) => violations_of(schema, node),
        Instance::Value(value) => match Document::from_value(value) {
            Ok(doc) => violations_of(schema, doc.root()),
            // Over four billion nodes: not an object anyone can send.
            Err(TooLarge) => vec![Raised {
                violation: Violation {
                    path: FieldPath::default(),
                    message: "is too large to validate".into(),
                },
                node: FieldPath::default(),
                blocking: true,
            }],
        },
    }
}

fn violations_of(schema: &CompiledSchema, object: Node<'_>) -> Vec<Raised> {
    // Most objects are valid: the short-circuiting check is cheaper than collecting errors.
    if schema.validator.is_valid(object) {
        return Vec::new();
    }
    let mut found: Vec<Raised> = schema
        .validator
        .iter_errors(object)
        .flat_map(|e| {
            let node = instance_path(&e);
            let blocking = matches!(
                e.kind(),
                ValidationErrorKind::Type { .. }
                    | ValidationErrorKind::Format { .. }
                    | ValidationErrorKind::Required { .. }
                    | ValidationErrorKind::Enum { .. }
                    | ValidationErrorKind::MaxLength { .. }
                    | ValidationErrorKind::MaxItems { .. }
                    | ValidationErrorKind::MaxProperties { .. }
            );
            from_schema_error(&e)
                .into_iter()
                .map(move |violation| Raised {
                    violation,
                    node: node.clone(),
                    blocking,
                })
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Converts one schema error into one or more violations. Messages never echo the offending
/// value: objects may carry secrets and denials end up in client output and audit logs.
fn from_schema_error(error: &ValidationError<'_>) -> Vec<Violation> {
    let path = instance_path(error);
    let one = |message: String| {
        vec![Violation {
            path: path.clone(),
            message,
        }]
    };
    match error.kind() {
        ValidationErrorKind::Required { property } => vec![Violation {
            path: path.child(property.as_str().unwrap_or_default()),
            message: "is required".into(),
        }],
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => unexpected
            .iter()
            .map(|field| Violation {
                path: path.child(field),
                message: "is not a known field".into(),
            })
            .collect(),
        ValidationErrorKind::Enum { options } => {
            one(format!("must be one of {}", list_values(options)))
        }
        ValidationErrorKind::Constant { expected_value } => {
            one(format!("must be {}", expected_value))
        }
        ValidationErrorKind::Pattern { pattern } => one(pattern_message(pattern)),
        ValidationErrorKind::MaxLength { limit } => {
            one(format!("must be at most {limit} characters long"))
        }
        ValidationErrorKind::MinLength { limit: 1 } => one("must not be empty".into()),
        ValidationErrorKind::MinLength { limit } => {
            one(format!("must be at least {limit} characters long"))
        }
        ValidationErrorKind::Minimum { limit } => {
            one(format!("must be greater than or equal to {limit}"))
        }
        ValidationErrorKind::Maximum { limit } => {
            one(format!("must be less than or equal to {limit}"))
        }
        ValidationErrorKind::ExclusiveMinimum { limit } => {
            one(format!("must be greater than {limit}"))
        }
        ValidationErrorKind::ExclusiveMaximum { limit } => {
            one(format!("must be less than {limit}"))
        }
        ValidationErrorKind::MinItems { limit } => {
            one(format!("must have at least {limit} item(s)"))
        }
        ValidationErrorKind::MaxItems { limit } => {
            one(format!("must have at most {limit} item(s)"))
        }
        ValidationErrorKind::UniqueItems => one("must not contain duplicate items".into()),
        ValidationErrorKind::MinProperties { limit } => {
            one(format!("must have at least {limit} field(s)"))
        }
        ValidationErrorKind::MaxProperties { limit } => {
            one(format!("must have at most {limit} field(s)"))
        }
        ValidationErrorKind::Type { kind } => one(format!("must be of type {}", type_name(kind))),
        ValidationErrorKind::Format { format } => one(format!(
            "must be a valid {}",
            crate::schema::formats::display_name(format)
        )),
        ValidationErrorKind::FalseSchema => one("is not allowed".into()),
        ValidationErrorKind::MultipleOf { multiple_of } => {
            one(format!("must be a multiple of {multiple_of}"))
        }
        _ => one(error.masked().to_string()),
    }
}

fn instance_path(error: &ValidationError<'_>) -> FieldPath {
    FieldPath(
        error
            .instance_path()
            .iter()
            .map(|s| match s {
                LocationSegment::Property(p) => Segment::Key(p.into_owned()),
                LocationSegment::Index(i) => Segment::Index(i),
            })
            .collect(),
    )
}

fn type_name(kind: &jsonschema::error::TypeKind) -> String {
    match kind {
        jsonschema::error::TypeKind::Single(t) => t.to_string(),
        jsonschema::error::TypeKind::Multiple(set) => {
            let names: Vec<String> = set.iter().map(|t| t.to_string()).collect();
            names.join(" or ")
        }
    }
}

fn list_values(options: &Value) -> String {
    match options {
        Value::Array(items) => items
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// What a value failing `pattern` is told.
pub(crate) fn pattern_message(pattern: &str) -> String {
    match literal_prefix(pattern) {
        Some(prefix) => format!("must start with {}", Value::String(prefix)),
        None => format!(
            "must match the pattern {}",
            Value::String(pattern.to_string())
        ),
    }
}

/// `^https://` (optionally followed by `.*` or `.+`) reads better as "must start with".
fn literal_prefix(pattern: &str) -> Option<String> {
    let body = pattern.strip_prefix('^')?;
    let body = [".*$", ".*", ".+$", ".+"]
        .iter()
        .find_map(|suffix| body.strip_suffix(suffix))
        .unwrap_or(body);
    let mut literal = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let escaped = chars.next()?;
                if escaped.is_ascii_alphanumeric() {
                    return None;
                }
                literal.push(escaped);
            }
            '.' | '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' | '^' | '$' => {
                return None;
            }
            other => literal.push(other),
        }
    }
    (!literal.is_empty()).then_some(literal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_failed_format_as_the_schema_spells_it() {
        let schema = crate::schema::compile_for_instances(&serde_json::json!({
            "properties": {"when": {"type": "string", "format": "date-time"}}
        }));
        let object = serde_json::json!({"when": "yesterday"});
        let found: Vec<String> = schema
            .map(|schema| instance_violations(&schema, (&object).into()))
            .unwrap_or_default()
            .into_iter()
            .map(|raised| raised.violation.to_string())
            .collect();
        assert_eq!(found, ["when: must be a valid date-time"]);
    }

    #[test]
    fn recognises_literal_prefix_patterns() {
        assert_eq!(literal_prefix("^https://"), Some("https://".into()));
        assert_eq!(literal_prefix("^https://.+$"), Some("https://".into()));
        assert_eq!(literal_prefix("^a\\.b"), Some("a.b".into()));
        assert_eq!(literal_prefix("^[A-Z]{3}$"), None);
        assert_eq!(literal_prefix("abc"), None);
        assert_eq!(literal_prefix("^a\\d"), None);
    }
}
