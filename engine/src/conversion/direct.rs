//! Converting one object read as a document (strings borrowed from the review's text) without
//! building it as a `Value`: the answer is the source's own values, arranged as the rules move
//! them, and written straight from the document.
//!
//! A callgrind profile of a one-object conversion put four fifths of its instructions in the
//! `Value` tree: reading it (an allocation per string and per map node), moving its entries
//! into new maps, writing and freeing it. Here only the objects on a moved field's way (and
//! metadata, when the preserved-fields annotation changes) are built; everything else is a
//! handle into the document. Stashed and restored fields become `Value`s: they are few.
//!
//! It follows `translate::step` exactly for one hop (to or from the hub), the preserved-fields
//! annotation included, and says `None` for two hops and for errors (which `evaluate::convert`
//! words); the answers agree (`tests::agrees_with_translate*`).

use std::collections::BTreeMap;

use super::declared::{DeclId, Declarations};
use super::preserved::{PRESERVED_ANNOTATION, Preserved};
use super::translate::split_api_version;
use crate::Store;
use crate::document::{Node, ObjectNode, name_order, position_by_name, same_name};
use crate::path::{keys_from_pointer, pointer_from_keys};
use serde_json::{Map, Value};
use smallvec::SmallVec;

/// A converted object: values of the source document, arranged as the conversion put them.
#[derive(Debug, Clone)]
pub enum Converted<'a> {
    /// A value of the source, as it is.
    Source(Node<'a>),
    /// An object built by the conversion; members in name order, as `serde_json::Map` keeps
    /// them (so the answer is written in the same order either way).
    Object(Vec<(Key<'a>, Converted<'a>)>),
    /// A value made here: the new apiVersion, the annotation, restored fields.
    Value(Value),
}

/// A member name: the source's or the rules' (borrowed), or one from the annotation.
pub type Key<'a> = std::borrow::Cow<'a, str>;

impl Converted<'_> {
    /// The same JSON as a `Value` (tests, and callers that need a tree).
    pub fn to_value(&self) -> Value {
        match self {
            Converted::Source(node) => node.to_value(),
            Converted::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(key, value)| (key.to_string(), value.to_value()))
                    .collect::<Map<String, Value>>(),
            ),
            Converted::Value(value) => value.clone(),
        }
    }
}

type Members<'a> = Vec<(Key<'a>, Converted<'a>)>;

/// Paths (key lists) relative to the object being looked at: as many as a kind has moves,
/// a handful, kept off the heap (this runs for every member on a moved field's way).
type Paths<'p> = SmallVec<[&'p [String]; 4]>;

/// A move in this hop's direction: where the value is, where it goes, and the pointer of
/// where it is (its name in the annotation when it cannot go).
type End<'r> = (&'r [String], &'r [String], &'r str);

