//! Converting one object read as a document (strings borrowed from the review's text) without
//! building it as a `Value`: the answer is the source's own values, arranged as the rules move
//! them, and written straight from the document.
//!
//! A callgrind profile of a one-object conversion put four fifths of its instructions in the
//! `Value` tree: reading it (an allocation per string and per map node), moving its entries
//! into new maps, writing and freeing it. Here only the objects on a moved field's way are
//! built; everything else is a handle into the document.
//!
//! It answers the common case only — one hop (to or from the hub), no preserved-fields
//! annotation to read or write, nothing declared in one version only, no move colliding with
//! data — and says `None` for everything else, which `translate` then converts as before. Where
//! it answers, the answer is exactly `translate`'s (`tests::agrees_with_translate`).

use super::declared::{DeclId, Declarations};
use super::preserved::PRESERVED_ANNOTATION;
use super::translate::split_api_version;
use crate::Store;
use crate::document::{Node, ObjectNode};
use serde_json::{Map, Value};
use smallvec::SmallVec;

/// A converted object: values of the source document, arranged as the conversion put them.
#[derive(Debug, Clone)]
pub enum Converted<'a> {
    /// A value of the source, as it is.
    Source(Node<'a>),
    /// An object built by the conversion; members in name order, as `serde_json::Map` keeps
    /// them (so the answer is written in the same order either way).
    Object(Vec<(&'a str, Converted<'a>)>),
    /// The new apiVersion.
    Text(String),
}

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
            Converted::Text(text) => Value::String(text.clone()),
        }
    }
}

type Members<'a> = Vec<(&'a str, Converted<'a>)>;

/// Paths (key lists) relative to the object being looked at: as many as a kind has moves,
/// a handful, kept off the heap (this runs for every member on a moved field's way).
type Paths<'p> = SmallVec<[&'p [String]; 4]>;

/// Fields `step` removes before it moves or carries anything, and puts back after.
const ENVELOPE: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// `object` converted to `desired` (`group/version`), when it is the common case this module
/// answers; `None` sends it to `evaluate::convert`, which answers everything (errors included).
pub fn convert<'a>(store: &'a Store, object: Node<'a>, desired: &str) -> Option<Converted<'a>> {
    let root = object.object()?;
    let api_version = root.find("apiVersion")?.as_str()?;
    if api_version == desired {
        return Some(Converted::Source(object));
    }
    let kind = root.find("kind")?.as_str()?;
    let metadata = match root.find("metadata") {
        Some(metadata) => {
            let annotations = metadata.object()?.find("annotations");
            if annotations
                .and_then(|a| a.object())
                .is_some_and(|a| a.find(PRESERVED_ANNOTATION).is_some())
            {
                return None;
            }
            Converted::Source(metadata)
        }
        // `step` gives every converted object a metadata map.
        None => Converted::Object(Vec::new()),
    };
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
    let ends: SmallVec<[(&[String], &[String]); 4]> = spoke
        .moves
        .iter()
        .map(|m| {
            let (spoke_keys, hub_keys) = (m.spoke_keys.keys.as_slice(), m.hub_keys.keys.as_slice());
            if to_hub {
                (spoke_keys, hub_keys)
            } else {
                (hub_keys, spoke_keys)
            }
        })
        .collect();
    let in_envelope = |keys: &[String]| keys.first().is_none_or(|k| ENVELOPE.contains(&k.as_str()));
    if ends
        .iter()
        .any(|(from, to)| in_envelope(from) || in_envelope(to))
    {
        return None;
    }

    let mut out: Members<'a> = Vec::new();
    let mut taken: Paths<'a> = SmallVec::new();
    for &(from_keys, to_keys) in &ends {
        if let Some(value) = lookup(root, from_keys) {
            taken.push(from_keys);
            put(&mut out, to_keys, Converted::Source(value))?;
        }
    }
    let carrier = Carrier {
        declarations: &rules.declarations,
    };
    carrier.carry(
        root,
        &taken,
        (&[from_declared], &[to_declared]),
        &mut out,
        true,
    )?;
    // A parent the way back would drop for being emptied is kept in the annotation by
    // `translate`: not this module's case.
    let mut ancestors: Paths<'a> = SmallVec::new();
    for &(_, to_keys) in &ends {
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
                .filter_map(|(_, to)| to.strip_prefix(ancestor))
                .collect();
            if !survives_taking(parent, &below) {
                return None;
            }
        }
    }
    let api_version = format!("{}/{target}", rules.group);
    insert(&mut out, "apiVersion", Converted::Text(api_version));
    insert(&mut out, "kind", Converted::Source(root.find("kind")?));
    insert(&mut out, "metadata", metadata);
    Some(Converted::Object(out))
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

/// `fields::put` into a built object: parents are created; an occupied target, or a parent
/// that is not a built object, fails.
fn put<'a>(members: &mut Members<'a>, keys: &'a [String], value: Converted<'a>) -> Option<()> {
    let (first, rest) = keys.split_first()?;
    let at = members.binary_search_by(|(k, _)| (*k).cmp(first));
    if rest.is_empty() {
        let Err(at) = at else { return None };
        members.insert(at, (first, value));
        return Some(());
    }
    let at = at.unwrap_or_else(|at| {
        members.insert(at, (first, Converted::Object(Vec::new())));
        at
    });
    match members.get_mut(at) {
        Some((_, Converted::Object(child))) => put(child, rest, value),
        _ => None,
    }
}

