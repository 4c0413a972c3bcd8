//! Writing answers' JSON straight into a byte buffer, byte for byte what `serde_json` writes.
//!
//! A callgrind profile put `serde_json::ser::format_escaped_str` at 11k instructions of a
//! mutate review (the base64 patch goes through its escape check one byte at a time, with three
//! `io::Write` calls per string) and at 8k of a one-object conversion. Here a string is checked
//! eight bytes at a time and copied once; only strings that need escapes take the byte-wise
//! path. The tests hold the output to `serde_json`'s own on arbitrary documents.

use serde_json::Value;
use tollgate_engine::conversion::Converted;
use tollgate_engine::document::Node;
use tollgate_engine::evaluate::Defaults;
use tollgate_engine::instance::Instance;

/// True when no byte of `bytes` needs an escape (no control character, quote or backslash).
/// Eight bytes at a time: most strings in an object are short, too short for vector code.
fn plain(bytes: &[u8]) -> bool {
    if bytes.len() < 8 {
        return !bytes.iter().any(|&b| needs_escape(b));
    }
    let mut found = 0;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        found |= escapes_in(chunk);
    }
    // The last eight bytes cover the rest (overlapping what was checked).
    if !chunks.remainder().is_empty() {
        found |= escapes_in(&bytes[bytes.len() - 8..]);
    }
    found == 0
}

/// A control character, a quote or a backslash: what a JSON string cannot hold as it is.
pub(super) fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// Non-zero when one of the 8 bytes is a control character, a quote or a backslash. Exact as
/// a yes/no answer (the usual "has a byte below n" word tricks, n <= 0x80), and its lowest set
/// bit is in the first such byte (a false hit can only follow a true one: borrows run upwards,
/// and the word is read little-endian so that upwards is later in the text).
pub(super) fn escapes_in(chunk: &[u8]) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const CONTROL_END: u64 = ONES * 0x20;
    const QUOTES: u64 = ONES * b'"' as u64;
    const BACKSLASHES: u64 = ONES * b'\\' as u64;
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(chunk);
    let word = u64::from_le_bytes(bytes);
    let below = |w: u64, n: u64| w.wrapping_sub(n) & !w;
    (below(word, CONTROL_END) | below(word ^ QUOTES, ONES) | below(word ^ BACKSLASHES, ONES))
        & HIGHS
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `s` as a JSON string literal.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    if plain(bytes) {
        out.extend_from_slice(bytes);
    } else {
        let mut start = 0;
        for (i, &byte) in bytes.iter().enumerate() {
            let short = match byte {
                b'"' => b'"',
                b'\\' => b'\\',
                0x08 => b'b',
                0x09 => b't',
                0x0A => b'n',
                0x0C => b'f',
                0x0D => b'r',
                0x00..=0x1F => b'u',
                _ => continue,
            };
            out.extend_from_slice(&bytes[start..i]);
            start = i + 1;
            if short == b'u' {
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX_DIGITS[usize::from(byte >> 4)],
                    HEX_DIGITS[usize::from(byte & 0x0F)],
                ]);
            } else {
                out.extend_from_slice(&[b'\\', short]);
            }
        }
        out.extend_from_slice(&bytes[start..]);
    }
    out.push(b'"');
}

/// `value` as compact JSON.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // Few per document; serde_json's own formatting keeps them exactly as it writes them.
        Value::Number(n) => {
            if serde_json::to_writer(&mut *out, n).is_err() {
                out.extend_from_slice(b"null");
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => write_array(out, items, write_value),
        Value::Object(map) => write_object(out, map.iter(), write_value),
    }
}

/// An object's members (in the order given) as a JSON object, each value by `write_item`.
fn write_object<K: AsRef<str>, T>(
    out: &mut Vec<u8>,
    members: impl Iterator<Item = (K, T)>,
    write_item: impl Fn(&mut Vec<u8>, T),
) {
    out.push(b'{');
    for (i, (key, item)) in members.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, key.as_ref());
        out.push(b':');
        write_item(out, item);
    }
    out.push(b'}');
}

/// A document's value as compact JSON: the same bytes as `write_value` of the same value
/// (members are kept in name order in both).
pub fn write_node(out: &mut Vec<u8>, node: Node<'_>) {
    if let Some(text) = node.as_str() {
        write_str(out, text);
    } else if let Some(object) = node.object() {
        write_object(out, object.iter(), write_node);
    } else if let Some(items) = node.array() {
        write_array(out, items.iter(), write_node);
    } else if let Some(number) = node.as_number() {
        if serde_json::to_writer(&mut *out, number).is_err() {
            out.extend_from_slice(b"null");
        }
    } else {
        match node.as_bool() {
            Some(true) => out.extend_from_slice(b"true"),
            Some(false) => out.extend_from_slice(b"false"),
            None => out.extend_from_slice(b"null"),
        }
    }
}

/// A converted object (values of its source document, arranged by the conversion).
pub fn write_converted(out: &mut Vec<u8>, converted: &Converted<'_>) {
    match converted {
        Converted::Source(node) => write_node(out, *node),
        Converted::Value(value) => write_value(out, value),
        Converted::Object(members) => write_object(
            out,
            members.iter().map(|(key, item)| (key, item)),
            write_converted,
        ),
    }
}