/// Fields `step` removes before it moves or carries anything, and puts back after.
const ENVELOPE: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// `object` converted to `desired` (`group/version`); `None` sends it to `evaluate::convert`,
/// which answers everything (errors included).
pub fn convert<'a>(store: &'a Store, object: Node<'a>, desired: &str) -> Option<Converted<'a>> {
    let root = object.object()?;
    let api_version = root.find("apiVersion")?.as_str()?;
    if api_version == desired {
        return Some(Converted::Source(object));
    }
    let kind = root.find("kind")?.as_str()?;
    let (group, from) = split_api_version(api_version);
    let (desired_group, target) = split_api_version(desired);
    if group != desired_group {
        return None;
    }
    let rules = store.conversion_for(group, kind)?;
    rules.schema_of(from)?;
    rules.schema_of(target)?;
    let (spoke, to_hub) = if target == rules.hub {
        (rules.spokes.get(from)?, true)
    } else if from == rules.hub {
        (rules.spokes.get(target)?, false)
    } else {
        // Two hops, through the hub.
        return None;
    };
    let (from_declared, to_declared) = if to_hub {
        (spoke.declared, rules.hub_declared)
    } else {
        (rules.hub_declared, spoke.declared)
    };
    let ends: SmallVec<[End<'_>; 4]> = spoke
        .moves
        .iter()
        .map(|m| {
            if to_hub {
                (
                    m.spoke_keys.keys.as_slice(),
                    m.hub_keys.keys.as_slice(),
                    m.spoke_keys.pointer.as_str(),
                )
            } else {
                (
                    m.hub_keys.keys.as_slice(),
                    m.spoke_keys.keys.as_slice(),
                    m.hub_keys.pointer.as_str(),
                )
            }
        })
        .collect();
    let in_envelope = |keys: &[String]| keys.first().is_none_or(|k| ENVELOPE.contains(&k.as_str()));
    if ends
        .iter()
        .any(|(from, to, _)| in_envelope(from) || in_envelope(to))
    {
        return None;
    }
    let (mut metadata, mut preserved) = match root.find("metadata") {
        Some(metadata) => take_preserved(metadata)?,
        // `step` gives every converted object a metadata map.
        None => (Converted::Object(Vec::new()), Preserved::default()),
    };

    let mut out: Members<'a> = Vec::with_capacity(root.len() + ends.len());
    let mut stash: BTreeMap<String, Value> = BTreeMap::new();
    let mut taken: Paths<'a> = SmallVec::new();
    for &(from_keys, to_keys, from_pointer) in &ends {
        if let Some(value) = lookup(root, from_keys) {
            taken.push(from_keys);
            if !put(&mut out, to_keys, Converted::Source(value)) {
                stash.insert(from_pointer.to_string(), value.to_value());
            }
        }
    }
    let mut carrier = Carrier {
        declarations: &rules.declarations,
        prefix: Vec::new(),
        stash: &mut stash,
    };
    carrier.carry(
        root,
        &taken,
        (&[from_declared], &[to_declared]),
        &mut out,
        true,
    );
    // Moving a field back removes parents it leaves empty; where the source really had such a
    // parent, `translate` marks it in the annotation, and so does this.
    let mut ancestors: Paths<'a> = SmallVec::new();
    for &(_, to_keys, _) in &ends {
        for len in 1..to_keys.len() {
            let ancestor = &to_keys[..len];
            if ancestors.contains(&ancestor) {
                continue;
            }
            ancestors.push(ancestor);
            if !object_after_taking(root, &taken, ancestor) {
                continue;
            }
            let Some(parent) = built_object_at(&out, ancestor) else {
                continue;
            };
            let below: Paths<'_> = ends
                .iter()
                .filter_map(|(_, to, _)| to.strip_prefix(ancestor))
                .collect();
            if !survives_taking(parent, &below) {
                stash
                    .entry(pointer_from_keys(ancestor))
                    .or_insert_with(|| Value::Object(Map::new()));
            }
        }
    }
    let to_version = if to_hub { rules.hub.as_str() } else { target };
    let from_version = if to_hub { from } else { rules.hub.as_str() };
    if let Some(restore) = preserved.fields.remove(to_version) {
        for (pointer, value) in restore {
            merge_absent(&mut out, &keys_from_pointer(&pointer), value);
        }
    }
    if !stash.is_empty() {
        preserved.fields.insert(from_version.to_string(), stash);
    }
    put_preserved(&mut metadata, preserved)?;

    let api_version = format!("{}/{target}", rules.group);
    insert(
        &mut out,
        "apiVersion".into(),
        Converted::Value(Value::String(api_version)),
    );
    insert(
        &mut out,
        "kind".into(),
        Converted::Source(root.find("kind")?),
    );
    insert(&mut out, "metadata".into(), metadata);
    Some(Converted::Object(out))
}

/// `preserved::take`: metadata without the annotation (built only when it had one), and what
/// the annotation held; `None` for metadata that is not an object or an annotation that does
/// not read (errors `translate` words).
fn take_preserved(metadata: Node<'_>) -> Option<(Converted<'_>, Preserved)> {
    let object = metadata.object()?;
    let annotations = object.find("annotations").and_then(|a| a.object());
    let Some(raw) = annotations.and_then(|a| a.find(PRESERVED_ANNOTATION)) else {
        return Some((Converted::Source(metadata), Preserved::default()));
    };
    let preserved: Preserved = serde_json::from_str(raw.as_str()?).ok()?;
    let mut members = members_of(object);
    let others: Members<'_> = members_of(annotations?)
        .into_iter()
        .filter(|(key, _)| key != PRESERVED_ANNOTATION)
        .collect();
    if preserved.annotations_added && others.is_empty() {
        members.retain(|(key, _)| key != "annotations");
    } else {
        insert(
            &mut members,
            "annotations".into(),
            Converted::Object(others),
        );
    }
    Some((Converted::Object(members), preserved))
}

/// `preserved::put`: the annotation written when it still carries data.
fn put_preserved(metadata: &mut Converted<'_>, mut preserved: Preserved) -> Option<()> {
    preserved.fields.retain(|_, fields| !fields.is_empty());
    if preserved.fields.is_empty() {
        return Some(());
    }
    let metadata = built(metadata)?;
    let has_map = metadata.iter().any(|(key, value)| {
        key == "annotations"
            && match value {
                Converted::Object(_) => true,
                Converted::Source(node) => node.object().is_some(),
                Converted::Value(value) => value.is_object(),
            }
    });
    if !has_map {
        preserved.annotations_added = true;
        insert(
            metadata,
            "annotations".into(),
            Converted::Object(Vec::new()),
        );
    }
    let text = serde_json::to_string(&preserved).ok()?;
    let at = position_by_name(metadata, "annotations")?;
    let annotations = built(&mut metadata.get_mut(at)?.1)?;
    insert(
        annotations,
        PRESERVED_ANNOTATION.into(),
        Converted::Value(Value::String(text)),
    );
    Some(())
}

fn members_of(object: ObjectNode<'_>) -> Members<'_> {
    object
        .iter()
        .map(|(key, value)| (Key::Borrowed(key), Converted::Source(value)))
        .collect()
}

/// The members of an object of the result, built in place from a source or made value if it
/// was one; `None` when it is not an object.
fn built<'v, 'a>(value: &'v mut Converted<'a>) -> Option<&'v mut Members<'a>> {
    let members = match value {
        Converted::Object(_) => None,
        Converted::Source(node) => Some(members_of(node.object()?)),
        Converted::Value(Value::Object(map)) => Some(
            std::mem::take(map)
                .into_iter()
                .map(|(key, value)| (Key::Owned(key), Converted::Value(value)))
                .collect(),
        ),
        Converted::Value(_) => return None,
    };
    if let Some(members) = members {
        *value = Converted::Object(members);
    }
    match value {
        Converted::Object(members) => Some(members),
        _ => None,
    }
}

/// `fields::merge_absent` into the result.
fn merge_absent(members: &mut Members<'_>, keys: &[String], value: Value) {
    match keys {
        [] => {}
        [last] => match members.binary_search_by(|(k, _)| name_order(k, last.as_str())) {
            Err(at) => members.insert(at, (Key::Owned(last.clone()), Converted::Value(value))),
            Ok(at) => {
                if let (Some((_, existing)), Value::Object(incoming)) = (members.get_mut(at), value)
                    && let Some(existing) = built(existing)
                {
                    for (key, value) in incoming {
                        merge_absent(existing, std::slice::from_ref(&key), value);
                    }
                }
            }
        },
        [first, rest @ ..] => {
            let at = match members.binary_search_by(|(k, _)| name_order(k, first.as_str())) {
                Ok(at) => at,
                Err(at) => {
                    members.insert(
                        at,
                        (Key::Owned(first.clone()), Converted::Object(Vec::new())),
                    );
                    at
                }
            };
            if let Some(child) = members.get_mut(at).and_then(|(_, child)| built(child)) {
                merge_absent(child, rest, value);
            }
        }
    }
}

/// The value at `keys`, through objects only (as `fields::take` finds it).
fn lookup<'a>(object: ObjectNode<'a>, keys: &[String]) -> Option<Node<'a>> {
    let (last, parents) = keys.split_last()?;
    let mut object = object;
    for key in parents {
        object = object.find(key)?.object()?;
    }
    object.find(last)
}

