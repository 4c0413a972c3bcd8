//! Converting one object between versions, always through the hub. Fields are moved by the
//! rules, carried unchanged where both versions declare them (or neither does), and preserved
//! in an annotation where only one version declares them.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::declared::{DeclId, Declarations};
use super::fields;
use super::fields::KeyPath;
use super::preserved;
use super::rules::KindConversion;
use super::rules::Move;
use crate::path::{keys_from_pointer, pointer_from_keys};

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
            current = step(
                current,
                Side {
                    version: from,
                    declared: spoke.declared,
                },
                Side {
                    version: &self.hub,
                    declared: self.hub_declared,
                },
                Moves {
                    moves: &spoke.moves,
                    to_hub: true,
                },
                &self.declarations,
            )?;
        }
        if target != self.hub
            && let Some(spoke) = self.spokes.get(target)
        {
            current = step(
                current,
                Side {
                    version: &self.hub,
                    declared: self.hub_declared,
                },
                Side {
                    version: target,
                    declared: spoke.declared,
                },
                Moves {
                    moves: &spoke.moves,
                    to_hub: false,
                },
                &self.declarations,
            )?;
        }
        let mut api_version = String::with_capacity(self.group.len() + 1 + target.len());
        api_version.push_str(&self.group);
        api_version.push('/');
        api_version.push_str(target);
        current.insert("apiVersion".into(), Value::String(api_version));
        Ok(current)
    }
}

#[derive(Clone, Copy)]
struct Side<'a> {
    version: &'a str,
    /// The version's schema root in the kind's `Declarations`.
    declared: DeclId,
}

/// A spoke's field moves, in the direction of one step.
#[derive(Clone, Copy)]
struct Moves<'a> {
    moves: &'a [Move],
    to_hub: bool,
}

impl<'a> Moves<'a> {
    /// Each move as (where the value is, where it goes).
    fn ends(self) -> impl Iterator<Item = (&'a KeyPath, &'a KeyPath)> {
        self.moves.iter().map(move |m| {
            if self.to_hub {
                (&m.spoke_keys, &m.hub_keys)
            } else {
                (&m.hub_keys, &m.spoke_keys)
            }
        })
    }
}

/// One hop between the hub and a spoke (either direction).
fn step(
    mut object: Map<String, Value>,
    from: Side<'_>,
    to: Side<'_>,
    moves: Moves<'_>,
    declarations: &Declarations,
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
    for (from_path, to_path) in moves.ends() {
        if let Some(value) = fields::take(&mut object, &from_path.keys)
            && let Err(value) = fields::put(&mut out, &to_path.keys, value)
        {
            stash.insert(from_path.pointer.clone(), value);
        }
    }
    let kept_parents = parents_that_survived_moves(&object, moves);
    Carrier {
        declarations,
        prefix: Vec::new(),
        stash: &mut stash,
    }
    .carry(object, (&[from.declared], &[to.declared]), &mut out);
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

/// The subschemas of each version that declare the current prefix (empty: not declared).
type Declared<'a> = (&'a [DeclId], &'a [DeclId]);

/// Copies what both versions agree on into the converted object; stashes what only one of
/// them declares, and anything that would land on data a move already put there.
struct Carrier<'a> {
    declarations: &'a Declarations,
    /// Keys from the object's root to the map being carried.
    prefix: Vec<String>,
    stash: &'a mut BTreeMap<String, Value>,
}

impl Carrier<'_> {
    fn carry(
        &mut self,
        source: Map<String, Value>,
        declared: Declared<'_>,
        out: &mut Map<String, Value>,
    ) {
        for (key, value) in source {
            let in_from = self.declarations.children(declared.0, &key);
            let in_to = self.declarations.children(declared.1, &key);
            // A field travels as it is only when both versions agree on it: both declare it,
            // or neither does (unknown data). Declared on one side only, it would change
            // meaning in the other version, so it waits in the annotation for the way back.
            if in_from.is_empty() != in_to.is_empty() {
                self.stash_at(key, value);
                continue;
            }
            // Declared alike (the same subschemas, or none) and with nothing moved into it,
            // nothing below can differ: the whole value travels without a visit to its keys.
            let alike = in_from == in_to;
            match (value, out.get_mut(&key)) {
                (value, None) if alike => {
                    out.insert(key, value);
                }
                (Value::Object(child), None) => {
                    let mut target = Map::new();
                    self.prefix.push(key);
                    self.carry(child, (&in_from, &in_to), &mut target);
                    let key = self.prefix.pop().unwrap_or_default();
                    out.insert(key, Value::Object(target));
                }
                (Value::Object(child), Some(Value::Object(existing))) => {
                    self.prefix.push(key);
                    self.carry(child, (&in_from, &in_to), existing);
                    self.prefix.pop();
                }
                (value, None) => {
                    out.insert(key, value);
                }
                (value, Some(_)) => self.stash_at(key, value),
            }
        }
    }

    fn stash_at(&mut self, key: String, value: Value) {
        self.prefix.push(key);
        self.stash.insert(pointer_from_keys(&self.prefix), value);
        self.prefix.pop();
    }
}

