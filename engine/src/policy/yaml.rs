//! Turns YAML (or JSON, which YAML 1.2 reads too) into `serde_json::Value` documents while
//! remembering the source line of every node, so later errors can point at `file:line`.

use std::collections::HashMap;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use serde_json::{Map, Number, Value};

use crate::path::escape_pointer;

/// One YAML document with the line of each node, keyed by JSON pointer (`""` is the root).
#[derive(Debug, Clone)]
pub struct SourceDocument {
    pub value: Value,
    lines: HashMap<String, usize>,
}

impl SourceDocument {
    /// The line of the node at `pointer`, or of its nearest ancestor that was written out.
    pub fn line_of(&self, pointer: &str) -> usize {
        let mut current = pointer;
        loop {
            if let Some(line) = self.lines.get(current) {
                return *line;
            }
            match current.rfind('/') {
                Some(idx) => current = &current[..idx],
                None => return self.lines.get("").copied().unwrap_or(1),
            }
        }
    }

    /// Line of the document start, used when an error concerns the document as a whole.
    pub fn start_line(&self) -> usize {
        self.line_of("")
    }
}

/// A syntax or structure error, with the 1-based line where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub line: usize,
    pub message: String,
}

pub fn parse_documents(text: &str) -> Result<Vec<SourceDocument>, YamlError> {
    let docs = MarkedYaml::load_from_str(text).map_err(|e| YamlError {
        line: e.marker().line(),
        message: e.info().to_string(),
    })?;
    docs.iter()
        // An empty document (e.g. a trailing `---`) carries nothing to load.
        .filter(|doc| !matches!(doc.data, YamlData::Value(Scalar::Null)))
        .map(|doc| {
            let mut lines = HashMap::new();
            let value = convert(doc, String::new(), &mut lines)?;
            Ok(SourceDocument { value, lines })
        })
        .collect()
}

fn convert(
    node: &MarkedYaml<'_>,
    pointer: String,
    lines: &mut HashMap<String, usize>,
) -> Result<Value, YamlError> {
    let line = node.span.start.line();
    let value = match &node.data {
        YamlData::Value(scalar) => scalar_to_json(scalar, line)?,
        YamlData::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (idx, item) in items.iter().enumerate() {
                out.push(convert(item, format!("{pointer}/{idx}"), lines)?);
            }
            Value::Array(out)
        }
        YamlData::Mapping(entries) => {
            let mut out = Map::new();
            for (key, val) in entries {
                let key_text = match &key.data {
                    YamlData::Value(Scalar::String(s)) => s.to_string(),
                    YamlData::Value(Scalar::Integer(i)) => i.to_string(),
                    YamlData::Value(Scalar::Boolean(b)) => b.to_string(),
                    _ => {
                        return Err(YamlError {
                            line: key.span.start.line(),
                            message: "mapping keys must be strings".into(),
                        });
                    }
                };
                if out.contains_key(&key_text) {
                    return Err(YamlError {
                        line: key.span.start.line(),
                        message: format!("duplicate key {key_text:?}"),
                    });
                }
                let child = format!("{pointer}/{}", escape_pointer(&key_text));
                // Errors about a key point at the key's own line, not at its value's.
                lines.insert(child.clone(), key.span.start.line());
                let converted = convert(val, child, lines)?;
                out.insert(key_text, converted);
            }
            Value::Object(out)
        }
        YamlData::Tagged(_, inner) => return convert(inner, pointer, lines),
        YamlData::Alias(_) => {
            return Err(YamlError {
                line,
                message: "YAML aliases are not supported in policy files".into(),
            });
        }
        YamlData::Representation(..) | YamlData::BadValue => {
            return Err(YamlError {
                line,
                message: "value cannot be read (bad tag or representation)".into(),
            });
        }
    };
    lines.entry(pointer).or_insert(line);
    Ok(value)
}

fn scalar_to_json(scalar: &Scalar<'_>, line: usize) -> Result<Value, YamlError> {
    Ok(match scalar {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Number((*i).into()),
        Scalar::FloatingPoint(f) => {
            Value::Number(Number::from_f64(f.into_inner()).ok_or_else(|| YamlError {
                line,
                message: "NaN and infinite numbers are not allowed".into(),
            })?)
        }
        Scalar::String(s) => Value::String(s.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_lines_of_nested_keys() -> Result<(), YamlError> {
        let text = "a: 1\nb:\n  c:\n    - x\n    - y: 2\n";
        let docs = parse_documents(text)?;
        assert_eq!(docs.len(), 1);
        let doc = &docs[0];
        assert_eq!(
            doc.value,
            serde_json::json!({"a": 1, "b": {"c": ["x", {"y": 2}]}})
        );
        assert_eq!(doc.line_of("/a"), 1);
        assert_eq!(doc.line_of("/b/c"), 3);
        assert_eq!(doc.line_of("/b/c/1/y"), 5);
        assert_eq!(doc.line_of("/b/c/1/y/missing"), 5);
        Ok(())
    }

    #[test]
    fn splits_multiple_documents_and_skips_empty_ones() -> Result<(), YamlError> {
        let docs = parse_documents("a: 1\n---\nb: 2\n---\n")?;
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].start_line(), 3);
        Ok(())
    }

    #[test]
    fn reads_json_and_keeps_quoted_numbers_as_strings() -> Result<(), YamlError> {
        let docs = parse_documents("{\"a\": \"1\", \"b\": [true, null, 1.5]}")?;
        assert_eq!(
            docs[0].value,
            serde_json::json!({"a": "1", "b": [true, null, 1.5]})
        );
        Ok(())
    }

    #[test]
    fn reports_syntax_errors_with_line() {
        let err = parse_documents("a: 1\nb: [1, 2\n").err();
        assert!(err.is_some_and(|e| e.line >= 2));
    }

    #[test]
    fn rejects_duplicate_keys() {
        let err = parse_documents("a: 1\na: 2\n").err();
        assert_eq!(err.map(|e| e.line), Some(2));
    }
}