/// `fields::put` into the result: parents are created; an occupied target, or a parent that
/// is not an object, fails.
fn put<'a>(members: &mut Members<'a>, keys: &'a [String], value: Converted<'a>) -> bool {
    let Some((first, rest)) = keys.split_first() else {
        return false;
    };
    let at = members.binary_search_by(|(k, _)| name_order(k, first.as_str()));
    if rest.is_empty() {
        let Err(at) = at else { return false };
        members.insert(at, (Key::Borrowed(first), value));
        return true;
    }
    let at = at.unwrap_or_else(|at| {
        // Room for the few moved fields a parent usually receives, without regrowing.
        let parent = Converted::Object(Vec::with_capacity(4));
        members.insert(at, (Key::Borrowed(first), parent));
        at
    });
    match members.get_mut(at).and_then(|(_, child)| built(child)) {
        Some(child) => put(child, rest, value),
        None => false,
    }
}

fn insert<'a>(members: &mut Members<'a>, key: Key<'a>, value: Converted<'a>) {
    match members.binary_search_by(|(k, _)| name_order(k, key.as_ref())) {
        Ok(at) => {
            if let Some(slot) = members.get_mut(at) {
                slot.1 = value;
            }
        }
        Err(at) => members.insert(at, (key, value)),
    }
}

