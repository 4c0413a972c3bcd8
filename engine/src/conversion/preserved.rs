//! The annotation that carries fields with no place in the version an object is converted to,
//! so that converting back restores them. Keyed by the version the data belongs to, so several
//! hops (v1alpha1 -> v1 -> v1beta1) each keep their own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const PRESERVED_ANNOTATION: &str = "conversion.tollgate.dev/preserved";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Preserved {
    /// The annotations map did not exist before tollgate added this annotation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub annotations_added: bool,
    /// version -> JSON pointer -> value.
    #[serde(default)]
    pub fields: BTreeMap<String, BTreeMap<String, Value>>,
}

/// Removes the annotation (and an annotations map that only existed to hold it).
pub(crate) fn take(metadata: &mut Map<String, Value>) -> Result<Preserved, String> {
    let Some(annotations) = metadata
        .get_mut("annotations")
        .and_then(Value::as_object_mut)
    else {
        return Ok(Preserved::default());
    };
    let Some(raw) = annotations.remove(PRESERVED_ANNOTATION) else {
        return Ok(Preserved::default());
    };
    let preserved: Preserved = raw
        .as_str()
        .ok_or_else(|| "must be a string".to_string())
        .and_then(|text| serde_json::from_str(text).map_err(|e| e.to_string()))
        .map_err(|e| format!("annotation {PRESERVED_ANNOTATION} is not valid: {e}"))?;
    if preserved.annotations_added && annotations.is_empty() {
        metadata.remove("annotations");
    }
    Ok(preserved)
}

/// Writes the annotation back when it still carries data; otherwise leaves no trace.
pub(crate) fn put(
    metadata: &mut Map<String, Value>,
    mut preserved: Preserved,
) -> Result<(), String> {
    preserved.fields.retain(|_, fields| !fields.is_empty());
    if preserved.fields.is_empty() {
        return Ok(());
    }
    let has_map = metadata.get("annotations").is_some_and(Value::is_object);
    if !has_map {
        preserved.annotations_added = true;
        metadata.insert("annotations".into(), Value::Object(Map::new()));
    }
    let text = serde_json::to_string(&preserved).map_err(|e| e.to_string())?;
    if let Some(annotations) = metadata
        .get_mut("annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.insert(PRESERVED_ANNOTATION.into(), Value::String(text));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn leaves_no_trace_when_nothing_is_preserved() -> Result<(), String> {
        let mut metadata = json!({"name": "x"})
            .as_object()
            .cloned()
            .unwrap_or_default();
        put(&mut metadata, Preserved::default())?;
        assert_eq!(Value::Object(metadata), json!({"name": "x"}));
        Ok(())
    }

    #[test]
    fn removes_an_annotations_map_it_created_but_keeps_an_existing_empty_one() -> Result<(), String>
    {
        for original in [
            json!({"name": "x"}),
            json!({"name": "x", "annotations": {}}),
        ] {
            let mut metadata = original.as_object().cloned().unwrap_or_default();
            let mut preserved = Preserved::default();
            preserved
                .fields
                .entry("v1".into())
                .or_default()
                .insert("/spec/a".into(), json!(1));
            put(&mut metadata, preserved.clone())?;
            assert!(metadata["annotations"][PRESERVED_ANNOTATION].is_string());
            let back = take(&mut metadata)?;
            assert_eq!(back.fields, preserved.fields);
            assert_eq!(Value::Object(metadata), original);
        }
        Ok(())
    }

    #[test]
    fn reports_a_corrupt_annotation() {
        let mut metadata = json!({"annotations": {PRESERVED_ANNOTATION: "{not json"}})
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert!(take(&mut metadata).is_err());
    }
}
