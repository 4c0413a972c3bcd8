//! A JSON document read once into three flat vectors, its strings borrowed from the text they
//! were read from: what a review's object can be validated on without building a
//! `serde_json::Value` (an allocation and a B-tree insert per key, a free per node after).
//!
//! `DocumentJson` makes it a representation `jsonschema` validates directly. Objects keep the
//! semantics of `serde_json::Map`: members sorted by name, a repeated name keeping its last
//! value — so a document and the `Value` of the same text answer every question alike
//! (property-tested against `serde_json`).

use std::borrow::Cow;

use jsonschema::JsonType;
use jsonschema::json::{self, Json, NodeIdentity};
use serde_json::{Map, Number, Value};

mod deserialize;
mod spare;
use spare::{DocumentVectors, Stacks};

/// Where a node sits in its document.
pub type NodeId = u32;

/// One parsed JSON text (or a `Value`'s structure, its strings borrowed).
#[derive(Debug, Clone, Default)]
pub struct Document<'t> {
    slots: Vec<Slot<'t>>,
    /// Each object's members, one run per object, sorted by name.
    members: Vec<(Cow<'t, str>, NodeId)>,
    /// Each array's items, one run per array.
    items: Vec<NodeId>,
    root: NodeId,
}

#[derive(Debug, Clone)]
enum Slot<'t> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'t, str>),
    Object(Run),
    Array(Run),
}

/// A run of `members` or `items`.
#[derive(Debug, Clone, Copy)]
struct Run {
    start: u32,
    len: u32,
}

impl Run {
    fn range(self) -> std::ops::Range<usize> {
        let start = self.start as usize;
        start..start + self.len as usize
    }
}

/// A document too large for 32-bit node numbers (over four billion nodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("document has too many nodes")]
pub struct TooLarge;

/// Builds a document bottom-up: children first, then the object or array that holds them.
#[derive(Debug, Default)]
pub struct Builder<'t> {
    doc: Document<'t>,
    /// Members of the objects still open, innermost last.
    open_members: Vec<(Cow<'t, str>, NodeId)>,
    /// Items of the arrays still open, innermost last.
    open_items: Vec<NodeId>,
}

/// Where an open object's or array's children start on the builder's stack.
#[derive(Debug, Clone, Copy)]
pub struct Mark(usize);

impl<'t> Builder<'t> {
    /// `nodes` is a guess of the node count, to allocate once.
    ///
    /// The vectors are those of a document dropped earlier on this thread where there is one
    /// (see `spare`).
    pub fn with_capacity(nodes: usize) -> Self {
        let DocumentVectors {
            mut slots,
            mut members,
            items,
        } = spare::take_document();
        slots.reserve(nodes);
        members.reserve(nodes);
        let Stacks {
            mut open_members,
            open_items,
        } = spare::take_stacks();
        open_members.reserve(16);
        Self {
            doc: Document {
                slots,
                members,
                items,
                root: 0,
            },
            open_members,
            open_items,
        }
    }

    #[inline]
    fn push(&mut self, slot: Slot<'t>) -> Result<NodeId, TooLarge> {
        let id = NodeId::try_from(self.doc.slots.len()).map_err(|_| TooLarge)?;
        self.doc.slots.push(slot);
        Ok(id)
    }

    #[inline]
    pub fn null(&mut self) -> Result<NodeId, TooLarge> {
        self.push(Slot::Null)
    }

    #[inline]
    pub fn bool(&mut self, value: bool) -> Result<NodeId, TooLarge> {
        self.push(Slot::Bool(value))
    }

    #[inline]
    pub fn number(&mut self, value: Number) -> Result<NodeId, TooLarge> {
        self.push(Slot::Number(value))
    }

    #[inline]
    pub fn string(&mut self, value: Cow<'t, str>) -> Result<NodeId, TooLarge> {
        self.push(Slot::String(value))
    }

    #[inline]
    pub fn open_object(&self) -> Mark {
        Mark(self.open_members.len())
    }

    #[inline]
    pub fn member(&mut self, name: Cow<'t, str>, value: NodeId) {
        self.open_members.push((name, value));
    }

