//! Conversion rules compiled from a policy's `spec.conversion`, with the checks that make a
//! rule set provably round-trippable before it is ever used.

use std::collections::BTreeMap;

use serde_json::Value;

use super::declared::{Compiler, DeclId, Declarations};
use super::fields::KeyPath;
use super::spec::{ConversionSpec, SpokeSpec};
use crate::path::{FieldPath, Segment, escape_pointer};
use crate::schema;

#[derive(Debug, Clone)]
pub(crate) struct Move {
    pub spoke: FieldPath,
    pub hub: FieldPath,
    /// The same two places, ready for moving values.
    pub spoke_keys: KeyPath,
    pub hub_keys: KeyPath,
}

#[derive(Debug, Clone)]
pub(crate) struct Spoke {
    pub schema: Value,
    pub moves: Vec<Move>,
    /// Its schema's root in the kind's `Declarations`.
    pub declared: DeclId,
}

/// Everything needed to convert one kind between its versions.
#[derive(Debug, Clone)]
pub struct KindConversion {
    pub group: String,
    pub kind: String,
    pub hub: String,
    pub(crate) hub_schema: Value,
    pub(crate) hub_declared: DeclId,
    pub(crate) spokes: BTreeMap<String, Spoke>,
    /// Every version's schema, compiled for the per-key lookups of a conversion.
    pub(crate) declarations: Declarations,
}

impl KindConversion {
    pub fn versions(&self) -> Vec<&str> {
        let mut all: Vec<&str> = std::iter::once(self.hub.as_str())
            .chain(self.spokes.keys().map(String::as_str))
            .collect();
        all.sort_unstable();
        all
    }

    pub fn schema_of(&self, version: &str) -> Option<&Value> {
        if version == self.hub {
            Some(&self.hub_schema)
        } else {
            self.spokes.get(version).map(|s| &s.schema)
        }
    }
}

/// Compiles the rules, reporting each problem with the JSON pointer (inside the policy
/// document) it concerns. Returns `None` when anything was reported.
pub fn compile(
    spec: &ConversionSpec,
    group: &str,
    kind: &str,
    hub_schema: Option<&Value>,
    matched_versions: &[String],
    report: &mut dyn FnMut(&str, String),
) -> Option<KindConversion> {
    let mut count = 0usize;
    let mut fail = |pointer: &str, message: String| {
        count += 1;
        report(pointer, message);
    };
    let Some(hub_schema) = hub_schema else {
        fail(
            "/spec/conversion",
            "spec.conversion needs spec.schema: it is the schema of the hub version".into(),
        );
        return None;
    };
    if !matched_versions.contains(&spec.hub) {
        fail(
            "/spec/conversion/hub",
            format!(
                "spec.conversion.hub {:?} must be one of spec.match.versions (the version this policy's schema describes)",
                spec.hub
            ),
        );
    }
    if spec.spokes.is_empty() {
        fail(
            "/spec/conversion/spokes",
            "spec.conversion.spokes must name at least one other version".into(),
        );
    }
    let mut compiler = Compiler::default();
    let hub_declared = compiler.add(hub_schema);
    let mut spokes = BTreeMap::new();
    for (version, spoke) in &spec.spokes {
        if version == &spec.hub {
            fail(
                &format!("/spec/conversion/spokes/{}", escape_pointer(version)),
                format!("spec.conversion.spokes.{version}: the hub version cannot also be a spoke"),
            );
            continue;
        }
        if let Some(compiled) = compile_spoke(version, spoke, hub_schema, &mut compiler, &mut fail)
        {
            spokes.insert(version.clone(), compiled);
        }
    }
    if count > 0 {
        return None;
    }
    Some(KindConversion {
        group: group.to_string(),
        kind: kind.to_string(),
        hub: spec.hub.clone(),
        hub_schema: hub_schema.clone(),
        hub_declared,
        spokes,
        declarations: compiler.finish(),
    })
}

