//! Which subschemas declare each field, compiled once per kind from the schemas of all its
//! versions. Conversion asks this for every key of every object it converts; walking the schema
//! `Value`s each time (`$ref`, `allOf`, `properties`, `additionalProperties`, one map lookup each)
//! was a fifth of a conversion's work.
//!
//! Subschemas that are equal and free of `$ref` share one id across versions: they declare the
//! same fields all the way down, so a subtree two versions declare with the same ids (or neither
//! declares) travels whole, without visiting its keys.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::Value;
use smallvec::SmallVec;

use crate::document::position_by_name;
use crate::schema;

/// One compiled subschema (or a set of equal ones): its index in `Declarations::nodes`.
pub(crate) type DeclId = usize;

/// The subschemas declaring one field: sorted, without repeats; empty when none does.
pub(crate) type DeclSet = SmallVec<[DeclId; 2]>;

#[derive(Debug, Clone, Default)]
pub(crate) struct Declarations {
    nodes: Vec<DeclNode>,
}

#[derive(Debug, Clone, Default)]
struct DeclNode {
    /// Every name a `properties` (here or through `$ref`/`allOf`) names, sorted by name.
    named: Vec<(String, DeclSet)>,
    /// What declares any other name: the `additionalProperties` schemas.
    other: DeclSet,
}

impl Declarations {
    /// The subschemas declaring `key` directly below any of `parents`.
    pub fn children(&self, parents: &[DeclId], key: &str) -> Cow<'_, [DeclId]> {
        match parents {
            [] => Cow::Borrowed(&[]),
            [one] => Cow::Borrowed(self.children_of(*one, key)),
            many => {
                let mut union: Vec<DeclId> = many
                    .iter()
                    .flat_map(|parent| self.children_of(*parent, key).iter().copied())
                    .collect();
                union.sort_unstable();
                union.dedup();
                Cow::Owned(union)
            }
        }
    }

    fn children_of(&self, parent: DeclId, key: &str) -> &[DeclId] {
        let Some(node) = self.nodes.get(parent) else {
            return &[];
        };
        position_by_name(&node.named, key)
            .and_then(|at| node.named.get(at))
            .map_or(&node.other, |(_, declaring)| declaring)
    }
}

/// Compiles schemas into one `Declarations`, so that ids agree across them.
#[derive(Default)]
pub(crate) struct Compiler<'s> {
    declarations: Declarations,
    /// Subschemas already compiled, by address (the same place is the same subschema).
    by_address: HashMap<*const Value, DeclId>,
    /// `$ref`-free subschemas by their JSON text (keys sorted: equal values, equal text).
    by_text: HashMap<String, DeclId>,
    pending: Vec<(DeclId, &'s Value, &'s Value)>,
}

impl<'s> Compiler<'s> {
    /// The id of `schema`'s root; `schema` is also where its `$ref`s point.
    pub fn add(&mut self, schema: &'s Value) -> DeclId {
        let root = self.id_of(schema, schema);
        while let Some((id, root, node)) = self.pending.pop() {
            let compiled = self.compile_node(root, node);
            if let Some(slot) = self.declarations.nodes.get_mut(id) {
                *slot = compiled;
            }
        }
        root
    }

    pub fn finish(self) -> Declarations {
        self.declarations
    }

    fn id_of(&mut self, root: &'s Value, node: &'s Value) -> DeclId {
        if let Some(id) = self.by_address.get(&std::ptr::from_ref(node)) {
            return *id;
        }
        let text = (!has_ref(node)).then(|| node.to_string());
        if let Some(id) = text.as_ref().and_then(|text| self.by_text.get(text)) {
            let id = *id;
            self.by_address.insert(std::ptr::from_ref(node), id);
            return id;
        }
        let id = self.declarations.nodes.len();
        self.declarations.nodes.push(DeclNode::default());
        self.by_address.insert(std::ptr::from_ref(node), id);
        if let Some(text) = text {
            self.by_text.insert(text, id);
        }
        self.pending.push((id, root, node));
        id
    }

    fn compile_node(&mut self, root: &'s Value, node: &'s Value) -> DeclNode {
        let mut chain = Vec::new();
        gather(root, node, &mut chain);
        let mut names: Vec<&'s str> = chain
            .iter()
            .filter_map(|c| c.get("properties").and_then(Value::as_object))
            .flat_map(|properties| properties.keys().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        let named = names
            .into_iter()
            .map(|name| {
                let declaring = chain.iter().filter_map(|c| {
                    c.get("properties")
                        .and_then(|p| p.get(name))
                        .or_else(|| schema::additional_properties(c))
                });
                (name.to_string(), self.set_of(root, declaring))
            })
            .collect();
        let other = self.set_of(
            root,
            chain
                .iter()
                .filter_map(|c| schema::additional_properties(c)),
        );
        DeclNode { named, other }
    }

    fn set_of(&mut self, root: &'s Value, subschemas: impl Iterator<Item = &'s Value>) -> DeclSet {
        let mut set: DeclSet = subschemas.map(|s| self.id_of(root, s)).collect();
        set.sort_unstable();
        set.dedup();
        set
    }
}

/// `node` and what it includes through same-document `$ref`s and `allOf`, each once.
fn gather<'s>(root: &'s Value, node: &'s Value, chain: &mut Vec<&'s Value>) {
    let Some(object) = node.as_object() else {
        return;
    };
    if chain.iter().any(|seen| std::ptr::eq(*seen, node)) {
        return;
    }
    chain.push(node);
    if let Some(target) = schema::ref_target(root, node) {
        gather(root, target, chain);
    }
    for branch in object
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        gather(root, branch, chain);
    }
}

