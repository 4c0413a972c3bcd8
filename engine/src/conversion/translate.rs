//! Converting one object between versions, always through the hub. Fields are moved by the
//! rules, carried unchanged where both versions declare them (or neither does), and preserved
//! in an annotation where only one version declares them.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::fields;
use super::preserved;
use super::rules::KindConversion;
use crate::path::{FieldPath, Segment, keys_from_pointer, pointer_from_keys};
use crate::schema;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("object is not a JSON object")]
    NotAnObject,
    #[error("object has no apiVersion string")]
    MissingApiVersion,
    #[error("object has no kind string")]
    MissingKind,
    #[error("metadata must be an object")]
    Metadata,
    #[error("apiVersion {found:?} is not in group {expected:?} of desiredAPIVersion")]
    WrongGroup { found: String, expected: String },
    #[error("no conversion rules for kind {kind:?} in group {group:?}")]
    NoRules { group: String, kind: String },
    #[error(
        "version {version:?} of {kind} is not declared in the conversion rules (known: {known})"
    )]
    UnknownVersion {
        kind: String,
        version: String,
        known: String,
    },
    #[error("{0}")]
    Preserved(String),
}

/// Splits `group/version` (or a core `version`) into its parts.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.rsplit_once('/').unwrap_or(("", api_version))
}

impl KindConversion {
    /// Converts `object` (of this kind, in any declared version) to `target` version.
    pub fn convert(
        &self,
        object: Map<String, Value>,
        from: &str,
        target: &str,
    ) -> Result<Map<String, Value>, ConvertError> {
        for version in [from, target] {
            if self.schema_of(version).is_none() {
                return Err(ConvertError::UnknownVersion {
                    kind: self.kind.clone(),
                    version: version.to_string(),
                    known: self.versions().join(", "),
                });
            }
        }
        let mut current = object;
        if from != self.hub
            && let Some(spoke) = self.spokes.get(from)
        {
            let moves: Vec<(&FieldPath, &FieldPath)> =
                spoke.moves.iter().map(|m| (&m.spoke, &m.hub)).collect();
            current = step(
                current,
                Side {
                    version: from,
                    schema: &spoke.schema,
                },
                Side {
                    version: &self.hub,
                    schema: &self.hub_schema,
                },
                &moves,
            )?;
        }
        if target != self.hub
            && let Some(spoke) = self.spokes.get(target)
        {
            let moves: Vec<(&FieldPath, &FieldPath)> =
                spoke.moves.iter().map(|m| (&m.hub, &m.spoke)).collect();
            current = step(
                current,
                Side {
                    version: &self.hub,
                    schema: &self.hub_schema,
                },
                Side {
                    version: target,
                    schema: &spoke.schema,
                },
                &moves,
            )?;
        }
        current.insert(
            "apiVersion".into(),
            Value::String(format!("{}/{}", self.group, target)),
        );
        Ok(current)
    }
}

#[derive(Clone, Copy)]
struct Side<'a> {
    version: &'a str,
    schema: &'a Value,
}

/// One hop between the hub and a spoke (either direction).
fn step(
    mut object: Map<String, Value>,
    from: Side<'_>,
    to: Side<'_>,
    moves: &[(&FieldPath, &FieldPath)],
) -> Result<Map<String, Value>, ConvertError> {
    let api_version = object.remove("apiVersion");
    let kind = object.remove("kind");
    let mut metadata = match object.remove("metadata") {
        Some(Value::Object(m)) => m,
        None => Map::new(),
        Some(_) => return Err(ConvertError::Metadata),
    };
    let mut preserved = preserved::take(&mut metadata).map_err(ConvertError::Preserved)?;

    let mut out = Map::new();
    let mut stash: BTreeMap<String, Value> = BTreeMap::new();
    for (from_path, to_path) in moves {
        if let Some(value) = fields::take(&mut object, from_path)
            && let Err(value) = fields::put(&mut out, to_path, value)
        {
            stash.insert(pointer_from_keys(&key_segments(from_path)), value);
        }
    }
    let kept_parents = parents_that_survived_moves(&object, moves);
    let mut prefix = Vec::new();
    let roots = (vec![from.schema], vec![to.schema]);
    carry(
        object,
        &mut prefix,
        (&roots.0, &roots.1),
        from,
        to,
        &mut out,
        &mut stash,
    );
    mark_parents_the_way_back_would_drop(&out, moves, kept_parents, &mut stash);

    if let Some(restore) = preserved.fields.remove(to.version) {
        for (pointer, value) in restore {
            fields::merge_absent(&mut out, &keys_from_pointer(&pointer), value);
        }
    }
    if !stash.is_empty() {
        preserved.fields.insert(from.version.to_string(), stash);
    }
    preserved::put(&mut metadata, preserved).map_err(ConvertError::Preserved)?;

    if let Some(v) = api_version {
        out.insert("apiVersion".into(), v);
    }
    if let Some(k) = kind {
        out.insert("kind".into(), k);
    }
    out.insert("metadata".into(), Value::Object(metadata));
    Ok(out)
}

