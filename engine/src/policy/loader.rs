//! Reads a policy directory into a compiled `Store`, reporting every problem at once with file
//! and line, so one run of `tollgate check` shows all that needs fixing.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use serde_json::Value;

use super::format::{
    MatchSpec, POLICY_API_VERSION, POLICY_KIND, PolicyDocument, PolicySpec, SchemaFrom,
};
use super::store::{CompiledPolicy, Matcher, Origin, Store};
use super::yaml::{self, SourceDocument};
use crate::cel::{PolicyRules, SchemaRules};
use crate::conversion;
use crate::defaults::{Defaulter, MetadataDefaults};
use crate::path::{FieldPath, escape_pointer, keys_from_pointer};
use crate::rollout;
use crate::schema;
use crate::selector::LabelSelector;

/// One problem in one policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The directory itself could not be listed.
    #[error("cannot read policy directory {}: {source}", dir.display())]
    Directory {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The directory holds no `.yaml`, `.yml` or `.json` file with a policy in it.
    #[error("no policies found in {} (expected .yaml, .yml or .json files)", .0.display())]
    Empty(PathBuf),
    /// One or more files are invalid; every problem is listed.
    #[error("{} invalid policy definition(s):\n{}", .0.len(), .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<PolicyError>),
}

impl LoadError {
    pub fn problem_count(&self) -> usize {
        match self {
            Self::Invalid(errors) => errors.len(),
            _ => 1,
        }
    }
}

pub fn load_dir(dir: &Path) -> Result<Store, LoadError> {
    let files = policy_files(dir)?;
    let mut errors = Vec::new();
    let mut policies = Vec::new();
    let mut digest = SetDigest::default();
    for file in &files {
        match std::fs::read_to_string(file) {
            Ok(text) => {
                digest.add(file, &text);
                load_text(file, &text, &mut policies, &mut errors)
            }
            Err(e) => errors.push(PolicyError {
                file: file.clone(),
                line: 0,
                message: format!("cannot read file: {e}"),
            }),
        }
    }
    into_store(policies, errors, dir, digest)
}

/// The policy set, or every problem found (duplicate names included); `source` names an empty
/// one.
fn into_store(
    policies: Vec<CompiledPolicy>,
    mut errors: Vec<PolicyError>,
    source: &Path,
    digest: SetDigest,
) -> Result<Store, LoadError> {
    report_duplicate_names(&policies, &mut errors);
    if !errors.is_empty() {
        return Err(LoadError::Invalid(errors));
    }
    if policies.is_empty() {
        return Err(LoadError::Empty(source.to_path_buf()));
    }
    Ok(Store::new(policies, digest.finish()))
}

/// One file's text as a whole policy set, with the same checks as `load_dir` (`file` names it
/// in errors).
pub fn load_str(file: &Path, text: &str) -> Result<Store, LoadError> {
    let mut errors = Vec::new();
    let mut policies = Vec::new();
    load_text(file, text, &mut policies, &mut errors);
    let mut digest = SetDigest::default();
    digest.add(file, text);
    into_store(policies, errors, file, digest)
}

/// Top-level files only, skipping hidden entries: a mounted ConfigMap keeps its real data in
/// `..data` directories and exposes each key as a visible symlink.
/// Names a policy set by what was read: each file's name and text. Two replicas that loaded
/// the same files report the same digest, so `/readyz` and the metrics say which set is in force.
#[derive(Default)]
struct SetDigest(Sha256);

impl SetDigest {
    fn add(&mut self, file: &Path, text: &str) {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        for part in [name.unwrap_or_default().as_bytes(), text.as_bytes()] {
            self.0.update((part.len() as u64).to_be_bytes());
            self.0.update(part);
        }
    }

    /// The first 12 hex digits: enough to tell sets apart, short enough for a label.
    fn finish(self) -> String {
        self.0.finalize()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// What a reload compares to see whether the directory changed: each policy file's path,
/// modification time and size. Cheap enough to take every few seconds.
pub type DirFingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

pub fn dir_fingerprint(dir: &Path) -> DirFingerprint {
    let mut entries: DirFingerprint = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let meta = std::fs::metadata(e.path()).ok()?;
            Some((e.path(), meta.modified().ok(), meta.len()))
        })
        .collect();
    entries.sort();
    entries
}

