//! Compiling policy schemas (once, at load) and answering which fields a schema declares.

use jsonschema::json::{Json, SerdeJson};
use jsonschema::{Draft, Validator};

use crate::document::DocumentJson;
use serde_json::Value;

use crate::path::{FieldPath, Segment};

mod dialect;
pub(crate) mod formats;
pub(crate) mod listtype;
pub(crate) mod nulls;

const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// A schema compile error with the JSON pointer (inside the schema) where it was found.
#[derive(Debug)]
pub struct SchemaError {
    pub pointer: String,
    pub message: String,
}

pub fn compile(schema: &Value) -> Result<Validator, SchemaError> {
    compile_for::<SerdeJson>(schema)
}

/// A policy schema, compiled for documents: an object that comes as a `Value` is validated
/// through a document of it (its strings borrowed), so each schema is compiled and held once.
pub struct CompiledSchema {
    pub(crate) validator: Validator<DocumentJson>,
    /// The schema as written: where nulls are dropped, lists are sets or maps, and values
    /// correlate for ratcheting.
    pub(crate) source: Value,
    /// Whether `listtype` has anything to check.
    pub(crate) structural: bool,
}

impl std::fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledSchema").finish_non_exhaustive()
    }
}

pub fn compile_for_instances(schema: &Value) -> Result<CompiledSchema, SchemaError> {
    let validator = compile_for::<DocumentJson>(schema)?;
    Ok(CompiledSchema {
        validator,
        source: schema.clone(),
        structural: listtype::is_needed(schema),
    })
}

fn compile_for<F: Json>(schema: &Value) -> Result<Validator<F>, SchemaError> {
    if let Some(declared) = schema.get("$schema").and_then(Value::as_str)
        && declared.trim_end_matches('#') != DRAFT_2020_12
    {
        return Err(SchemaError {
            pointer: "/$schema".into(),
            message: format!("only JSON Schema draft 2020-12 is supported, not {declared:?}"),
        });
    }
    // Compiled from the schema as the apiserver reads it (the CRD dialect rewritten); errors
    // still point into the schema as written, which the rewrite keeps in shape.
    formats::register(jsonschema::options_for::<F>())
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .build(&dialect::to_json_schema(schema))
        .map_err(|e| SchemaError {
            pointer: e.instance_path().as_str().to_string(),
            message: e.masked().to_string(),
        })
}

/// Whether `schema` or any subschema of it (same-document `$ref` targets in `root` included)
/// has a `default` keyword.
pub(crate) fn declares_default(root: &Value, schema: &Value) -> bool {
    fn visit<'s>(root: &'s Value, schema: &'s Value, seen: &mut Vec<&'s Value>) -> bool {
        let Some(node) = schema.as_object() else {
            return false;
        };
        if node.contains_key("default") {
            return true;
        }
        if let Some(target) = ref_target(root, schema)
            && !seen.iter().any(|s| std::ptr::eq(*s, target))
        {
            seen.push(target);
            if visit(root, target, seen) {
                return true;
            }
        }
        dialect::subschemas(node).any(|sub| visit(root, sub, seen))
    }
    visit(root, schema, &mut Vec::new())
}

/// `schema` as plain JSON Schema: the CRD dialect rewritten (`dialect`).
pub(crate) fn dialect_of(schema: &Value) -> Value {
    dialect::to_json_schema(schema)
}

/// True when `path` names a field the schema describes through `properties`, `items`,
/// `additionalProperties`, `allOf` or same-document `$ref`s. Array indexes match `items`.
pub fn declares(schema: &Value, path: &FieldPath) -> bool {
    subschema(schema, path).is_some()
}

/// The schema a same-document `$ref` of `node` points at, when it resolves in `root`.
pub(crate) fn ref_target<'s>(root: &'s Value, node: &Value) -> Option<&'s Value> {
    node.get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|p| root.pointer(p))
}

/// The schema `additionalProperties` declares every other field with; `true` allows fields
/// but declares none.
pub(crate) fn additional_properties(node: &Value) -> Option<&Value> {
    node.get("additionalProperties").filter(|a| a.is_object())
}

/// The schema that describes the field at `path`, if the schema declares it.
pub fn subschema<'s>(schema: &'s Value, path: &FieldPath) -> Option<&'s Value> {
    subschema_from(schema, schema, &path.0, 0)
}

fn subschema_from<'s>(
    root: &'s Value,
    node: &'s Value,
    rest: &[Segment],
    depth: usize,
) -> Option<&'s Value> {
    let Some((first, tail)) = rest.split_first() else {
        return Some(node);
    };
    if depth > 64 {
        return None;
    }
    let obj = node.as_object()?;
    if let Some(found) =
        ref_target(root, node).and_then(|target| subschema_from(root, target, rest, depth + 1))
    {
        return Some(found);
    }
    if let Some(found) = obj
        .get("allOf")
        .and_then(Value::as_array)
        .and_then(|all_of| {
            all_of
                .iter()
                .find_map(|sub| subschema_from(root, sub, rest, depth + 1))
        })
    {
        return Some(found);
    }
    let child = match first {
        Segment::Key(key) => obj
            .get("properties")
            .and_then(|p| p.get(key))
            .or_else(|| additional_properties(node)),
        Segment::Index(_) => obj.get("items"),
    }?;
    subschema_from(root, child, tail, depth + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(text: &str) -> FieldPath {
        FieldPath::parse(text).unwrap_or_default()
    }

    #[test]
    fn finds_declared_fields_through_refs_items_and_maps() {
        let schema = json!({
            "$defs": {"retry": {"properties": {"maxAttempts": {}}}},
            "properties": {"spec": {"properties": {
                "retry": {"$ref": "#/$defs/retry"},
                "list": {"items": {"properties": {"x": {}}}},
                "map": {"additionalProperties": {"properties": {"y": {}}}}
            }}}
        });
        for ok in [
            "spec",
            "spec.retry.maxAttempts",
            "spec.list[0].x",
            "spec.map.any.y",
        ] {
            assert!(declares(&schema, &path(ok)), "{ok}");
        }
        for missing in [
            "status",
            "spec.retry.other",
            "spec.list.x",
            "spec.map.any.z",
        ] {
            assert!(!declares(&schema, &path(missing)), "{missing}");
        }
    }

    #[test]
    fn rejects_other_drafts_and_broken_schemas() {
        assert!(compile(&json!({"$schema": "http://json-schema.org/draft-07/schema#"})).is_err());
        let err = compile(&json!({"properties": {"a": {"type": "strin"}}})).err();
        assert!(err.is_some_and(|e| e.pointer.contains("/properties/a")));
        assert!(compile(&json!({"$schema": DRAFT_2020_12, "type": "object"})).is_ok());
    }
}