/// `name == key`, for field names: compared in place (`==` on strings calls `memcmp` whenever
/// the lengths agree, for every member of every object on a moved field's way).
fn is(name: &str, key: &str) -> bool {
    same_name(name.as_bytes(), key.as_bytes())
}

/// The paths of `paths` that go through `key`, without it.
fn through<'p>(paths: &[&'p [String]], key: &str) -> Paths<'p> {
    // Most members are on no path: answered without building anything.
    if !paths
        .iter()
        .any(|path| path.first().is_some_and(|first| is(first, key)))
    {
        return SmallVec::new();
    }
    // Pushed one by one: collecting the filtered iterator into the small vector cost several
    // times as much (its `extend` reserves and re-checks the inline capacity on each item).
    let mut below = Paths::new();
    for path in paths {
        if let Some((first, rest)) = path.split_first()
            && is(first, key)
        {
            below.push(rest);
        }
    }
    below
}

/// Whether `fields::take` of `taken` (each found, relative to `object`) leaves `object` empty
/// and so removes it: each member was taken, or was emptied by takes below it.
fn emptied(object: ObjectNode<'_>, taken: &[&[String]]) -> bool {
    !object.is_empty()
        && object.iter().all(|(key, value)| {
            let below = through(taken, key);
            !below.is_empty()
                && (below.iter().any(|rest| rest.is_empty())
                    || value.object().is_some_and(|child| emptied(child, &below)))
        })
}

/// Whether the source, once `taken` is taken out of it, has an object at `keys`.
fn object_after_taking(root: ObjectNode<'_>, taken: &[&[String]], keys: &[String]) -> bool {
    let mut object = root;
    let mut taken: Paths<'_> = taken.iter().copied().collect();
    for key in keys {
        let below = through(&taken, key);
        let Some(child) = object.find(key).and_then(|v| v.object()) else {
            return false;
        };
        if below.iter().any(|rest| rest.is_empty()) || (!below.is_empty() && emptied(child, &below))
        {
            return false;
        }
        object = child;
        taken = below;
    }
    true
}

