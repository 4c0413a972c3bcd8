//! The object a policy judges, as it came: a `serde_json::Value`, or a node of a `Document`
//! read straight from a review (no `Value` built). Everything validation reads — the schema,
//! CEL rules on the JSON, defaults-completeness, immutable fields, label selectors — reads it
//! through here; what needs a `Value` (the CEL interpreter, defaulting a copy) gets one from
//! `to_value`, borrowed when it already is one.

use std::borrow::Cow;

use serde_json::{Number, Value};

use crate::document;

#[derive(Debug, Clone, Copy)]
pub enum Instance<'a> {
    Value(&'a Value),
    Node(document::Node<'a>),
}

impl<'a> From<&'a Value> for Instance<'a> {
    fn from(value: &'a Value) -> Self {
        Instance::Value(value)
    }
}

impl<'a> From<document::Node<'a>> for Instance<'a> {
    fn from(node: document::Node<'a>) -> Self {
        Instance::Node(node)
    }
}

impl<'a> Instance<'a> {
    /// The member `name`, if this is an object that has it.
    #[inline]
    pub fn get(self, name: &str) -> Option<Instance<'a>> {
        match self {
            Instance::Value(v) => v.as_object()?.get(name).map(Instance::Value),
            Instance::Node(n) => n.get(name).map(Instance::Node),
        }
    }

    #[inline]
    pub fn as_str(self) -> Option<&'a str> {
        match self {
            Instance::Value(v) => v.as_str(),
            Instance::Node(n) => n.as_str(),
        }
    }

    #[inline]
    pub fn as_number(self) -> Option<&'a Number> {
        match self {
            Instance::Value(Value::Number(n)) => Some(n),
            Instance::Value(_) => None,
            Instance::Node(n) => n.as_number(),
        }
    }

    #[inline]
    pub fn as_bool(self) -> Option<bool> {
        match self {
            Instance::Value(v) => v.as_bool(),
            Instance::Node(n) => n.as_bool(),
        }
    }

    #[inline]
    pub fn is_null(self) -> bool {
        match self {
            Instance::Value(v) => v.is_null(),
            Instance::Node(n) => n.is_null(),
        }
    }

    #[inline]
    pub fn is_object(self) -> bool {
        self.object_len().is_some()
    }

    /// The member count, if this is an object.
    #[inline]
    pub fn object_len(self) -> Option<usize> {
        match self {
            Instance::Value(v) => v.as_object().map(serde_json::Map::len),
            Instance::Node(n) => n.object().map(|o| o.len()),
        }
    }

    /// The item count, if this is an array.
    #[inline]
    pub fn array_len(self) -> Option<usize> {
        match self {
            Instance::Value(v) => v.as_array().map(Vec::len),
            Instance::Node(n) => n.array().map(|a| a.len()),
        }
    }

    /// The members of an object in name order (none for anything else).
    pub fn members(self) -> impl Iterator<Item = (&'a str, Instance<'a>)> {
        let (values, nodes) = match self {
            Instance::Value(v) => (v.as_object(), None),
            Instance::Node(n) => (None, n.object()),
        };
        let values = values
            .into_iter()
            .flatten()
            .map(|(name, v)| (name.as_str(), Instance::Value(v)));
        let nodes = nodes
            .into_iter()
            .flat_map(|o| o.iter())
            .map(|(name, n)| (name, Instance::Node(n)));
        values.chain(nodes)
    }

    /// The items of an array (none for anything else).
    pub fn items(self) -> impl Iterator<Item = Instance<'a>> {
        let (values, nodes) = match self {
            Instance::Value(v) => (v.as_array(), None),
            Instance::Node(n) => (None, n.array()),
        };
        let values = values.into_iter().flatten().map(Instance::Value);
        let nodes = nodes.into_iter().flat_map(|a| a.iter()).map(Instance::Node);
        values.chain(nodes)
    }

    /// The `Value` this stands for: borrowed when it is one, built otherwise.
    pub fn to_value(self) -> Cow<'a, Value> {
        match self {
            Instance::Value(v) => Cow::Borrowed(v),
            Instance::Node(n) => Cow::Owned(n.to_value()),
        }
    }
}

/// `serde_json::Value`'s own equality (so `1` and `1.0` differ, as they do for `Value`).
impl PartialEq for Instance<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (*self, *other) {
            (Instance::Value(a), Instance::Value(b)) => a == b,
            (Instance::Node(a), Instance::Node(b)) => a.same_value(&b),
            (a, b) => a.to_value() == b.to_value(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::Document;
    use serde_json::json;

    #[test]
    fn a_value_and_its_document_read_alike() {
        let value = json!({"b": [1, 1.0, "x", null, true], "a": {"c": -2}, "d": {}});
        let doc = Document::from_value(&value).unwrap_or_default();
        for instance in [Instance::Value(&value), Instance::Node(doc.root())] {
            assert_eq!(instance.object_len(), Some(3));
            let names: Vec<&str> = instance.members().map(|(name, _)| name).collect();
            assert_eq!(names, ["a", "b", "d"]);
            let b = instance.get("b");
            assert_eq!(b.and_then(Instance::array_len), Some(5));
            let items: Vec<Value> = b
                .into_iter()
                .flat_map(Instance::items)
                .map(|i| i.to_value().into_owned())
                .collect();
            assert_eq!(
                items,
                [json!(1), json!(1.0), json!("x"), json!(null), json!(true)]
            );
            let a = instance.get("a");
            assert_eq!(
                a.and_then(|a| a.get("c")).and_then(Instance::as_number),
                Some(&(-2).into())
            );
            assert!(instance.get("zz").is_none());
            assert!(instance.get("d").is_some_and(Instance::is_object));
            assert_eq!(instance.to_value().into_owned(), value);
        }
        let one = json!(1);
        let one_float = json!(1.0);
        let docs = [&one, &one_float].map(|v| Document::from_value(v).unwrap_or_default());
        assert!(Instance::Node(docs[0].root()) != Instance::Node(docs[1].root()));
        assert!(Instance::Node(docs[0].root()) == Instance::Value(&one));
        assert!(Instance::Node(docs[1].root()) != Instance::Value(&one));
        assert!(Instance::Node(doc.root()) == Instance::Value(&value));
    }
}
