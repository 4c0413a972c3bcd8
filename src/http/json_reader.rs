//! Reading reviews straight from the body text into the values the handlers use.
//!
//! A callgrind profile of the running server put `serde_json` decoding at 27.5k of the 45k
//! instructions a `/validate` review costs (the whole body is ~1.2 KiB): its visitor machinery
//! around every key and value, and a string scanner that stops for every short key. This reader
//! scans strings sixteen bytes a round (two eight-byte words), borrows every string without
//! escapes, and builds `serde_json::Value`s directly.
//!
//! It never decides anything `serde_json` might decide differently: whatever it is not sure of —
//! malformed text, a duplicate field of a review, `-0`, an integer beyond 64 bits, nesting deeper
//! than `MAX_DEPTH`, a string with a lone surrogate — is `Unsure`, and the caller then decodes
//! the body with `serde_json` as before. Documents it accepts decode to the same values
//! (property-tested against `serde_json`), and every error a client sees is `serde_json`'s own.

use std::borrow::Cow;

use serde_json::{Map, Number, Value};
use tollgate_engine::document::{Builder, Document, NodeId};

use super::json_writer::{escapes_in, needs_escape};

/// "Let `serde_json` decide": not an error by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsure;

pub type Read<T> = Result<T, Unsure>;

/// Below `serde_json`'s own limit (128), so that limit's error stays `serde_json`'s to give.
const MAX_DEPTH: u32 = 100;

/// Sets a field of a document seen for the first time: a `serde` derive refuses a repeated one.
pub fn once<T>(slot: &mut Option<T>, value: T) -> Read<()> {
    if slot.replace(value).is_some() {
        return Err(Unsure);
    }
    Ok(())
}

/// A cursor over one JSON text.
pub struct Reader<'a> {
    text: &'a str,
    pos: usize,
    depth: u32,
}

