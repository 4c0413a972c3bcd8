//! CRD conversion stanzas: a given CRD file completed, or a partial CRD to merge-patch.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Value, json};
use tollgate_engine::conversion::KindConversion;
use tollgate_engine::policy::yaml;
use tollgate_engine::{CompiledPolicy, Store};

use super::{ManifestError, Options};

fn conversion_stanza(options: &Options) -> Value {
    json!({
        "strategy": "Webhook",
        "webhook": {
            "conversionReviewVersions": ["v1"],
            "clientConfig": options.target.client_config("/convert", options.ca_bundle.as_deref()),
        }
    })
}

/// Each kind with conversion rules gets its CRD completed (when its file was given) or a partial
/// CRD holding only `spec.conversion`, to apply as a merge patch.
pub fn conversion_documents(store: &Store, options: &Options) -> Result<Vec<Value>, ManifestError> {
    let mut crds = Vec::new();
    for file in &options.crd_files {
        let text = std::fs::read_to_string(file).map_err(|source| ManifestError::Io {
            path: file.clone(),
            source,
        })?;
        let docs = yaml::parse_documents(&text).map_err(|e| ManifestError::Crd {
            path: file.clone(),
            message: format!("line {}: {}", e.line, e.message),
        })?;
        for doc in docs {
            crds.push((file.clone(), doc.value));
        }
    }
    let mut out = Vec::new();
    let mut completed = BTreeSet::new();
    for (file, mut crd) in crds {
        let group = crd
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let kind = crd
            .pointer("/spec/names/kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if let Some(rules) = store.conversion_for(&group, &kind) {
            check_crd_versions(&file, &crd, rules)?;
            if let Some(spec) = crd.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("conversion".into(), conversion_stanza(options));
            }
            completed.insert((group, kind));
        }
        out.push(crd);
    }
    for policy in store.policies() {
        let key = (policy.matcher.group.clone(), policy.matcher.kind.clone());
        if policy.conversion.is_some() && !completed.contains(&key) {
            out.push(partial_crd(policy, options));
        }
    }
    Ok(out)
}

fn partial_crd(policy: &CompiledPolicy, options: &Options) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{}.{}", policy.matcher.resource, policy.matcher.group)},
        "spec": {"conversion": conversion_stanza(options)},
    })
}

/// The CRD must serve only versions the rules know, and store the hub.
fn check_crd_versions(
    file: &Path,
    crd: &Value,
    rules: &KindConversion,
) -> Result<(), ManifestError> {
    let known = rules.versions();
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for version in &versions {
        let name = version
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let served = version
            .get("served")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let storage = version
            .get("storage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if served && !known.contains(&name) {
            return Err(ManifestError::Crd {
                path: file.to_path_buf(),
                message: format!(
                    "serves version {name:?}, which the conversion rules do not declare ({})",
                    known.join(", ")
                ),
            });
        }
        if storage && name != rules.hub {
            return Err(ManifestError::Crd {
                path: file.to_path_buf(),
                message: format!(
                    "stores version {name:?}, but the conversion hub is {:?}",
                    rules.hub
                ),
            });
        }
    }
    Ok(())
}