/// The subschemas of each version that describe the current prefix (empty: not declared).
type Declared<'a, 's> = (&'a [&'s Value], &'a [&'s Value]);

/// Copies what both versions agree on; stashes what only one of them declares, and anything
/// that would land on data a move already put there.
fn carry(
    source: Map<String, Value>,
    prefix: &mut Vec<String>,
    declared: Declared<'_, '_>,
    from: Side<'_>,
    to: Side<'_>,
    out: &mut Map<String, Value>,
    stash: &mut BTreeMap<String, Value>,
) {
    for (key, value) in source {
        let in_from = schema::declared_children(from.schema, declared.0, &key);
        let in_to = schema::declared_children(to.schema, declared.1, &key);
        // A field travels as it is only when both versions agree on it: both declare it, or
        // neither does (unknown data). Declared on one side only, it would change meaning in
        // the other version, so it waits in the annotation for the way back.
        let same_standing = in_from.is_empty() == in_to.is_empty();
        let below = (in_from.as_slice(), in_to.as_slice());
        if !same_standing {
            stash_at(prefix, key, value, stash);
            continue;
        }
        match (value, out.get_mut(&key)) {
            (Value::Object(child), None) => {
                let mut target = Map::new();
                prefix.push(key);
                carry(child, prefix, below, from, to, &mut target, stash);
                let key = prefix.pop().unwrap_or_default();
                out.insert(key, Value::Object(target));
            }
            (Value::Object(child), Some(Value::Object(existing))) => {
                prefix.push(key);
                carry(child, prefix, below, from, to, existing, stash);
                prefix.pop();
            }
            (value, None) => {
                out.insert(key, value);
            }
            (value, Some(_)) => stash_at(prefix, key, value, stash),
        }
    }
}

fn stash_at(
    prefix: &mut Vec<String>,
    key: String,
    value: Value,
    stash: &mut BTreeMap<String, Value>,
) {
    prefix.push(key);
    stash.insert(pointer_from_keys(prefix), value);
    prefix.pop();
}

/// Ancestors of move targets that the source still has as objects after its moved fields left.
fn parents_that_survived_moves(
    source: &Map<String, Value>,
    moves: &[(&FieldPath, &FieldPath)],
) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for (_, to_path) in moves {
        let keys = key_segments(to_path);
        for len in 1..keys.len() {
            let ancestor = &keys[..len];
            let is_object = ancestor
                .iter()
                .try_fold(source, |map, key| map.get(key)?.as_object())
                .is_some();
            if is_object && !found.iter().any(|f: &Vec<String>| f.as_slice() == ancestor) {
                found.push(ancestor.to_vec());
            }
        }
    }
    found
}

/// Moving a field back removes parents it leaves empty, which cannot tell "created for the move"
/// from "was there, empty". Where the source really had such a parent, an empty-object marker in
/// the annotation brings it back.
fn mark_parents_the_way_back_would_drop(
    out: &Map<String, Value>,
    moves: &[(&FieldPath, &FieldPath)],
    candidates: Vec<Vec<String>>,
    stash: &mut BTreeMap<String, Value>,
) {
    if candidates.is_empty() {
        return;
    }
    let mut way_back = out.clone();
    for (_, to_path) in moves {
        fields::take(&mut way_back, to_path);
    }
    let exists = |map: &Map<String, Value>, keys: &[String]| {
        keys.iter()
            .try_fold(map, |m, key| m.get(key)?.as_object())
            .is_some()
    };
    for ancestor in candidates {
        let pointer = pointer_from_keys(&ancestor);
        if exists(out, &ancestor) && !exists(&way_back, &ancestor) && !stash.contains_key(&pointer)
        {
            stash.insert(pointer, Value::Object(Map::new()));
        }
    }
}

fn key_segments(path: &FieldPath) -> Vec<String> {
    path.0
        .iter()
        .map(|s| match s {
            Segment::Key(k) => k.clone(),
            Segment::Index(i) => i.to_string(),
        })
        .collect()
}
