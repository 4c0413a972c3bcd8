//! A document read by `serde`: any `Deserializer` (serde_json's, on a review's body) fills a
//! `Builder` node by node through a `DeserializeSeed`, its strings borrowed from the text
//! wherever the text holds them unescaped. serde_json decides what is JSON (and words the
//! errors); this only decides where each value goes.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

use super::{Builder, Document, NodeId};

/// Nodes reserved before reading an object: about what a typical custom resource holds.
const NODES_GUESS: usize = 64;

impl<'de> Deserialize<'de> for Document<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut builder = Builder::with_capacity(NODES_GUESS);
        let root = NodeSeed(&mut builder).deserialize(deserializer)?;
        Ok(builder.finish(root))
    }
}

/// One value of the text, added to the builder; its node number is the result.
struct NodeSeed<'b, 'de>(&'b mut Builder<'de>);

impl<'de> DeserializeSeed<'de> for NodeSeed<'_, 'de> {
    type Value = NodeId;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<NodeId, D::Error> {
        deserializer.deserialize_any(self)
    }
}

fn too_large<E: de::Error>(_: super::TooLarge) -> E {
    E::custom("document has too many nodes")
}

impl<'de> Visitor<'de> for NodeSeed<'_, 'de> {
    type Value = NodeId;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<NodeId, E> {
        self.0.null().map_err(too_large)
    }

    fn visit_none<E: de::Error>(self) -> Result<NodeId, E> {
        self.visit_unit()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<NodeId, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<NodeId, E> {
        self.0.bool(v).map_err(too_large)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<NodeId, E> {
        self.0.number(Number::from(v)).map_err(too_large)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<NodeId, E> {
        self.0.number(Number::from(v)).map_err(too_large)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<NodeId, E> {
        // JSON text has no NaN or infinity; another format's are refused as serde_json's
        // `Value` refuses them.
        let number = Number::from_f64(v).ok_or_else(|| E::custom("not a JSON number"))?;
        self.0.number(number).map_err(too_large)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<NodeId, E> {
        self.0.string(Cow::Borrowed(v)).map_err(too_large)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<NodeId, E> {
        self.0.string(Cow::Owned(v.to_owned())).map_err(too_large)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<NodeId, E> {
        self.0.string(Cow::Owned(v)).map_err(too_large)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeId, A::Error> {
        let mark = self.0.open_array();
        while let Some(item) = seq.next_element_seed(NodeSeed(self.0))? {
            self.0.item(item);
        }
        self.0.close_array(mark).map_err(too_large)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeId, A::Error> {
        let mark = self.0.open_object();
        while let Some(Name(name)) = map.next_key()? {
            let value = map.next_value_seed(NodeSeed(self.0))?;
            self.0.member(name, value);
        }
        self.0.close_object(mark).map_err(too_large)
    }
}

/// A member name, borrowed from the text where it has no escapes.
struct Name<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;

        impl<'de> Visitor<'de> for NameVisitor {
            type Value = Name<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v)))
            }
        }

        deserializer.deserialize_str(NameVisitor)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e9f64..1e9).prop_map(Value::from),
            "(?s).{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-c\"\\\\]{0,3}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Read from text, a document is the `Value` serde_json reads from the same text.
        #[test]
        fn reads_what_serde_json_reads(value in any_json()) {
            let text = serde_json::to_string(&value).unwrap_or_default();
            let doc: Document<'_> = serde_json::from_str(&text)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(doc.root().to_value(), value);
        }
    }

    #[test]
    fn repeated_names_keep_the_last_value_and_plain_strings_are_borrowed()
    -> Result<(), serde_json::Error> {
        let text = r#"{"b":1,"a":"x","b":{"c":"\u0041"}}"#;
        let doc: Document<'_> = serde_json::from_str(text)?;
        assert_eq!(doc.root().to_value(), json!({"a": "x", "b": {"c": "A"}}));
        let a = doc.root().get("a");
        assert!(a.and_then(|a| a.as_str()).is_some_and(|s| text.contains(s)));
        Ok(())
    }

    #[test]
    fn malformed_text_is_refused_with_serde_jsons_error() {
        for text in ["{", "[1,]", r#"{"a" 1}"#, "nul", "1 2"] {
            assert!(
                serde_json::from_str::<Document<'_>>(text).is_err(),
                "{text}"
            );
        }
    }
}