/// Ancestors of move targets that the source still has as objects after its moved fields left.
fn parents_that_survived_moves<'m>(
    source: &Map<String, Value>,
    moves: Moves<'m>,
) -> Vec<&'m [String]> {
    let mut found: Vec<&[String]> = Vec::new();
    for (_, to_path) in moves.ends() {
        let keys = to_path.keys.as_slice();
        for len in 1..keys.len() {
            let ancestor = &keys[..len];
            if object_at(source, ancestor).is_some() && !found.contains(&ancestor) {
                found.push(ancestor);
            }
        }
    }
    found
}

fn object_at<'v>(map: &'v Map<String, Value>, keys: &[String]) -> Option<&'v Map<String, Value>> {
    keys.iter().try_fold(map, |m, key| m.get(key)?.as_object())
}

/// Moving a field back removes parents it leaves empty, which cannot tell "created for the move"
/// from "was there, empty". Where the source really had such a parent, an empty-object marker in
/// the annotation brings it back.
fn mark_parents_the_way_back_would_drop(
    out: &Map<String, Value>,
    moves: Moves<'_>,
    candidates: Vec<&[String]>,
    stash: &mut BTreeMap<String, Value>,
) {
    for ancestor in candidates {
        let Some(parent) = object_at(out, ancestor) else {
            continue;
        };
        let taken_below: Vec<&[String]> = moves
            .ends()
            .filter_map(|(_, to_path)| to_path.keys.strip_prefix(ancestor))
            .collect();
        if survives_taking(parent, &taken_below) {
            continue;
        }
        stash
            .entry(pointer_from_keys(ancestor))
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

/// Whether `map` is still there after `fields::take` of each of `paths` (relative to it, none
/// inside another, as the rules guarantee): a take removes the maps it empties, so the map
/// stays when something in it stays, or when it was empty already (nothing in it could be
/// taken). Answers without the copy that taking them for real would need.
fn survives_taking(map: &Map<String, Value>, paths: &[&[String]]) -> bool {
    let member_survives = |key: &str, child: &Value| {
        let below: Vec<&[String]> = paths
            .iter()
            .filter_map(|path| path.split_first())
            .filter(|(first, _)| first.as_str() == key)
            .map(|(_, rest)| rest)
            .collect();
        if below.is_empty() {
            return true;
        }
        if below.iter().any(|rest| rest.is_empty()) {
            return false;
        }
        // A take through a value that is not an object takes nothing.
        child
            .as_object()
            .is_none_or(|child| survives_taking(child, &below))
    };
    map.is_empty() || map.iter().any(|(key, value)| member_survives(key, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What `survives_taking` must answer: take every path out of a copy, then look.
    fn survives_by_taking(map: &Map<String, Value>, paths: &[&[String]]) -> bool {
        let mut copy = Value::Object(map.clone());
        for path in paths {
            if let Value::Object(root) = &mut copy {
                // Paths start inside `map`: wrap it so that emptying it shows as removal.
                let mut outer = Map::new();
                outer.insert("m".into(), Value::Object(std::mem::take(root)));
                let mut keys = vec!["m".to_string()];
                keys.extend(path.iter().cloned());
                fields::take(&mut outer, &keys);
                copy = outer.remove("m").unwrap_or(Value::Null);
            }
        }
        copy.is_object()
    }

    fn tree() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![Just(Value::Null), (0i64..3).prop_map(Value::from)];
        leaf.prop_recursive(4, 24, 3, |inner| {
            prop::collection::btree_map("[abc]", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
        })
    }

    /// Paths none of which is a prefix of another, as the rules allow.
    fn paths() -> impl Strategy<Value = Vec<Vec<String>>> {
        prop::collection::vec(prop::collection::vec("[abc]", 1..4), 0..4).prop_map(|mut all| {
            let mut kept: Vec<Vec<String>> = Vec::new();
            all.retain(|p| !p.is_empty());
            for path in all {
                if !kept
                    .iter()
                    .any(|k| k.starts_with(&path) || path.starts_with(k))
                {
                    kept.push(path);
                }
            }
            kept
        })
    }

    proptest! {
        #[test]
        fn survival_is_answered_as_taking_for_real_would(map in tree(), paths in paths()) {
            let map = match map {
                Value::Object(m) => m,
                other => Map::from_iter([("a".to_string(), other)]),
            };
            let paths: Vec<&[String]> = paths.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(survives_taking(&map, &paths), survives_by_taking(&map, &paths));
        }
    }

    #[test]
    fn an_emptied_map_goes_and_an_empty_one_stays() {
        let keys = |p: &[&str]| p.iter().map(|k| k.to_string()).collect::<Vec<_>>();
        let retry = keys(&["retry"]);
        let map = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert!(!survives_taking(
            &map(serde_json::json!({"retry": 3})),
            &[&retry]
        ));
        assert!(survives_taking(
            &map(serde_json::json!({"retry": 3, "x": 1})),
            &[&retry]
        ));
        assert!(survives_taking(&map(serde_json::json!({})), &[&retry]));
        let deep = keys(&["a", "b"]);
        assert!(!survives_taking(
            &map(serde_json::json!({"a": {"b": 1}})),
            &[&deep]
        ));
        assert!(survives_taking(
            &map(serde_json::json!({"a": {"b": 1, "c": {}}})),
            &[&deep]
        ));
        assert!(survives_taking(&map(serde_json::json!({"a": 5})), &[&deep]));
    }
}