/// An object of the converted result, as `survives_taking` reads it.
#[derive(Clone, Copy)]
enum Built<'v, 'a> {
    Members(&'v [(Key<'a>, Converted<'a>)]),
    Source(ObjectNode<'a>),
    Value(&'v Map<String, Value>),
}

impl<'v, 'a> Built<'v, 'a> {
    fn of(value: &'v Converted<'a>) -> Option<Self> {
        match value {
            Converted::Object(members) => Some(Built::Members(members)),
            Converted::Source(node) => node.object().map(Built::Source),
            Converted::Value(value) => value.as_object().map(Built::Value),
        }
    }

    fn member(self, key: &str) -> Option<Self> {
        match self {
            Built::Members(members) => {
                let at = position_by_name(members, key)?;
                Built::of(&members.get(at)?.1)
            }
            Built::Source(object) => object.find(key)?.object().map(Built::Source),
            Built::Value(map) => map.get(key)?.as_object().map(Built::Value),
        }
    }
}

fn built_object_at<'v, 'a>(members: &'v Members<'a>, keys: &[String]) -> Option<Built<'v, 'a>> {
    keys.iter()
        .try_fold(Built::Members(members), |object, key| object.member(key))
}

/// Whether `map` is still there after `fields::take` of each of `paths` (`translate` asks it of
/// its `Value`s).
pub(super) fn survives_taking_map(map: &Map<String, Value>, paths: &[&[String]]) -> bool {
    survives_taking(Built::Value(map), paths)
}

/// Whether `object` is still there after `fields::take` of each of `paths` (relative to it, none
/// inside another, as the rules guarantee): a take removes the maps it empties, so the object
/// stays when something in it stays, or when it was empty already (nothing in it could be
/// taken). Answers without the copy that taking them for real would need.
fn survives_taking(object: Built<'_, '_>, paths: &[&[String]]) -> bool {
    let member_survives = |key: &str, child: Option<Built<'_, '_>>| {
        let below = through(paths, key);
        if below.is_empty() {
            return true;
        }
        if below.iter().any(|rest| rest.is_empty()) {
            return false;
        }
        // A take through a value that is not an object takes nothing.
        child.is_none_or(|child| survives_taking(child, &below))
    };
    match object {
        Built::Members(members) => {
            members.is_empty()
                || members
                    .iter()
                    .any(|(key, value)| member_survives(key, Built::of(value)))
        }
        Built::Source(object) => {
            object.is_empty()
                || object
                    .iter()
                    .any(|(key, value)| member_survives(key, value.object().map(Built::Source)))
        }
        Built::Value(map) => {
            map.is_empty()
                || map
                    .iter()
                    .any(|(key, value)| member_survives(key, value.as_object().map(Built::Value)))
        }
    }
}

/// `translate::Carrier` on the document.
struct Carrier<'r, 'a> {
    declarations: &'r Declarations,
    /// Keys from the object's root to the object being carried.
    prefix: Vec<&'a str>,
    stash: &'r mut BTreeMap<String, Value>,
}

impl<'a> Carrier<'_, 'a> {
    /// Carries `source` (less `taken`, paths relative to it) into `out`.
    fn carry(
        &mut self,
        source: ObjectNode<'a>,
        taken: &[&[String]],
        declared: (&[DeclId], &[DeclId]),
        out: &mut Members<'a>,
        top: bool,
    ) {
        for (key, value) in source.iter() {
            if top && ENVELOPE.contains(&key) {
                continue;
            }
            let below = through(taken, key);
            let reduced = !below.is_empty();
            if reduced
                && (below.iter().any(|rest| rest.is_empty())
                    || value.object().is_some_and(|child| emptied(child, &below)))
            {
                continue;
            }
            let in_from = self.declarations.children(declared.0, key);
            let in_to = self.declarations.children(declared.1, key);
            // A field travels as it is only when both versions agree on it; otherwise it waits
            // in the annotation for the way back.
            if in_from.is_empty() != in_to.is_empty() {
                self.stash_at(key, value, &below);
                continue;
            }
            let alike = in_from == in_to;
            let at = out.binary_search_by(|(k, _)| name_order(k, key));
            match (value.object(), at) {
                (_, Err(at)) if alike && !reduced => {
                    out.insert(at, (Key::Borrowed(key), Converted::Source(value)))
                }
                (Some(child), Err(at)) => {
                    let mut target = Vec::with_capacity(child.len());
                    self.prefix.push(key);
                    self.carry(child, &below, (&in_from, &in_to), &mut target, false);
                    self.prefix.pop();
                    out.insert(at, (Key::Borrowed(key), Converted::Object(target)));
                }
                (Some(child), Ok(at)) => match out.get_mut(at).and_then(|(_, v)| built(v)) {
                    Some(existing) => {
                        // The moves put a few members here; the source's join them.
                        existing.reserve(child.len());
                        self.prefix.push(key);
                        self.carry(child, &below, (&in_from, &in_to), existing, false);
                        self.prefix.pop();
                    }
                    None => self.stash_at(key, value, &below),
                },
                (None, Err(at)) => out.insert(at, (Key::Borrowed(key), Converted::Source(value))),
                (None, Ok(_)) => self.stash_at(key, value, &below),
            }
        }
    }

    /// Keeps `value` (less what moves took from it) for the annotation.
    fn stash_at(&mut self, key: &str, value: Node<'_>, taken: &[&[String]]) {
        let keys: Vec<String> = self
            .prefix
            .iter()
            .chain(std::iter::once(&key))
            .map(|k| k.to_string())
            .collect();
        self.stash
            .insert(pointer_from_keys(&keys), value_after_taking(value, taken));
    }
}

/// `value` as a `Value`, less `taken` (paths relative to it, each found) and the objects the
/// takes emptied.
fn value_after_taking(value: Node<'_>, taken: &[&[String]]) -> Value {
    let Some(object) = value.object().filter(|_| !taken.is_empty()) else {
        return value.to_value();
    };
    let mut map = Map::new();
    for (key, member) in object.iter() {
        let below = through(taken, key);
        if below.iter().any(|rest| rest.is_empty())
            || (!below.is_empty() && member.object().is_some_and(|child| emptied(child, &below)))
        {
            continue;
        }
        map.insert(key.to_string(), value_after_taking(member, &below));
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::Document;
    use proptest::prelude::*;
    use serde_json::json;

    fn example_store() -> Store {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        crate::load_dir(&dir).unwrap_or_else(|e| panic!("example policies: {e}"))
    }

    /// Moves into objects both versions declare, so that data can collide with a moved value
    /// (`a` not an object where `a.b` goes) and a parent can be left holding moved fields only
    /// (`p`, once `r` moves into it): cases the example's rules never reach.
    const WIDGETS: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: Policy
metadata: {name: widgets}
spec:
  match: {group: test.example.com, kind: Widget, resource: widgets, versions: ["v2"]}
  conversion:
    hub: v2
    spokes:
      v1:
        fields:
          - {spoke: spec.x, hub: spec.a.b}
          - {spoke: spec.p.q, hub: spec.r}
        schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                x: {type: integer}
                a: {type: object, properties: {c: {type: integer}}}
                p: {type: object, properties: {q: {type: integer}, s: {type: integer}}}
  schema:
    type: object
    properties:
      spec:
        type: object
        properties:
          a: {type: object, properties: {b: {type: integer}, c: {type: integer}}}
          p: {type: object, properties: {s: {type: integer}}}
          r: {type: integer}
"#;

    struct Case {
        store: Store,
        group: &'static str,
        kind: &'static str,
        versions: [&'static str; 2],
        spec_fields: &'static [&'static str],
        inner_fields: &'static [&'static str],
    }

    fn example() -> Case {
        Case {
            store: example_store(),
            group: "payments.example.com",
            kind: "PaymentGateway",
            versions: ["v1", "v1alpha1"],
            spec_fields: &[
                "provider",
                "url",
                "endpoint",
                "secretName",
                "credentialsSecretRef",
                "maxRetries",
                "retry",
                "replicas",
                "unknownField",
            ],
            inner_fields: &["name", "maxAttempts", "x"],
        }
    }

    fn widgets() -> Case {
        let store = crate::policy::load_str(std::path::Path::new("widgets.yaml"), WIDGETS)
            .unwrap_or_else(|e| panic!("widgets policy: {e}"));
        Case {
            store,
            group: "test.example.com",
            kind: "Widget",
            versions: ["v2", "v1"],
            spec_fields: &["x", "a", "p", "r", "z"],
            inner_fields: &["b", "c", "q", "s"],
        }
    }

    /// Both ways: `None` from this module, or exactly what `translate` makes of it.
    fn both(
        store: &Store,
        object: &Value,
        desired: &str,
    ) -> (Option<Value>, Result<Value, String>) {
        let document = Document::from_value(object).unwrap_or_default();
        let direct = convert(store, document.root(), desired).map(|c| c.to_value());
        let translated =
            crate::evaluate::convert(store, object.clone(), desired).map_err(|e| e.to_string());
        (direct, translated)
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-3i64..100).prop_map(Value::from),
            "[a-z/:.]{0,6}".prop_map(Value::from),
            Just(json!({})),
            Just(json!([1, {"a": 2}])),
        ]
    }