    /// Closes the object opened at `mark`: its members sorted by name, a repeated name keeping
    /// the value given last (as `serde_json::Map` does).
    pub fn close_object(&mut self, mark: Mark) -> Result<NodeId, TooLarge> {
        let open = &mut self.open_members[mark.0..];
        let start = self.doc.members.len();
        // The apiserver sends objects with their names in order (Go sorts a map's keys): taken
        // as they are, after one look, with nothing to sort or merge.
        if open.is_sorted_by(|a, b| by_name(a, b).is_lt()) {
            self.doc.members.extend(self.open_members.drain(mark.0..));
        } else {
            // Stable: among equal names the last given stays last, and is the one kept.
            open.sort_by(by_name);
            for (name, value) in self.open_members.drain(mark.0..) {
                match self.doc.members[start..].last_mut() {
                    Some(last) if same_name(last.0.as_bytes(), name.as_bytes()) => last.1 = value,
                    _ => self.doc.members.push((name, value)),
                }
            }
        }
        let run = run_of(start, self.doc.members.len())?;
        self.push(Slot::Object(run))
    }

    #[inline]
    pub fn open_array(&self) -> Mark {
        Mark(self.open_items.len())
    }

    #[inline]
    pub fn item(&mut self, value: NodeId) {
        self.open_items.push(value);
    }

    pub fn close_array(&mut self, mark: Mark) -> Result<NodeId, TooLarge> {
        let start = self.doc.items.len();
        self.doc.items.extend(self.open_items.drain(mark.0..));
        let run = run_of(start, self.doc.items.len())?;
        self.push(Slot::Array(run))
    }

    /// The document whose root is `root` (the node built last, for a whole text).
    pub fn finish(mut self, root: NodeId) -> Document<'t> {
        let mut doc = std::mem::take(&mut self.doc);
        doc.root = root;
        doc
    }
}

impl Drop for Builder<'_> {
    fn drop(&mut self) {
        spare::keep_stacks(
            std::mem::take(&mut self.open_members),
            std::mem::take(&mut self.open_items),
        );
    }
}

impl Drop for Document<'_> {
    fn drop(&mut self) {
        spare::keep_document(
            std::mem::take(&mut self.slots),
            std::mem::take(&mut self.members),
            std::mem::take(&mut self.items),
        );
    }
}

fn run_of(start: usize, end: usize) -> Result<Run, TooLarge> {
    Ok(Run {
        start: u32::try_from(start).map_err(|_| TooLarge)?,
        len: u32::try_from(end - start).map_err(|_| TooLarge)?,
    })
}

impl<'t> Document<'t> {
    /// `value`'s structure, its strings borrowed (objects that come as `Value`s are validated
    /// through this).
    pub fn from_value(value: &'t Value) -> Result<Self, TooLarge> {
        fn add<'t>(builder: &mut Builder<'t>, value: &'t Value) -> Result<NodeId, TooLarge> {
            match value {
                Value::Null => builder.null(),
                Value::Bool(b) => builder.bool(*b),
                Value::Number(n) => builder.number(n.clone()),
                Value::String(s) => builder.string(Cow::Borrowed(s)),
                Value::Array(items) => {
                    let mark = builder.open_array();
                    for item in items {
                        let id = add(builder, item)?;
                        builder.item(id);
                    }
                    builder.close_array(mark)
                }
                Value::Object(map) => {
                    let mark = builder.open_object();
                    for (name, item) in map {
                        let id = add(builder, item)?;
                        builder.member(Cow::Borrowed(name), id);
                    }
                    builder.close_object(mark)
                }
            }
        }
        let mut builder = Builder::with_capacity(16);
        let root = add(&mut builder, value)?;
        Ok(builder.finish(root))
    }

    /// The same document, independent of the text it was read from (to move it to another
    /// thread).
    pub fn into_owned(mut self) -> Document<'static> {
        let owned = |text: Cow<'_, str>| -> Cow<'static, str> { Cow::Owned(text.into_owned()) };
        Document {
            slots: std::mem::take(&mut self.slots)
                .into_iter()
                .map(|slot| match slot {
                    Slot::Null => Slot::Null,
                    Slot::Bool(b) => Slot::Bool(b),
                    Slot::Number(n) => Slot::Number(n),
                    Slot::String(s) => Slot::String(owned(s)),
                    Slot::Object(run) => Slot::Object(run),
                    Slot::Array(run) => Slot::Array(run),
                })
                .collect(),
            members: std::mem::take(&mut self.members)
                .into_iter()
                .map(|(name, id)| (owned(name), id))
                .collect(),
            items: std::mem::take(&mut self.items),
            root: self.root,
        }
    }

    pub fn root(&self) -> Node<'_> {
        Node {
            doc: self,
            id: self.root,
        }
    }
}