/// One spoke version: its schema must compile and each of its field moves must be lossless.
/// Problems are reported through `fail`; the caller discards the whole set if any were.
fn compile_spoke<'s>(
    version: &str,
    spoke: &'s SpokeSpec,
    hub_schema: &Value,
    declarations: &mut Compiler<'s>,
    fail: &mut dyn FnMut(&str, String),
) -> Option<Spoke> {
    let base = format!("/spec/conversion/spokes/{}", escape_pointer(version));
    let label = format!("spec.conversion.spokes.{version}");
    if let Err(e) = schema::compile(&spoke.schema) {
        fail(
            &format!("{base}/schema{}", e.pointer),
            format!("{label}.schema: {}", e.message),
        );
        return None;
    }
    let mut moves: Vec<Move> = Vec::new();
    for (idx, field) in spoke.fields.iter().enumerate() {
        let pointer = format!("{base}/fields/{idx}");
        let here = format!("{label}.fields[{idx}]");
        let parsed = FieldPath::parse(&field.spoke)
            .and_then(|s| FieldPath::parse(&field.hub).map(|h| (s, h)));
        let (spoke_path, hub_path) = match parsed {
            Ok(pair) => pair,
            Err(e) => {
                fail(&pointer, format!("{here}: {e}"));
                continue;
            }
        };
        match check_move(
            &spoke_path,
            &hub_path,
            &spoke.schema,
            hub_schema,
            &moves,
            version,
        ) {
            Ok(()) => match (KeyPath::new(&spoke_path), KeyPath::new(&hub_path)) {
                (Some(spoke_keys), Some(hub_keys)) => moves.push(Move {
                    spoke: spoke_path,
                    hub: hub_path,
                    spoke_keys,
                    hub_keys,
                }),
                // `check_move` already refused paths through array elements.
                _ => fail(&pointer, format!("{here}: array elements cannot be moved")),
            },
            Err(reason) => fail(&pointer, format!("{here}: {reason}")),
        }
    }
    Some(Spoke {
        schema: spoke.schema.clone(),
        moves,
        declared: declarations.add(&spoke.schema),
    })
}

/// A move is lossless when both ends are declared, of the same JSON type, and neither end can
/// collide with data that travels unmoved or with another move.
fn check_move(
    spoke_path: &FieldPath,
    hub_path: &FieldPath,
    spoke_schema: &Value,
    hub_schema: &Value,
    earlier: &[Move],
    version: &str,
) -> Result<(), String> {
    for path in [spoke_path, hub_path] {
        if path.0.iter().any(|s| matches!(s, Segment::Index(_))) {
            return Err(format!(
                "{path}: array elements cannot be moved; move the whole array"
            ));
        }
        if matches!(path.0.first(), Some(Segment::Key(k)) if k == "metadata" || k == "apiVersion" || k == "kind")
        {
            return Err(format!(
                "{path}: only fields outside metadata, apiVersion and kind can be moved"
            ));
        }
    }
    let spoke_decl = schema::subschema(spoke_schema, spoke_path)
        .ok_or_else(|| format!("{spoke_path} is not declared in the {version} schema"))?;
    let hub_decl = schema::subschema(hub_schema, hub_path)
        .ok_or_else(|| format!("{hub_path} is not declared in the hub schema"))?;
    if let (Some(a), Some(b)) = (spoke_decl.get("type"), hub_decl.get("type"))
        && a != b
    {
        return Err(format!(
            "{spoke_path} has type {a} but {hub_path} has type {b}; a round trip could not restore the value"
        ));
    }
    if spoke_path != hub_path {
        if schema::declares(spoke_schema, hub_path) {
            return Err(format!(
                "{hub_path} is also declared in the {version} schema, so it would collide with the moved {spoke_path}"
            ));
        }
        if schema::declares(hub_schema, spoke_path) {
            return Err(format!(
                "{spoke_path} is also declared in the hub schema, so it would collide with the moved {hub_path}"
            ));
        }
    }
    for other in earlier {
        if overlaps(&other.spoke, spoke_path) || overlaps(&other.hub, hub_path) {
            return Err(format!(
                "overlaps the move {} <-> {}; each field may be moved once and moves may not nest",
                other.spoke, other.hub
            ));
        }
    }
    Ok(())
}

fn overlaps(a: &FieldPath, b: &FieldPath) -> bool {
    a.0.starts_with(&b.0) || b.0.starts_with(&a.0)
}