impl<'a> Reader<'a> {
    pub fn new(text: &'a str) -> Self {
        Self {
            text,
            pos: 0,
            depth: 0,
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// The next byte that is not JSON whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        let bytes = self.bytes();
        // Compact JSON (what the apiserver sends) has no whitespace between tokens.
        let next = *bytes.get(self.pos)?;
        if next > b' ' {
            return Some(next);
        }
        while let Some(&byte) = bytes.get(self.pos) {
            if !matches!(byte, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(byte);
            }
            self.pos += 1;
        }
        None
    }

    fn eat(&mut self, expected: u8) -> Read<()> {
        if self.peek() == Some(expected) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    fn eat_word(&mut self, word: &[u8]) -> Read<()> {
        if self.bytes()[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    /// Only whitespace left: a whole document was read.
    pub fn finish(mut self) -> Read<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(Unsure),
        }
    }

    /// Consumes a `null` if one comes next.
    fn null(&mut self) -> Read<bool> {
        if self.peek() == Some(b'n') {
            self.eat_word(b"null")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// `None` for a `null`, else what `read` reads: an `Option` field.
    pub fn optional<T>(&mut self, read: impl FnOnce(&mut Self) -> Read<T>) -> Read<Option<T>> {
        if self.null()? {
            Ok(None)
        } else {
            read(self).map(Some)
        }
    }

    pub fn bool(&mut self) -> Read<bool> {
        match self.peek() {
            Some(b't') => self.eat_word(b"true").map(|()| true),
            Some(b'f') => self.eat_word(b"false").map(|()| false),
            _ => Err(Unsure),
        }
    }

    /// A string, borrowed from the text unless it holds escapes.
    pub fn string(&mut self) -> Read<Cow<'a, str>> {
        self.eat(b'"')?;
        let start = self.pos;
        self.pos = start + self.to_special()?;
        match self.bytes()[self.pos] {
            b'"' => {
                self.pos += 1;
                Ok(Cow::Borrowed(&self.text[start..self.pos - 1]))
            }
            b'\\' => self.escaped(start).map(Cow::Owned),
            _ => Err(Unsure),
        }
    }

    /// How far from here the next quote, backslash or control character is.
    ///
    /// Inlined into `string`: as a call, the registers `string` keeps across it were saved and
    /// restored for every key and value.
    #[inline(always)]
    fn to_special(&self) -> Read<usize> {
        let bytes = self.bytes();
        let mut at = self.pos;
        // Sixteen bytes a round, one branch for both words: long strings (annotations, embedded
        // documents) spend their time here. (Checking one word first, for short keys, measured
        // slower on a whole review.)
        while let Some(chunk) = bytes.get(at..at + 16) {
            let (low, high) = chunk.split_at(8);
            let (low, high) = (escapes_in(low), escapes_in(high));
            if low | high != 0 {
                let within = if low != 0 {
                    low.trailing_zeros() / 8
                } else {
                    8 + high.trailing_zeros() / 8
                };
                return Ok(at - self.pos + within as usize);
            }
            at += 16;
        }
        if let Some(chunk) = bytes.get(at..at + 8) {
            let found = escapes_in(chunk);
            if found != 0 {
                return Ok(at - self.pos + found.trailing_zeros() as usize / 8);
            }
            at += 8;
        }
        bytes[at..]
            .iter()
            .position(|&b| needs_escape(b))
            .map(|found| at - self.pos + found)
            .ok_or(Unsure)
    }

    /// The rest of a string that has escapes; `self.pos` is at its first backslash.
    ///
    /// Kept out of line: inlined, its state made every call of `string` save and restore six
    /// registers — about a tenth of reading a short key — for the few strings that have escapes.
    #[cold]
    #[inline(never)]
    fn escaped(&mut self, start: usize) -> Read<String> {
        let mut out = String::with_capacity(self.pos - start + 16);
        out.push_str(&self.text[start..self.pos]);
        loop {
            match self.bytes()[self.pos] {
                b'"' => {
                    self.pos += 1;
                    return Ok(out);
                }
                b'\\' => {
                    self.pos += 1;
                    self.escape(&mut out)?;
                }
                _ => return Err(Unsure),
            }
            let from = self.pos;
            self.pos = from + self.to_special()?;
            out.push_str(&self.text[from..self.pos]);
        }
    }

    /// One escape, after its backslash.
    fn escape(&mut self, out: &mut String) -> Read<()> {
        let Some(&kind) = self.bytes().get(self.pos) else {
            return Err(Unsure);
        };
        self.pos += 1;
        let plain = match kind {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4()?;
                let code = match unit {
                    0xD800..=0xDBFF => {
                        self.eat_word(b"\\u")?;
                        let low = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(Unsure);
                        }
                        0x10000 + ((u32::from(unit) - 0xD800) << 10) + (u32::from(low) - 0xDC00)
                    }
                    other => u32::from(other),
                };
                // Lone low surrogates land here (not chars).
                char::from_u32(code).ok_or(Unsure)?
            }
            _ => return Err(Unsure),
        };
        out.push(plain);
        Ok(())
    }

    fn hex4(&mut self) -> Read<u16> {
        let digits = self.bytes().get(self.pos..self.pos + 4).ok_or(Unsure)?;
        let mut unit = 0u16;
        for &digit in digits {
            let nibble = (digit as char).to_digit(16).ok_or(Unsure)?;
            unit = unit << 4 | nibble as u16;
        }
        self.pos += 4;
        Ok(unit)
    }

    /// Calls `field` with each key of an object, `field` reading its value.
    pub fn object(
        &mut self,
        mut field: impl FnMut(&mut Self, Cow<'a, str>) -> Read<()>,
    ) -> Read<()> {
        self.sequence(b'{', b'}', |reader| {
            let key = reader.string()?;
            reader.eat(b':')?;
            field(reader, key)
        })
    }

    /// Calls `item` for each item of an array, `item` reading it.
    pub fn array(&mut self, item: impl FnMut(&mut Self) -> Read<()>) -> Read<()> {
        self.sequence(b'[', b']', item)
    }

    /// `open`, then entries separated by commas, each read by `entry`, then `close`.
    #[inline]
    fn sequence(
        &mut self,
        open: u8,
        close: u8,
        mut entry: impl FnMut(&mut Self) -> Read<()>,
    ) -> Read<()> {
        self.eat(open)?;
        self.enter()?;
        if self.peek() == Some(close) {
            self.pos += 1;
        } else {
            loop {
                entry(self)?;
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(next) if next == close => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(Unsure),
                }
            }
        }
        self.depth -= 1;
        Ok(())
    }

    fn enter(&mut self) -> Read<()> {
        if self.depth >= MAX_DEPTH {
            return Err(Unsure);
        }
        self.depth += 1;
        Ok(())
    }

    /// Any JSON value.
    pub fn value(&mut self) -> Read<Value> {
        match self.peek() {
            Some(b'"') => self.string().map(|s| Value::String(s.into_owned())),
            Some(b'{') => {
                let mut map = Map::new();
                self.object(|reader, key| {
                    let value = reader.value()?;
                    // A repeated key keeps its last value, as `serde_json` does.
                    map.insert(key.into_owned(), value);
                    Ok(())
                })?;
                Ok(Value::Object(map))
            }
            Some(b'[') => {
                let mut items = Vec::new();
                self.array(|reader| {
                    items.push(reader.value()?);
                    Ok(())
                })?;
                Ok(Value::Array(items))
            }
            Some(b't' | b'f') => self.bool().map(Value::Bool),
            Some(b'n') => self.eat_word(b"null").map(|()| Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number().map(Value::Number),
            _ => Err(Unsure),
        }
    }

    /// Any JSON value, into `builder`: strings stay borrowed from the text (see
    /// `tollgate_engine::document`).
    pub fn document(&mut self, builder: &mut Builder<'a>) -> Read<NodeId> {
        let built = match self.peek() {
            Some(b'"') => builder.string(self.string()?),
            Some(b'{') => {
                let mark = builder.open_object();
                self.object(|reader, key| {
                    let value = reader.document(builder)?;
                    builder.member(key, value);
                    Ok(())
                })?;
                builder.close_object(mark)
            }
            Some(b'[') => {
                let mark = builder.open_array();
                self.array(|reader| {
                    let item = reader.document(builder)?;
                    builder.item(item);
                    Ok(())
                })?;
                builder.close_array(mark)
            }
            Some(b't' | b'f') => builder.bool(self.bool()?),
            Some(b'n') => {
                self.eat_word(b"null")?;
                builder.null()
            }
            Some(b'-' | b'0'..=b'9') => builder.number(self.number()?),
            _ => return Err(Unsure),
        };
        built.map_err(|_| Unsure)
    }

    /// Reads past a value without building it (fields the handlers never look at).
    pub fn skip(&mut self) -> Read<()> {
        match self.peek() {
            Some(b'"') => self.skip_string(),
            Some(b'{') => self.skip_object(),
            Some(b'[') => self.array(Self::skip),
            Some(b't' | b'f') => self.bool().map(drop),
            Some(b'n') => self.eat_word(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number().map(drop),
            _ => Err(Unsure),
        }
    }

    /// What `read` reads, with the text it read it from.
    pub fn with_text<T>(&mut self, read: impl FnOnce(&mut Self) -> Read<T>) -> Read<(T, &'a str)> {
        let from = self.pos;
        let value = read(self)?;
        Ok((value, self.text.get(from..self.pos).unwrap_or_default()))
    }

    /// Reads past a value as `skip` does; when its text is exactly `seen` — the text of a value
    /// read before at the same depth, so known to be well-formed — without scanning it again.
    /// (The apiserver sends `requestKind` and `requestResource` equal to `kind` and `resource`
    /// unless a request was converted from another version.)
    pub fn skip_repeated(&mut self, seen: &str) -> Read<()> {
        if !seen.is_empty() && self.bytes()[self.pos..].starts_with(seen.as_bytes()) {
            self.pos += seen.len();
            Ok(())
        } else {
            self.skip()
        }
    }

    /// Past a string, checked as `string` checks it but not kept (fields a review's reader
    /// does not use: `requestKind`, `requestResource`, `options`, annotations it skips).
    fn skip_string(&mut self) -> Read<()> {
        let start = self.pos;
        self.eat(b'"')?;
        self.pos += self.to_special()?;
        match self.bytes()[self.pos] {
            b'"' => {
                self.pos += 1;
                Ok(())
            }
            // Escapes are rare in skipped fields: read as any string is.
            b'\\' => {
                self.pos = start;
                self.string().map(drop)
            }
            _ => Err(Unsure),
        }
    }

    /// Past an object whose members are not kept.
    fn skip_object(&mut self) -> Read<()> {
        self.sequence(b'{', b'}', |reader| {
            reader.skip_string()?;
            reader.eat(b':')?;
            reader.skip()
        })
    }

    /// A number: integers here, anything with a fraction or an exponent by `serde_json`'s own
    /// float parser on just that token (few in objects; its rounding is then exactly its own).
    fn number(&mut self) -> Read<Number> {
        let start = self.pos;
        let bytes = self.bytes();
        let negative = bytes[self.pos] == b'-';
        if negative {
            self.pos += 1;
        }
        let digits_start = self.pos;
        let mut magnitude: u64 = 0;
        while let Some(&digit @ b'0'..=b'9') = bytes.get(self.pos) {
            magnitude = magnitude
                .checked_mul(10)
                .and_then(|m| m.checked_add(u64::from(digit - b'0')))
                .ok_or(Unsure)?;
            self.pos += 1;
        }
        let digits = self.pos - digits_start;
        if digits == 0 || (digits > 1 && bytes[digits_start] == b'0') {
            return Err(Unsure);
        }
        if matches!(bytes.get(self.pos), Some(b'.' | b'e' | b'E')) {
            return self.float(start);
        }
        if !negative {
            return Ok(Number::from(magnitude));
        }
        // `-0` is a float to serde_json; leave it (and anything below i64::MIN) to it.
        match 0i64.checked_sub_unsigned(magnitude) {
            Some(value) if magnitude != 0 => Ok(Number::from(value)),
            _ => Err(Unsure),
        }
    }

    fn float(&mut self, start: usize) -> Read<Number> {
        let bytes = self.bytes();
        let digits = |pos: &mut usize| {
            let from = *pos;
            while bytes.get(*pos).is_some_and(u8::is_ascii_digit) {
                *pos += 1;
            }
            *pos > from
        };
        if bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if !digits(&mut self.pos) {
                return Err(Unsure);
            }
        }
        if matches!(bytes.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(bytes.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !digits(&mut self.pos) {
                return Err(Unsure);
            }
        }
        serde_json::from_str(&self.text[start..self.pos]).map_err(|_| Unsure)
    }
}

/// `text` (one JSON value) as a `Value`, or `Unsure` where `serde_json` must decide.
pub fn value(text: &str) -> Read<Value> {
    let mut reader = Reader::new(text);
    let value = reader.value()?;
    reader.finish()?;
    Ok(value)
}

/// `text` (one JSON value) as a document, or `Unsure` where `serde_json` must decide.
pub fn document(text: &str) -> Read<Document<'_>> {
    let mut reader = Reader::new(text);
    // About one node per eight bytes of compact JSON: one allocation for most objects.
    let mut builder = Builder::with_capacity(text.len() / 8);
    let root = reader.document(&mut builder)?;
    reader.finish()?;
    Ok(builder.finish(root))
}

/// Where this reader and `serde_json` read `text` (one JSON value) differently, if they do
/// (fuzz targets and tests): being unsure is always allowed, reading it otherwise never.
pub fn disagreement(text: &str) -> Option<String> {
    let ours = value(text).ok()?;
    match serde_json::from_str::<Value>(text) {
        Ok(theirs) if theirs == ours => None,
        Ok(theirs) => Some(format!("read {ours}; serde_json reads {theirs}")),
        Err(e) => Some(format!("read {ours}; serde_json refuses it: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::http::json_strategies::any_json;

    fn read(text: &str) -> Read<Value> {
        value(text)
    }

    /// Wherever the reader builds a `Value`, it builds a document of the same value.
    fn document_agrees(text: &str) -> Result<(), TestCaseError> {
        match (read(text), document(text)) {
            (Ok(value), Ok(doc)) => prop_assert_eq!(doc.root().to_value(), value, "{:?}", text),
            (Err(Unsure), Err(Unsure)) => {}
            (value, doc) => prop_assert!(
                false,
                "value {:?} but document {:?} for {:?}",
                value,
                doc.map(|d| d.root().to_value()),
                text
            ),
        }
        Ok(())
    }

    fn agrees_with_serde_json(text: &str) -> Result<(), TestCaseError> {
        prop_assert_eq!(disagreement(text), None, "{:?}", text);
        Ok(())
    }

    /// Bytes JSON texts are made of, often wrongly: escapes, surrogates, numbers at their edges.
    fn json_ish() -> impl Strategy<Value = String> {
        let pieces = prop_oneof![
            Just("{".to_string()),
            Just("}".to_string()),
            Just("[".to_string()),
            Just("]".to_string()),
            Just(",".to_string()),
            Just(":".to_string()),
            Just("\"".to_string()),
            Just("\\".to_string()),
            Just(" ".to_string()),
            Just("\n".to_string()),
            Just("\t".to_string()),
            Just("\u{1}".to_string()),
            Just("\\u".to_string()),
            Just("\\ud83d".to_string()),
            Just("\\ude00".to_string()),
            Just("\\uDBFF\\uDFFF".to_string()),
            Just("\\n".to_string()),
            Just("\\x".to_string()),
            Just("null".to_string()),
            Just("nul".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            Just("-".to_string()),
            Just("-0".to_string()),
            Just("0".to_string()),
            Just("00".to_string()),
            Just(".".to_string()),
            Just("e".to_string()),
            Just("E+".to_string()),
            Just("18446744073709551615".to_string()),
            Just("18446744073709551616".to_string()),
            Just("9223372036854775808".to_string()),
            Just("1e400".to_string()),
            Just("1.5".to_string()),
            "[a-z0-9é]{1,4}",
        ];
        prop::collection::vec(pieces, 0..24).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn documents_read_as_serde_json_reads_them(value in any_json(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&value)
            } else {
                serde_json::to_string(&value)
            };
            let text = text.unwrap_or_default();
            prop_assert_eq!(read(&text), Ok(serde_json::from_str::<Value>(&text).unwrap_or_default()));
            document_agrees(&text)?;
        }

        #[test]
        fn near_json_is_read_as_serde_json_reads_it_or_left_to_it(text in json_ish()) {
            for text in [text.clone(), format!("[{text}]"), format!("{{\"k\":\"{text}\"}}")] {
                agrees_with_serde_json(&text)?;
                document_agrees(&text)?;
            }
        }

        #[test]
        fn numbers_read_as_serde_json_reads_them(number in any::<f64>(), int in any::<i64>(), exp in -400i32..400) {
            for text in [
                number.to_string(),
                format!("{number:e}"),
                int.to_string(),
                format!("{int}e{exp}"),
                format!("{int}.{}E{exp}", int.unsigned_abs()),
            ] {
                agrees_with_serde_json(&text)?;
                document_agrees(&text)?;
            }
        }
    }

    #[test]
    fn keys_in_any_order_and_repeated_keys_read_as_serde_json_reads_them() {
        for text in [
            r#"{"b":1,"a":2,"c":3}"#,
            r#"{"b":1,"a":2,"b":3}"#,
            r#"{"a":1,"a":{"x":1,"x":[2]},"a":null,"z":0,"a":4}"#,
            r#"{"k9":0,"k8":1,"k7":2,"k6":3,"k5":4,"k4":5,"k3":6,"k2":7,"k1":8,"k0":9,"k10":10,"k11":11,"k12":12,"k1":13}"#,
        ] {
            assert_eq!(disagreement(text), None, "{text}");
            assert!(read(text).is_ok(), "{text}");
        }
    }

    #[test]
    fn what_serde_json_would_decide_differently_is_left_to_it() {
        for text in [
            "-0",
            "18446744073709551616",
            "-9223372036854775809",
            "1e400",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"a\u{1}b\"",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            "1e",
            "\"abc",
            "nul",
            "{} x",
        ] {
            assert_eq!(read(text), Err(Unsure), "{text:?}");
            assert!(document(text).is_err(), "{text:?}");
        }
        let deep = format!("{}{}", "[".repeat(101), "]".repeat(101));
        assert_eq!(read(&deep), Err(Unsure));
        let allowed = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(read(&allowed).is_ok());
    }

    #[test]
    fn plain_strings_are_borrowed_and_escaped_ones_decoded() {
        let mut reader = Reader::new(r#""plain, longer than eight bytes""#);
        assert!(matches!(
            reader.string(),
            Ok(Cow::Borrowed("plain, longer than eight bytes"))
        ));
        let mut reader = Reader::new(r#""tab\there \u00e9 \ud83d\ude00 \"q\" \\ \/""#);
        assert_eq!(
            reader.string().map(Cow::into_owned),
            Ok("tab\there é 😀 \"q\" \\ /".to_string())
        );
    }

    #[test]
    fn the_first_special_byte_is_found_wherever_it_is() {
        // Past two sixteen-byte rounds, the eight-byte step and the byte-wise tail, among the
        // bytes nearest to the special ones (space, `!`, `#`, `[`, `]`, DEL).
        let filler = |len: usize| -> Vec<u8> { (0..len).map(|i| b" !#[]~\x7fa"[i % 8]).collect() };
        for len in 0..48 {
            for at in 0..len {
                for special in [b'"', b'\\', 0x1f, 0x00, b'\n'] {
                    let mut bytes = filler(len);
                    bytes[at] = special;
                    // A later special byte must not hide the first one.
                    if at + 1 < len {
                        bytes[len - 1] = b'"';
                    }
                    let text = String::from_utf8(bytes).unwrap_or_default();
                    let reader = Reader::new(&text);
                    assert_eq!(reader.to_special(), Ok(at), "{text:?}");
                }
            }
            let text = String::from_utf8(filler(len)).unwrap_or_default();
            assert_eq!(Reader::new(&text).to_special(), Err(Unsure));
            let wide = format!("{}\"", "é".repeat(len));
            assert_eq!(Reader::new(&wide).to_special(), Ok(2 * len), "{wide:?}");
        }
    }
}