/// One node of a document: a cheap copyable handle.
#[derive(Debug, Clone, Copy)]
pub struct Node<'d> {
    doc: &'d Document<'d>,
    id: NodeId,
}

impl<'d> Node<'d> {
    #[inline]
    fn slot(&self) -> &'d Slot<'d> {
        // Ids come from the builder of this very document, so they are always in range; an
        // out-of-range one reads as null rather than panicking.
        self.doc.slots.get(self.id as usize).unwrap_or(&Slot::Null)
    }

    /// The member `name` of an object node.
    #[inline]
    pub fn get(&self, name: &str) -> Option<Node<'d>> {
        self.object().and_then(|object| object.find(name))
    }

    #[inline]
    pub fn object(&self) -> Option<ObjectNode<'d>> {
        match self.slot() {
            Slot::Object(run) => Some(ObjectNode {
                doc: self.doc,
                members: &self.doc.members[run.range()],
            }),
            _ => None,
        }
    }

    #[inline]
    pub fn array(&self) -> Option<ArrayNode<'d>> {
        match self.slot() {
            Slot::Array(run) => Some(ArrayNode {
                doc: self.doc,
                items: &self.doc.items[run.range()],
            }),
            _ => None,
        }
    }

    #[inline]
    pub fn as_str(&self) -> Option<&'d str> {
        match self.slot() {
            Slot::String(s) => Some(s),
            _ => None,
        }
    }

    #[inline]
    pub fn as_number(&self) -> Option<&'d Number> {
        match self.slot() {
            Slot::Number(n) => Some(n),
            _ => None,
        }
    }

    #[inline]
    pub fn as_bool(&self) -> Option<bool> {
        match self.slot() {
            Slot::Bool(b) => Some(*b),
            _ => None,
        }
    }

    #[inline]
    pub fn is_null(&self) -> bool {
        matches!(self.slot(), Slot::Null)
    }

    /// The `serde_json::Value` this node stands for.
    pub fn to_value(&self) -> Value {
        match self.slot() {
            Slot::Null => Value::Null,
            Slot::Bool(b) => Value::Bool(*b),
            Slot::Number(n) => Value::Number(n.clone()),
            Slot::String(s) => Value::String(s.to_string()),
            Slot::Array(_) => Value::Array(
                self.array()
                    .into_iter()
                    .flat_map(|a| a.iter())
                    .map(|item| item.to_value())
                    .collect(),
            ),
            Slot::Object(_) => Value::Object(
                self.object()
                    .into_iter()
                    .flat_map(|o| o.iter())
                    .map(|(name, item)| (name.to_string(), item.to_value()))
                    .collect::<Map<String, Value>>(),
            ),
        }
    }

    /// JSON equality as `jsonschema` defines it (numbers compared by value: `1` equals `1.0`).
    fn equals(&self, other: &Node<'_>) -> bool {
        self.equal_with(other, &|a, b| {
            json::cmp::equal(&Value::Number(a.clone()), &Value::Number(b.clone()))
        })
    }

    /// Equal as the `Value`s they stand for are (`serde_json`'s equality: `1` is not `1.0`).
    pub fn same_value(&self, other: &Node<'_>) -> bool {
        self.equal_with(other, &|a, b| a == b)
    }

    fn equal_with(&self, other: &Node<'_>, numbers: &dyn Fn(&Number, &Number) -> bool) -> bool {
        match (self.slot(), other.slot()) {
            (Slot::Null, Slot::Null) => true,
            (Slot::Bool(a), Slot::Bool(b)) => a == b,
            (Slot::String(a), Slot::String(b)) => a == b,
            (Slot::Number(a), Slot::Number(b)) => numbers(a, b),
            (Slot::Array(_), Slot::Array(_)) => match (self.array(), other.array()) {
                (Some(a), Some(b)) => {
                    a.items.len() == b.items.len()
                        && a.iter()
                            .zip(b.iter())
                            .all(|(x, y)| x.equal_with(&y, numbers))
                }
                _ => false,
            },
            (Slot::Object(_), Slot::Object(_)) => match (self.object(), other.object()) {
                (Some(a), Some(b)) => {
                    a.members.len() == b.members.len()
                        && a.iter()
                            .zip(b.iter())
                            .all(|((na, x), (nb, y))| na == nb && x.equal_with(&y, numbers))
                }
                _ => false,
            },
            _ => false,
        }
    }
}