/// `items` as a JSON array, each written by `write_item`.
pub fn write_array<T>(
    out: &mut Vec<u8>,
    items: impl IntoIterator<Item = T>,
    write_item: impl Fn(&mut Vec<u8>, T),
) {
    out.push(b'[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_item(out, item);
    }
    out.push(b']');
}

/// The defaulting patch of `additions` as `serde_json` writes the `json_patch::Patch` of the
/// same defaults (`Defaults::apply`), without building the patch; `None` when it has no
/// operation.
pub fn defaults_patch(defaults: &Defaults<'_>, object: Instance<'_>) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    out.push(b'[');
    let mut empty = true;
    defaults.each_operation(object, |operation| {
        if !empty {
            out.push(b',');
        }
        empty = false;
        out.extend_from_slice(b"{\"op\":\"");
        out.extend_from_slice(operation.op().as_bytes());
        out.extend_from_slice(b"\",\"path\":");
        write_str(&mut out, operation.pointer);
        out.extend_from_slice(b",\"value\":");
        write_value(&mut out, operation.value);
        out.push(b'}');
    });
    out.push(b']');
    (!empty).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::http::json_strategies::{any_json, any_text};
    use tollgate_engine::cel::RequestInfo;
    use tollgate_engine::evaluate;
    use tollgate_engine::policy::{OperationName, Target};

    proptest! {
        #[test]
        fn values_are_written_as_serde_json_writes_them(value in any_json()) {
            let mut ours = Vec::new();
            write_value(&mut ours, &value);
            prop_assert_eq!(ours, serde_json::to_vec(&value).unwrap_or_default());
        }

        #[test]
        fn documents_are_written_as_serde_json_writes_their_values(value in any_json()) {
            let document = tollgate_engine::document::Document::from_value(&value);
            prop_assert!(document.is_ok());
            let mut ours = Vec::new();
            if let Ok(document) = document {
                write_node(&mut ours, document.root());
            }
            prop_assert_eq!(ours, serde_json::to_vec(&value).unwrap_or_default());
        }

        #[test]
        fn defaulting_patches_are_written_as_serde_json_writes_them(
            metadata in prop_oneof![
                Just(None),
                Just(Some(Value::Null)),
                Just(Some(serde_json::json!({"labels": null}))),
                prop::collection::btree_map(any_text(), any_text(), 0..3)
                    .prop_map(|labels| Some(serde_json::json!({"labels": labels}))),
            ],
            spec in prop::collection::btree_map(
                prop::sample::select(vec!["timeoutSeconds", "retry", "currencies", "replicas", "a/b~c"]),
                prop_oneof![Just(Value::Null), Just(serde_json::json!({})), any_json()],
                0..5,
            ),
        ) {
            let mut object = serde_json::json!({
                "apiVersion": "payments.example.com/v1",
                "kind": "PaymentGateway",
                "spec": spec,
            });
            if let (Some(metadata), Some(map)) = (metadata, object.as_object_mut()) {
                map.insert("metadata".to_string(), metadata);
            }
            let store = crate::fuzzing::example_store();
            let target = Target {
                group: "payments.example.com",
                version: "v1",
                kind: "PaymentGateway",
                operation: OperationName::Create,
                namespace: Some("payments"),
                object: Some((&object).into()),
                old_object: None,
                request: RequestInfo { name: "pg", username: "u", groups: &[], dry_run: false },
            };
            let defaults = evaluate::defaults_for(store, &target);
            let mut built = object.clone();
            let patch = defaults.apply(&mut built);
            let expected = (!patch.0.is_empty()).then(|| serde_json::to_vec(&patch).unwrap_or_default());
            let doc = tollgate_engine::document::Document::from_value(&object).unwrap_or_default();
            for read in [(&object).into(), doc.root().into()] {
                prop_assert_eq!(defaults_patch(&defaults, read), expected.clone());
            }
        }
    }

    #[test]
    fn plain_finds_a_byte_to_escape_wherever_it_is() {
        for len in 0..20 {
            assert!(plain("x".repeat(len).as_bytes()));
            for at in 0..len {
                for bad in [b'"', b'\\', 0x00, 0x1F, b'\n'] {
                    let mut bytes = vec![b'x'; len];
                    bytes[at] = bad;
                    assert!(!plain(&bytes), "{bad:#x} at {at} of {len}");
                }
                for fine in [b' ', 0x7F, 0x80, 0xFF, b'/', b'#', b']'] {
                    let mut bytes = vec![b'x'; len];
                    bytes[at] = fine;
                    assert!(plain(&bytes), "{fine:#x} at {at} of {len}");
                }
            }
        }
    }

    #[test]
    fn every_control_character_and_quote_is_escaped_like_serde_json() {
        let all: String = (0u8..0x80).map(char::from).collect();
        let mut ours = Vec::new();
        write_str(&mut ours, &all);
        assert_eq!(ours, serde_json::to_vec(&all).unwrap_or_default());
        let text = String::from_utf8_lossy(&ours);
        for escape in [r"\u001f", r"\n", r#"\""#, r"\\"] {
            assert!(text.contains(escape), "{escape} in {text}");
        }
    }
}