fn has_ref(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.contains_key("$ref") || map.values().any(has_ref),
        Value::Array(items) => items.iter().any(has_ref),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::SCAN_MAX;
    use crate::path::FieldPath;
    use crate::schema::declares;
    use serde_json::json;

    fn walk(declarations: &Declarations, root: DeclId, text: &str) -> Vec<DeclId> {
        text.split('.').fold(vec![root], |nodes, key| {
            declarations.children(&nodes, key).into_owned()
        })
    }

    #[test]
    fn walking_key_by_key_agrees_with_whole_path_lookup() {
        let schema = json!({
            "$defs": {
                "retry": {"properties": {"maxAttempts": {}}},
                "loop": {"properties": {"next": {"$ref": "#/$defs/loop"}, "v": {}}}
            },
            "properties": {"spec": {
                "allOf": [{"properties": {"a": {}}}, {"properties": {"a": {"properties": {"b": {}}}}}],
                "properties": {
                    "retry": {"$ref": "#/$defs/retry"},
                    "map": {"additionalProperties": {"properties": {"y": {}}}},
                    "open": {"additionalProperties": true},
                    "list": {"$ref": "#/$defs/loop"}
                }
            }}
        });
        let mut compiler = Compiler::default();
        let root = compiler.add(&schema);
        let declarations = compiler.finish();
        for text in [
            "spec",
            "spec.a",
            "spec.a.b",
            "spec.a.c",
            "spec.retry.maxAttempts",
            "spec.retry.x",
            "spec.map.k.y",
            "spec.map.k.z",
            "spec.open.k",
            "spec.list.next.next.next.v",
            "spec.list.next.w",
            "status.x",
        ] {
            let declared = FieldPath::parse(text).is_ok_and(|p| declares(&schema, &p));
            assert_eq!(
                !walk(&declarations, root, text).is_empty(),
                declared,
                "{text}"
            );
        }
    }

    /// Names are found by a scan in small schema objects and by halving in large ones: both
    /// find every declared name, with its own subschema, and nothing else.
    #[test]
    fn names_are_found_in_small_and_large_objects_alike() {
        for count in [1, SCAN_MAX, SCAN_MAX + 1, 3 * SCAN_MAX] {
            let names: Vec<String> = (0..count).map(|i| format!("field{i:02}")).collect();
            let properties: serde_json::Map<String, Value> = names
                .iter()
                .map(|name| (name.clone(), json!({"properties": {name.clone(): {}}})))
                .collect();
            let schema = json!({"properties": properties});
            let mut compiler = Compiler::default();
            let root = compiler.add(&schema);
            let declarations = compiler.finish();
            for name in &names {
                let inner = format!("{name}.{name}");
                assert!(
                    !walk(&declarations, root, name).is_empty(),
                    "{count}: {name}"
                );
                assert!(
                    !walk(&declarations, root, &inner).is_empty(),
                    "{count}: {inner}"
                );
                let other = format!("{name}.field");
                assert!(
                    walk(&declarations, root, &other).is_empty(),
                    "{count}: {other}"
                );
            }
            for absent in ["field", "field0", "fieldzz", "a"] {
                assert!(
                    walk(&declarations, root, absent).is_empty(),
                    "{count}: {absent}"
                );
            }
        }
    }

    #[test]
    fn equal_subschemas_share_an_id_across_versions_unless_a_ref_could_differ() {
        let hub = json!({
            "$defs": {"n": {"type": "integer"}},
            "properties": {"spec": {"properties": {
                "same": {"properties": {"x": {"type": "string"}}},
                "changed": {"properties": {"x": {"type": "string"}}},
                "viaRef": {"$ref": "#/$defs/n"}
            }}}
        });
        let spoke = json!({
            "$defs": {"n": {"type": "string"}},
            "properties": {"spec": {"properties": {
                "same": {"properties": {"x": {"type": "string"}}},
                "changed": {"properties": {"x": {"type": "integer"}}},
                "viaRef": {"$ref": "#/$defs/n"}
            }}}
        });
        let mut compiler = Compiler::default();
        let (hub_root, spoke_root) = (compiler.add(&hub), compiler.add(&spoke));
        let declarations = compiler.finish();
        let both = |path: &str| {
            (
                walk(&declarations, hub_root, path),
                walk(&declarations, spoke_root, path),
            )
        };
        let (a, b) = both("spec.same");
        assert_eq!(a, b);
        assert!(!a.is_empty());
        let (a, b) = both("spec.changed");
        assert_ne!(a, b);
        let (a, b) = both("spec.viaRef");
        assert_ne!(a, b, "the same $ref text points at different schemas");
        assert_ne!(both("spec"), (vec![], vec![]));
    }
}