/// Up to this many members, a lookup scans instead of halving.
pub(crate) const SCAN_MAX: usize = 8;

/// Members in the order of their names. The first bytes settle most comparisons of one
/// object's names without a call to `memcmp` (a quarter of sorting them, in a profile).
fn by_name(a: &(Cow<'_, str>, NodeId), b: &(Cow<'_, str>, NodeId)) -> std::cmp::Ordering {
    name_order(&a.0, &b.0)
}

/// `a.cmp(b)` for member names: the first bytes settle most comparisons without a call to
/// `memcmp`.
#[inline]
pub(crate) fn name_order(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.first().cmp(&b.first()).then_with(|| a.cmp(b))
}

/// `a == b` for member names, compared in place up to 16 bytes (every name of a Kubernetes
/// object's schema fits): the slice comparison called `memcmp` for each candidate, about a
/// third of a lookup's instructions in a profile.
#[inline]
pub(crate) fn same_name(a: &[u8], b: &[u8]) -> bool {
    fn word<const N: usize>(s: &[u8], at: usize) -> Option<[u8; N]> {
        s.get(at..at + N).and_then(|w| w.try_into().ok())
    }
    let len = a.len();
    if len != b.len() {
        return false;
    }
    // Two overlapping words cover every length between one word and two.
    match len {
        0..4 => a.iter().zip(b).all(|(x, y)| x == y),
        4..8 => word::<4>(a, 0) == word(b, 0) && word::<4>(a, len - 4) == word(b, len - 4),
        8..=16 => word::<8>(a, 0) == word(b, 0) && word::<8>(a, len - 8) == word(b, len - 8),
        _ => a == b,
    }
}

/// Where `name` is in `pairs` (sorted by name, no name twice): small runs — most objects, and
/// the fields a schema object names — by a scan that compares bytes only where the lengths
/// match; large ones (annotations, maps) by halving, which compares with `memcmp` at each step.
#[inline]
pub(crate) fn position_by_name<N: AsRef<str>, T>(pairs: &[(N, T)], name: &str) -> Option<usize> {
    if pairs.len() <= SCAN_MAX {
        pairs
            .iter()
            .position(|(n, _)| same_name(n.as_ref().as_bytes(), name.as_bytes()))
    } else {
        pairs.binary_search_by(|(n, _)| n.as_ref().cmp(name)).ok()
    }
}

/// An object node's members, sorted by name.
#[derive(Debug, Clone, Copy)]
pub struct ObjectNode<'d> {
    doc: &'d Document<'d>,
    members: &'d [(Cow<'d, str>, NodeId)],
}

impl<'d> ObjectNode<'d> {
    #[inline]
    pub fn find(&self, name: &str) -> Option<Node<'d>> {
        position_by_name(self.members, name).map(|at| self.node(at))
    }

    fn node(&self, at: usize) -> Node<'d> {
        Node {
            doc: self.doc,
            id: self.members.get(at).map_or(NodeId::MAX, |m| m.1),
        }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn iter(&self) -> Members<'d> {
        Members {
            doc: self.doc,
            members: self.members.iter(),
        }
    }
}