pub fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Directory {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let visible = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'));
            let wanted = p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
            visible && wanted && p.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

pub fn load_text(
    file: &Path,
    text: &str,
    policies: &mut Vec<CompiledPolicy>,
    errors: &mut Vec<PolicyError>,
) {
    let docs = match yaml::parse_documents(text) {
        Ok(docs) => docs,
        Err(e) => {
            errors.push(PolicyError {
                file: file.to_path_buf(),
                line: e.line,
                message: format!("invalid YAML/JSON: {}", e.message),
            });
            return;
        }
    };
    for doc in docs {
        let mut report = |pointer: &str, message: String| {
            errors.push(PolicyError {
                file: file.to_path_buf(),
                line: doc.line_of(pointer),
                message,
            })
        };
        if let Some(policy) = compile_document(&doc, file, &mut report) {
            policies.push(policy);
        }
    }
}

fn compile_document(
    doc: &SourceDocument,
    file: &Path,
    report: &mut dyn FnMut(&str, String),
) -> Option<CompiledPolicy> {
    let parsed = parse_document(doc, report)?;
    let mut failed = 0usize;
    let mut fail = |pointer: &str, message: String| {
        failed += 1;
        report(pointer, message);
    };

    let name = parsed.metadata.name;
    if name.is_empty() {
        fail("/metadata/name", "metadata.name must not be empty".into());
    }
    let mut spec = parsed.spec;
    if let Some(from) = spec.schema_from.take() {
        if spec.schema.is_some() {
            fail(
                "/spec/schemaFrom",
                "spec.schemaFrom: give either spec.schema or spec.schemaFrom, not both".into(),
            );
        } else {
            match schema_from_crd(file, &from) {
                Ok(schema) => spec.schema = Some(schema),
                Err(message) => fail("/spec/schemaFrom", format!("spec.schemaFrom: {message}")),
            }
        }
    }
    check_match(&spec.match_, &mut fail);
    let selector = compile_selector(&spec.match_, &mut fail);
    let validator = compile_schema(spec.schema.as_ref(), &mut fail);
    let immutable = compile_immutable(&spec, &mut fail);
    let (schema_rules, policy_rules) = compile_cel(&spec, &mut fail);
    let metadata_defaults = MetadataDefaults {
        labels: spec.defaults.labels,
        annotations: spec.defaults.annotations,
    };
    for (field, message) in metadata_defaults.problems() {
        fail(
            &format!("/spec/defaults/{field}"),
            format!("spec.defaults.{field}: {message}"),
        );
    }
    let conversion = spec.conversion.as_ref().and_then(|c| {
        conversion::compile(
            c,
            &spec.match_.group,
            &spec.match_.kind,
            spec.schema.as_ref(),
            &spec.match_.versions,
            &mut fail,
        )
    });
    let rollout = spec
        .rollout
        .as_ref()
        .and_then(|r| rollout::compile(r, spec.schema.as_ref(), &mut fail));
    if failed > 0 {
        return None;
    }
    let defaulter = spec
        .schema
        .as_ref()
        .map(Defaulter::from_schema)
        .unwrap_or_default();
    Some(CompiledPolicy {
        name,
        origin: Origin {
            file: file.to_path_buf(),
            line: doc.start_line(),
        },
        matcher: Matcher::from_spec(spec.match_, selector),
        enforcement: spec.enforcement,
        severity: spec.severity,
        schema: validator,
        defaulter,
        metadata_defaults,
        immutable,
        schema_rules,
        policy_rules,
        validation_specs: spec.validations,
        condition_specs: spec.match_conditions,
        conversion,
        rollout,
    })
}

/// The `openAPIV3Schema` of version `from.version` of the CRD manifest `from.crd` (relative to
/// the policy file `policy_file`).
fn schema_from_crd(policy_file: &Path, from: &SchemaFrom) -> Result<Value, String> {
    let path = policy_file
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(&from.crd);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let docs = yaml::parse_documents(&text)
        .map_err(|e| format!("{}:{}: invalid YAML: {}", path.display(), e.line, e.message))?;
    let crd = docs
        .iter()
        .map(|doc| &doc.value)
        .find(|doc| doc.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition"))
        .ok_or_else(|| format!("{} holds no CustomResourceDefinition", path.display()))?;
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let version = versions
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(from.version.as_str()))
        .ok_or_else(|| {
            let names: Vec<&str> = versions
                .iter()
                .filter_map(|v| v.get("name").and_then(Value::as_str))
                .collect();
            format!(
                "{} has no version {:?} (it has {})",
                path.display(),
                from.version,
                names.join(", ")
            )
        })?;
    version
        .pointer("/schema/openAPIV3Schema")
        .cloned()
        .ok_or_else(|| {
            format!(
                "version {:?} of {} has no schema.openAPIV3Schema",
                from.version,
                path.display()
            )
        })
}

/// The document as a typed policy, or `None` after reporting why it is not one.
fn parse_document(
    doc: &SourceDocument,
    report: &mut dyn FnMut(&str, String),
) -> Option<PolicyDocument> {
    let api_version = doc.value.get("apiVersion").and_then(Value::as_str);
    let kind = doc.value.get("kind").and_then(Value::as_str);
    if api_version != Some(POLICY_API_VERSION) || kind != Some(POLICY_KIND) {
        report(
            "",
            format!(
                "expected apiVersion {POLICY_API_VERSION:?} and kind {POLICY_KIND:?}, found {:?} / {:?}",
                api_version.unwrap_or("<missing>"),
                kind.unwrap_or("<missing>")
            ),
        );
        return None;
    }
    match serde_path_to_error::deserialize(&doc.value) {
        Ok(parsed) => Some(parsed),
        Err(e) => {
            let pointer = path_to_pointer(e.path());
            let field = e.path().to_string();
            report(&pointer, format!("{field}: {}", e.inner()));
            None
        }
    }
}

fn compile_selector(m: &MatchSpec, fail: &mut dyn FnMut(&str, String)) -> Option<LabelSelector> {
    match m
        .object_selector
        .clone()
        .map(LabelSelector::new)
        .transpose()
    {
        Ok(selector) => selector,
        Err(msg) => {
            fail(
                "/spec/match/objectSelector",
                format!("spec.match.objectSelector: {msg}"),
            );
            None
        }
    }
}

fn compile_schema(
    schema: Option<&Value>,
    fail: &mut dyn FnMut(&str, String),
) -> Option<schema::CompiledSchema> {
    match schema::compile_for_instances(schema?) {
        Ok(validator) => Some(validator),
        Err(e) => {
            let dotted: String = keys_from_pointer(&e.pointer)
                .iter()
                .map(|key| format!(".{key}"))
                .collect();
            fail(
                &format!("/spec/schema{}", e.pointer),
                format!("spec.schema{dotted}: {}", e.message),
            );
            None
        }
    }
}

/// CEL in the schema (`x-kubernetes-validations`) and at policy level, each expression that
/// does not compile reported at its own line.
fn compile_cel(
    spec: &PolicySpec,
    fail: &mut dyn FnMut(&str, String),
) -> (Option<SchemaRules>, Option<PolicyRules>) {
    let schema_rules = match spec.schema.as_ref().map(SchemaRules::compile) {
        Some(Ok(rules)) => rules,
        Some(Err(errors)) => {
            for (pointer, message) in errors {
                let dotted: String = keys_from_pointer(&pointer)
                    .iter()
                    .map(|key| format!(".{key}"))
                    .collect();
                fail(
                    &format!("/spec/schema{pointer}"),
                    format!("spec.schema{dotted}: {message}"),
                );
            }
            None
        }
        None => None,
    };
    let policy_rules = match PolicyRules::compile(&spec.match_conditions, &spec.validations) {
        Ok(rules) => rules,
        Err(errors) => {
            for (pointer, message) in errors {
                let field = pointer.trim_start_matches("/spec/").replace('/', ".");
                fail(&pointer, format!("spec.{field}: {message}"));
            }
            None
        }
    };
    (schema_rules, policy_rules)
}

/// Each immutable path must parse and, when there is a schema, be declared by it.
fn compile_immutable(spec: &PolicySpec, fail: &mut dyn FnMut(&str, String)) -> Vec<FieldPath> {
    let mut immutable = Vec::new();
    for (idx, text) in spec.immutable.iter().enumerate() {
        let pointer = format!("/spec/immutable/{idx}");
        match FieldPath::parse(text) {
            Ok(path) => {
                if let Some(s) = &spec.schema
                    && !schema::declares(s, &path)
                {
                    fail(
                        &pointer,
                        format!("spec.immutable[{idx}]: {path} is not declared in spec.schema"),
                    );
                }
                immutable.push(path);
            }
            Err(e) => fail(&pointer, format!("spec.immutable[{idx}]: {e}")),
        }
    }
    immutable
}

fn check_match(m: &MatchSpec, fail: &mut dyn FnMut(&str, String)) {
    for (field, value) in [("kind", &m.kind), ("resource", &m.resource)] {
        if value.is_empty() {
            fail(
                &format!("/spec/match/{field}"),
                format!("spec.match.{field} must not be empty"),
            );
        }
    }
    if m.resource
        .chars()
        .any(|c| c.is_ascii_uppercase() || c == '/')
    {
        fail(
            "/spec/match/resource",
            "spec.match.resource must be the lowercase plural resource name (e.g. \"paymentgateways\")".into(),
        );
    }
    if m.versions.is_empty() || m.versions.iter().any(String::is_empty) {
        fail(
            "/spec/match/versions",
            "spec.match.versions must list at least one version".into(),
        );
    }
    if m.operations.is_empty() {
        fail(
            "/spec/match/operations",
            "spec.match.operations must not be empty".into(),
        );
    }
}

fn path_to_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(format!("/{index}")),
            Segment::Map { key } => Some(format!("/{}", escape_pointer(key))),
            Segment::Enum { variant } => Some(format!("/{}", escape_pointer(variant))),
            Segment::Unknown => None,
        })
        .collect()
}

