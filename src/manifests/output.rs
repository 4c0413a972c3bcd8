//! Manifests as YAML text.

use serde_json::Value;

use super::ManifestError;

/// YAML documents separated by `---`.
pub fn to_yaml(docs: &[Value]) -> Result<String, ManifestError> {
    let mut out = String::new();
    for doc in docs {
        let node = to_node(doc);
        let mut text = String::new();
        let mut emitter = saphyr::YamlEmitter::new(&mut text);
        // Embedded policy files stay readable as literal blocks.
        emitter.multiline(true);
        emitter
            .dump(&node)
            .map_err(|e| ManifestError::Emit(e.to_string()))?;
        out.push_str(&text);
        out.push('\n');
    }
    Ok(out)
}

fn to_node(value: &Value) -> saphyr::Yaml<'static> {
    use saphyr::{Scalar, Yaml};
    match value {
        Value::Null => Yaml::Value(Scalar::Null),
        Value::Bool(b) => Yaml::Value(Scalar::Boolean(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Value(Scalar::Integer(i)),
            None => Yaml::Value(Scalar::FloatingPoint(n.as_f64().unwrap_or_default().into())),
        },
        Value::String(s) => Yaml::Value(Scalar::String(s.clone().into())),
        Value::Array(items) => Yaml::Sequence(items.iter().map(to_node).collect()),
        Value::Object(map) => Yaml::Mapping(
            map.iter()
                .map(|(k, v)| (Yaml::Value(Scalar::String(k.clone().into())), to_node(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tollgate_engine::policy::yaml;

    #[test]
    fn yaml_output_reads_back_identically() -> Result<(), ManifestError> {
        let docs = vec![
            json!({"a": "true", "b": "1", "c": "", "d": "multi\nline", "e": [1, 2.5, null, false], "f": {"x/y": "~"}}),
            json!({"file": "a: 1\n  # indented comment\nb: \"q\"\n", "trailing": "x\n\n", "lead": " space\nx"}),
            json!({"g": "key: value", "h": "- item", "i": "#comment", "j": "yes"}),
        ];
        let text = to_yaml(&docs)?;
        let back = yaml::parse_documents(&text).map_err(|e| ManifestError::Emit(e.message))?;
        let values: Vec<Value> = back.into_iter().map(|d| d.value).collect();
        assert_eq!(values, docs);
        Ok(())
    }
}