/// An object's members in name order.
#[derive(Debug, Clone)]
pub struct Members<'d> {
    doc: &'d Document<'d>,
    members: std::slice::Iter<'d, (Cow<'d, str>, NodeId)>,
}

impl<'d> Iterator for Members<'d> {
    type Item = (&'d str, Node<'d>);

    fn next(&mut self) -> Option<Self::Item> {
        let (name, id) = self.members.next()?;
        Some((
            name.as_ref(),
            Node {
                doc: self.doc,
                id: *id,
            },
        ))
    }
}

/// An array node's items.
#[derive(Debug, Clone, Copy)]
pub struct ArrayNode<'d> {
    doc: &'d Document<'d>,
    items: &'d [NodeId],
}

impl<'d> ArrayNode<'d> {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn iter(&self) -> Items<'d> {
        Items {
            doc: self.doc,
            items: self.items.iter(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Items<'d> {
    doc: &'d Document<'d>,
    items: std::slice::Iter<'d, NodeId>,
}

impl<'d> Iterator for Items<'d> {
    type Item = Node<'d>;

    fn next(&mut self) -> Option<Self::Item> {
        let id = *self.items.next()?;
        Some(Node { doc: self.doc, id })
    }
}

/// Above this many items, `uniqueItems` is checked without comparing every pair.
const PAIRWISE_UNIQUE_MAX: usize = 32;

/// Documents as a representation `jsonschema` validates (`jsonschema::options_for`).
pub struct DocumentJson;

impl Json for DocumentJson {
    type Node<'a> = Node<'a>;
    type PreparedKey = Box<str>;
    type StringBuffer = Document<'static>;

    const ACYCLIC: bool = true;
    // A members pass costs no more than a lookup here (both walk the same short vector).
    const KEYS_PER_LOOKUP: usize = 2;

    fn prepare_key(key: &str) -> Box<str> {
        key.into()
    }

    fn with_string_node<T>(
        buffer: &mut Document<'static>,
        string: &str,
        f: impl FnOnce(Node<'_>) -> T,
    ) -> T {
        buffer.slots.clear();
        buffer
            .slots
            .push(Slot::String(Cow::Owned(string.to_owned())));
        buffer.root = 0;
        f(buffer.root())
    }
}

impl<'a> json::Node<'a, DocumentJson> for Node<'a> {
    type Object = ObjectNode<'a>;
    type Array = ArrayNode<'a>;
    type Number = &'a Number;

    fn as_object(&self) -> Option<ObjectNode<'a>> {
        self.object()
    }

    fn as_array(&self) -> Option<ArrayNode<'a>> {
        self.array()
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        self.as_str().map(Cow::Borrowed)
    }

    fn as_number(&self) -> Option<&'a Number> {
        Node::as_number(self)
    }

    fn as_boolean(&self) -> Option<bool> {
        self.as_bool()
    }

    fn is_null(&self) -> bool {
        Node::is_null(self)
    }

    fn json_type(&self) -> JsonType {
        match self.slot() {
            Slot::Null => JsonType::Null,
            Slot::Bool(_) => JsonType::Boolean,
            Slot::Number(_) => JsonType::Number,
            Slot::String(_) => JsonType::String,
            Slot::Array(_) => JsonType::Array,
            Slot::Object(_) => JsonType::Object,
        }
    }

    /// Bounds from the byte length first, as `jsonschema` does for `Value`s: a code point takes
    /// one to four bytes.
    fn string_length_within(&self, min: u64, max: u64) -> Option<bool> {
        let string = self.as_str()?;
        let bytes = string.len() as u64;
        let fewest = bytes.div_ceil(4);
        if bytes < min || fewest > max {
            return Some(false);
        }
        if min <= fewest && bytes <= max {
            return Some(true);
        }
        Some((min..=max).contains(&(string.chars().count() as u64)))
    }

    /// Scalars compared in place (`enum`, `const`); containers through their `Value`.
    fn equals_value(&self, expected: &Value) -> bool {
        match (self.slot(), expected) {
            (Slot::String(s), Value::String(e)) => s == e,
            (Slot::Bool(b), Value::Bool(e)) => b == e,
            (Slot::Null, Value::Null) => true,
            (Slot::Number(n), Value::Number(_)) => {
                json::cmp::equal(&Value::Number(n.clone()), expected)
            }
            (Slot::Object(_) | Slot::Array(_), Value::Object(_) | Value::Array(_)) => {
                json::cmp::equal(&Node::to_value(self), expected)
            }
            _ => false,
        }
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(Node::to_value(self))
    }

    fn identity(&self) -> Option<NodeIdentity> {
        Some(NodeIdentity::tagged(
            std::ptr::from_ref(self.doc) as usize,
            self.id,
        ))
    }
}