    fn map_of<S: Strategy<Value = Value> + 'static>(
        names: &'static [&'static str],
        values: S,
        most: usize,
    ) -> impl Strategy<Value = Value> {
        prop::collection::btree_map(prop::sample::select(names), values, 0..most)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
    }

    fn value(names: &'static [&'static str]) -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 16, 3, move |inner| map_of(names, inner, 3))
    }

    /// Objects of either version, with fields of both, unknown ones, values of every shape
    /// where objects are expected, with or without metadata (or with one `translate` refuses),
    /// and with the preserved-fields annotation.
    fn object(case: &Case) -> impl Strategy<Value = Value> + use<> {
        let (group, kind) = (case.group, case.kind);
        (
            prop::sample::select(vec![case.versions[0], case.versions[1], "v9"]),
            prop::option::of(map_of(case.spec_fields, value(case.inner_fields), 6)),
            prop::option::of(value(case.inner_fields)),
            0u8..4,
        )
            .prop_map(move |(version, spec, status, metadata)| {
                let mut object = json!({"apiVersion": format!("{group}/{version}"), "kind": kind});
                match metadata {
                    0 => {}
                    1 => object["metadata"] = json!({"name": "w", "annotations": {"a": "b"}}),
                    2 => object["metadata"] = json!("not an object"),
                    _ => {
                        object["metadata"] =
                            json!({"annotations": {PRESERVED_ANNOTATION: "{\"fields\":{}}"}})
                    }
                }
                if let Some(spec) = spec {
                    object["spec"] = spec;
                }
                if let Some(status) = status {
                    object["status"] = status;
                }
                object
            })
    }

    /// Converts `object` to `version` both ways, then what `translate` made of it back to the
    /// object's own version (where the annotation's fields are restored): whether this module
    /// answered the first.
    fn agrees(case: &Case, object: &Value, version: &str) -> Result<bool, TestCaseError> {
        let desired = format!("{}/{version}", case.group);
        let (direct, translated) = both(&case.store, object, &desired);
        let answered = direct.is_some();
        if let Some(direct) = direct {
            prop_assert_eq!(Ok(direct), translated.clone(), "{} to {}", object, desired);
        }
        if let (Ok(there), Some(back)) = (translated, object["apiVersion"].as_str()) {
            let (direct, translated) = both(&case.store, &there, back);
            if let Some(direct) = direct {
                prop_assert_eq!(Ok(direct), translated, "{} back to {}", there, back);
            }
        }
        Ok(answered)
    }

    /// Runs `cases` generated objects of `case` both ways; how many this module answered.
    fn agreement(case: &Case, cases: u32) -> usize {
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases));
        let answered = std::cell::Cell::new(0);
        let outcome = runner.run(
            &(object(case), prop::sample::select(case.versions.to_vec())),
            |(object, version)| {
                if agrees(case, &object, version)? {
                    answered.set(answered.get() + 1);
                }
                Ok(())
            },
        );
        if let Err(failure) = outcome {
            panic!("{failure}");
        }
        answered.get()
    }

    #[test]
    fn agrees_with_translate_on_the_example() {
        let answered = agreement(&example(), 2000);
        // The generator must reach this module's case, not only its refusals.
        assert!(answered > 200, "answered {answered} of 2000");
    }

    #[test]
    fn agrees_with_translate_where_moves_meet_declared_data() {
        let answered = agreement(&widgets(), 10000);
        assert!(answered > 200, "answered {answered} of 10000");
    }

    #[test]
    fn answers_as_translate_does_and_leaves_errors_to_it() {
        let store = example_store();
        let up = json!({
            "apiVersion": "payments.example.com/v1alpha1",
            "kind": "PaymentGateway",
            "metadata": {"name": "pg", "annotations": {"team": "payments"}},
            "spec": {"provider": "alipay", "url": "https://x", "secretName": "s", "maxRetries": 2,
                     "replicas": 3, "timeoutSeconds": 15},
            "status": {"phase": "Ready"}
        });
        let (direct, translated) = both(&store, &up, "payments.example.com/v1");
        assert_eq!(direct.as_ref(), translated.as_ref().ok());
        assert!(direct.is_some_and(|d| d["spec"]["retry"]["maxAttempts"] == json!(2)));
        let down = translated.unwrap_or_default();
        let (direct, translated) = both(&store, &down, "payments.example.com/v1alpha1");
        assert_eq!(direct.as_ref(), translated.as_ref().ok());
        assert_eq!(direct.as_ref(), Some(&up));

        // A field only one version declares goes to the annotation, and comes back from it.
        let mut hub_only = down.clone();
        hub_only["spec"]["retry"]["backoffSeconds"] = json!(5);
        hub_only["spec"]["currencies"] = json!(["USD"]);
        let (direct, translated) = both(&store, &hub_only, "payments.example.com/v1alpha1");
        assert_eq!(direct.as_ref(), translated.as_ref().ok());
        let annotated = direct.unwrap_or_default();
        assert!(
            annotated["metadata"]["annotations"]
                .get(PRESERVED_ANNOTATION)
                .is_some()
        );
        let (direct, translated) = both(&store, &annotated, "payments.example.com/v1");
        assert_eq!(direct.as_ref(), translated.as_ref().ok());
        assert_eq!(direct.as_ref(), Some(&hub_only));
        // Errors are `translate`'s to word.
        for (object, desired) in [
            (json!({"kind": "PaymentGateway"}), "payments.example.com/v1"),
            (
                json!({"apiVersion": "payments.example.com/v9", "kind": "PaymentGateway"}),
                "payments.example.com/v1",
            ),
            (
                json!({"apiVersion": "other.example.com/v1", "kind": "PaymentGateway"}),
                "payments.example.com/v1alpha1",
            ),
            (
                json!({"apiVersion": "payments.example.com/v1", "kind": "Other"}),
                "payments.example.com/v1alpha1",
            ),
        ] {
            let (direct, translated) = both(&store, &object, desired);
            assert_eq!(direct, None);
            assert!(translated.is_err());
        }
    }

    #[test]
    fn keeps_collisions_and_emptied_parents_in_the_annotation_as_translate_does() {
        let case = widgets();
        // Data where a move puts its value (`a` is no object for `a.b`): kept in the annotation.
        let collision = json!({"apiVersion": "test.example.com/v1", "kind": "Widget",
                               "spec": {"x": 1, "a": 2, "z": 3}});
        // `p` stays as an object only because of the moved `q`: the way back would drop it.
        let emptied = json!({"apiVersion": "test.example.com/v2", "kind": "Widget",
                             "spec": {"r": 1, "p": {}}});
        for (object, desired) in [
            (collision, "test.example.com/v2"),
            (emptied, "test.example.com/v1"),
        ] {
            let (direct, translated) = both(&case.store, &object, desired);
            assert_eq!(direct.as_ref(), translated.as_ref().ok());
            assert!(direct.is_some_and(|d| {
                d["metadata"]["annotations"]
                    .get(PRESERVED_ANNOTATION)
                    .is_some()
            }));
        }
    }
}