/// Names must be unique across files: they key metrics, messages and manifests. A kind's
/// versions and its rollout can each be described once, so only one policy per kind may carry
/// conversion rules, and only one a rollout section.
fn report_duplicate_names(policies: &[CompiledPolicy], errors: &mut Vec<PolicyError>) {
    type Declares = fn(&CompiledPolicy) -> bool;
    let sections: [(&str, Declares); 2] = [
        ("conversion rules for {} are", |p| p.conversion.is_some()),
        ("a rollout section for {} is", |p| p.rollout.is_some()),
    ];
    for (what, declares) in sections {
        let mut first_by_kind: HashMap<(&str, &str), &CompiledPolicy> = HashMap::new();
        for policy in policies.iter().filter(|p| declares(p)) {
            let key = (policy.matcher.group.as_str(), policy.matcher.kind.as_str());
            if let Some(first) = first_by_kind.insert(key, policy) {
                errors.push(PolicyError {
                    file: policy.origin.file.clone(),
                    line: policy.origin.line,
                    message: format!(
                        "policy {:?}: {} already declared by policy {:?} at {}:{}",
                        policy.name,
                        what.replace("{}", &format!("{}/{}", key.0, key.1)),
                        first.name,
                        first.origin.file.display(),
                        first.origin.line
                    ),
                });
            }
        }
    }
    let mut seen: HashMap<&str, &Origin> = HashMap::new();
    for policy in policies {
        if let Some(first) = seen.insert(&policy.name, &policy.origin) {
            errors.push(PolicyError {
                file: policy.origin.file.clone(),
                line: policy.origin.line,
                message: format!(
                    "policy name {:?} is already used at {}:{}",
                    policy.name,
                    first.file.display(),
                    first.line
                ),
            });
        }
    }
}