impl<'a> json::Object<'a, DocumentJson> for ObjectNode<'a> {
    type Node = Node<'a>;
    type MemberName = &'a str;
    type MembersIter = Members<'a>;

    fn len(&self) -> usize {
        self.members.len()
    }

    fn get(&self, key: &Box<str>) -> Option<Node<'a>> {
        self.find(key)
    }

    fn members(&self) -> Members<'a> {
        self.iter()
    }
}

impl<'a> json::Array<'a, DocumentJson> for ArrayNode<'a> {
    type Node = Node<'a>;
    type ElementsIter = Items<'a>;

    fn len(&self) -> usize {
        self.items.len()
    }

    fn elements(&self) -> Items<'a> {
        self.iter()
    }

    /// Short arrays pairwise, on the nodes themselves (the default builds a `Value` of every
    /// item); long ones as the default does, which is not quadratic.
    fn is_unique(&self) -> bool {
        if self.items.len() > PAIRWISE_UNIQUE_MAX {
            let values: Vec<Cow<'a, Value>> = self
                .iter()
                .map(|item| Cow::Owned(item.to_value()))
                .collect();
            return json::unique::is_unique(&values);
        }
        let node = |id: &NodeId| Node {
            doc: self.doc,
            id: *id,
        };
        self.items.iter().enumerate().all(|(i, a)| {
            let a = node(a);
            self.items[i + 1..].iter().all(|b| !a.equals(&node(b)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonschema::Validator;
    use proptest::prelude::*;
    use serde_json::json;

    fn doc_validator(schema: &Value) -> Validator<DocumentJson> {
        jsonschema::options_for::<DocumentJson>()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(schema)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn value_validator(schema: &Value) -> Validator {
        jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(schema)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn names_are_compared_as_slices_compare_them_at_every_length() {
        for len in 0..40usize {
            let name: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(same_name(&name, &name), "{len}");
            assert!(!same_name(&name, &name[..len.saturating_sub(1)]) || len == 0);
            for at in 0..len {
                let mut other = name.clone();
                other[at] ^= 0x20;
                assert!(!same_name(&name, &other), "{len} differing at {at}");
            }
        }
    }

    #[test]
    fn meets_the_accessor_contract_jsonschema_relies_on() {
        let value = json::conformance::document();
        let doc = Document::from_value(&value).unwrap_or_default();
        json::conformance::assert_conformance::<DocumentJson>(&doc.root());
    }

    #[test]
    fn objects_are_sorted_by_name_and_a_repeated_name_keeps_its_last_value() {
        let mut builder = Builder::with_capacity(8);
        let mark = builder.open_object();
        for (name, n) in [("b", 1), ("a", 2), ("b", 3), ("c", 4), ("a", 5)] {
            let id = builder.number(Number::from(n)).unwrap_or_default();
            builder.member(Cow::Borrowed(name), id);
        }
        let root = builder.close_object(mark).unwrap_or_default();
        let doc = builder.finish(root);
        assert_eq!(doc.root().to_value(), json!({"a": 5, "b": 3, "c": 4}));
        let names: Vec<&str> = doc
            .root()
            .object()
            .into_iter()
            .flat_map(|o| o.iter())
            .map(|(name, _)| name)
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(
            doc.root().get("b").and_then(|n| n.as_number().cloned()),
            Some(3.into())
        );
        assert!(doc.root().get("d").is_none());
    }

    #[test]
    fn unique_items_are_judged_alike_in_short_and_long_arrays() {
        let schema = json!({"uniqueItems": true});
        let (on_value, on_doc) = (value_validator(&schema), doc_validator(&schema));
        for len in [3, 40] {
            let distinct: Vec<Value> = (0..len).map(|i| json!({"n": i, "s": [i]})).collect();
            let mut repeated = distinct.clone();
            repeated.push(json!({"s": [1], "n": 1.0}));
            for (items, unique) in [(distinct, true), (repeated, false)] {
                let value = Value::Array(items);
                let doc = Document::from_value(&value).unwrap_or_default();
                assert_eq!(on_value.is_valid(&value), unique, "{len}");
                assert_eq!(on_doc.is_valid(doc.root()), unique, "{len}");
            }
        }
    }

    fn any_instance() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-3i64..12).prop_map(Value::from),
            prop_oneof![Just(1.0), Just(2.5), Just(-0.5), Just(1e300)].prop_map(Value::from),
            "(https://|http://)?[a-zA-Z]{0,4}|USD|EUR|stripe|adyen|é😀".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[abc]|name|spec|x-[a-z]", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Schemas touching every keyword family: types, bounds, strings, enums and consts, object
    /// and array structure, combinators, references, formats.
    fn schemas() -> Vec<Value> {
        vec![
            json!({"type": "object", "required": ["a"], "additionalProperties": false,
                   "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 10},
                                  "b": {"type": "string", "pattern": "^https://", "maxLength": 6},
                                  "c": {"type": "array", "uniqueItems": true, "minItems": 1,
                                        "items": {"enum": ["USD", "EUR", 1, 1.0, null]}}}}),
            json!({"patternProperties": {"^x-": {"type": "number", "multipleOf": 0.5}},
                   "propertyNames": {"maxLength": 3}, "minProperties": 1, "maxProperties": 3,
                   "dependentRequired": {"a": ["b"]}}),
            json!({"$defs": {"node": {"type": "object",
                                      "properties": {"a": {"$ref": "#/$defs/node"}},
                                      "unevaluatedProperties": {"type": ["string", "null"]}}},
                   "anyOf": [{"$ref": "#/$defs/node"}, {"type": "array", "contains": {"const": 2},
                                                        "prefixItems": [{"type": "boolean"}]}]}),
            json!({"if": {"properties": {"a": {"const": 1}}}, "then": {"required": ["b"]},
                   "else": {"not": {"required": ["c"]}},
                   "oneOf": [{"type": "object"}, {"type": "array", "maxItems": 2}],
                   "properties": {"name": {"format": "hostname"}, "spec": {"format": "uri"}}}),
        ]
    }

    fn errors<'i>(found: impl Iterator<Item = jsonschema::ValidationError<'i>>) -> Vec<String> {
        let mut all: Vec<String> = found
            .map(|e| {
                format!(
                    "{} {} {}",
                    e.instance_path().as_str(),
                    e.schema_path().as_str(),
                    e
                )
            })
            .collect();
        all.sort();
        all
    }

    proptest! {
        #[test]
        fn a_document_is_the_value_it_was_made_from(value in any_instance()) {
            let doc = Document::from_value(&value).unwrap_or_default();
            prop_assert_eq!(&doc.root().to_value(), &value);
        }

        #[test]
        fn schemas_judge_a_document_as_they_judge_its_value(value in any_instance()) {
            let doc = Document::from_value(&value).unwrap_or_default();
            for schema in schemas() {
                let on_value = value_validator(&schema);
                let on_doc = doc_validator(&schema);
                prop_assert_eq!(on_doc.is_valid(doc.root()), on_value.is_valid(&value), "{}", schema);
                prop_assert_eq!(
                    errors(on_doc.iter_errors(doc.root())),
                    errors(on_value.iter_errors(&value)),
                    "{}", schema
                );
            }
        }
    }
}