fn insert<'a>(members: &mut Members<'a>, key: &'a str, value: Converted<'a>) {
    match members.binary_search_by(|(k, _)| (*k).cmp(key)) {
        Ok(at) => {
            if let Some(slot) = members.get_mut(at) {
                slot.1 = value;
            }
        }
        Err(at) => members.insert(at, (key, value)),
    }
}

/// The paths of `paths` that go through `key`, without it.
fn through<'p>(paths: &[&'p [String]], key: &str) -> Paths<'p> {
    // Most members are on no path: answered without building anything.
    if !paths
        .iter()
        .any(|path| path.first().is_some_and(|first| first == key))
    {
        return SmallVec::new();
    }
    paths
        .iter()
        .filter_map(|path| match path.split_first() {
            Some((first, rest)) if first == key => Some(rest),
            _ => None,
        })
        .collect()
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

/// An object of the converted result: built here, or a source object moved or carried whole.
#[derive(Clone, Copy)]
enum Built<'v, 'a> {
    Members(&'v [(&'a str, Converted<'a>)]),
    Source(ObjectNode<'a>),
}

fn built_object_at<'v, 'a>(members: &'v Members<'a>, keys: &[String]) -> Option<Built<'v, 'a>> {
    let mut object = Built::Members(members);
    for key in keys {
        object = match object {
            Built::Members(members) => {
                let at = members.binary_search_by(|(k, _)| (*k).cmp(key)).ok()?;
                match &members.get(at)?.1 {
                    Converted::Object(child) => Built::Members(child),
                    Converted::Source(node) => Built::Source(node.object()?),
                    Converted::Text(_) => return None,
                }
            }
            Built::Source(object) => Built::Source(object.find(key)?.object()?),
        };
    }
    Some(object)
}

/// `translate::survives_taking`, on the converted result.
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
                || members.iter().any(|(key, value)| {
                    let child = match value {
                        Converted::Object(child) => Some(Built::Members(child)),
                        Converted::Source(node) => node.object().map(Built::Source),
                        Converted::Text(_) => None,
                    };
                    member_survives(key, child)
                })
        }
        Built::Source(object) => {
            object.is_empty()
                || object
                    .iter()
                    .any(|(key, value)| member_survives(key, value.object().map(Built::Source)))
        }
    }
}

/// `translate::Carrier`, for the case where nothing is stashed: `None` as soon as something
/// would be.
struct Carrier<'r> {
    declarations: &'r Declarations,
}

impl Carrier<'_> {
    /// Carries `source` (less `taken`, paths relative to it) into `out`.
    fn carry<'a>(
        &self,
        source: ObjectNode<'a>,
        taken: &[&[String]],
        declared: (&[DeclId], &[DeclId]),
        out: &mut Members<'a>,
        top: bool,
    ) -> Option<()> {
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
            if in_from.is_empty() != in_to.is_empty() {
                return None;
            }
            let alike = in_from == in_to;
            let at = out.binary_search_by(|(k, _)| (*k).cmp(key));
            match (value.object(), at) {
                (_, Err(at)) if alike && !reduced => {
                    out.insert(at, (key, Converted::Source(value)))
                }
                (Some(child), Err(at)) => {
                    let mut target = Vec::new();
                    self.carry(child, &below, (&in_from, &in_to), &mut target, false)?;
                    out.insert(at, (key, Converted::Object(target)));
                }
                (Some(child), Ok(at)) => match out.get_mut(at) {
                    Some((_, Converted::Object(existing))) => {
                        self.carry(child, &below, (&in_from, &in_to), existing, false)?;
                    }
                    // Merging into a moved value: `translate` handles it.
                    _ => return None,
                },
                (None, Err(at)) => out.insert(at, (key, Converted::Source(value))),
                (None, Ok(_)) => return None,
            }
        }
        Some(())
    }
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

    fn agrees(case: &Case, object: &Value, version: &str) -> Result<bool, TestCaseError> {
        let desired = format!("{}/{version}", case.group);
        let (direct, translated) = both(&case.store, object, &desired);
        let answered = direct.is_some();
        if let Some(direct) = direct {
            prop_assert_eq!(Ok(direct), translated, "{} to {}", object, desired);
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
    fn answers_the_common_case_and_leaves_the_rest() {
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

        // A field only one version declares goes to the annotation: left to `translate`.
        let mut unknown_to_v1alpha1 = down.clone();
        unknown_to_v1alpha1["spec"]["retry"]["backoff"] = json!("1s");
        let (direct, translated) = both(
            &store,
            &unknown_to_v1alpha1,
            "payments.example.com/v1alpha1",
        );
        assert_eq!(direct, None);
        assert!(translated.is_ok_and(|t| {
            t["metadata"]["annotations"]
                .get(PRESERVED_ANNOTATION)
                .is_some()
        }));
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
    fn leaves_collisions_and_emptied_parents_to_translate() {
        let case = widgets();
        // Declared data where a move puts its value: `translate` keeps it in the annotation.
        let collision = json!({"apiVersion": "test.example.com/v1", "kind": "Widget",
                               "spec": {"x": 1, "a": 2, "z": 3}});
        let (direct, translated) = both(&case.store, &collision, "test.example.com/v2");
        assert_eq!(direct, None);
        assert!(translated.is_ok());
        // `p` stays as an object only because of the moved `q`: the way back would drop it.
        let emptied = json!({"apiVersion": "test.example.com/v2", "kind": "Widget",
                             "spec": {"r": 1, "p": {}}});
        let (direct, translated) = both(&case.store, &emptied, "test.example.com/v1");
        assert_eq!(direct, None);
        assert!(translated.is_ok_and(|t| {
            t["metadata"]["annotations"]
                .get(PRESERVED_ANNOTATION)
                .is_some()
        }));
    }
}
