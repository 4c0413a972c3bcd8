//! Policy test suites (`kind: PolicyTest`): cases that state what the webhooks must answer for an
//! object, run offline against the same evaluation the server uses. A case fails loudly: every
//! expectation that does not hold is reported, and nothing unusable is ever counted as a pass.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::cel::RequestInfo;
use crate::evaluate;
use crate::path::escape_pointer;
use crate::policy::yaml::{self, SourceDocument};
use crate::policy::{OperationName, Store, Target};

pub const SUITE_API_VERSION: &str = "tollgate.dev/v1alpha1";
pub const SUITE_KIND: &str = "PolicyTest";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SuiteDocument {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: SuiteMetadata,
    spec: SuiteSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuiteMetadata {
    name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SuiteSpec {
    /// Directory of policy files, relative to the test file.
    policies: String,
    cases: Vec<CaseSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CaseSpec {
    name: String,
    #[serde(default)]
    operation: Operation,
    #[serde(default)]
    object: Option<Value>,
    #[serde(default)]
    object_file: Option<String>,
    #[serde(default)]
    old_object: Option<Value>,
    #[serde(default)]
    old_object_file: Option<String>,
    #[serde(default)]
    user_info: Option<UserInfo>,
    #[serde(default)]
    convert: Option<ConvertSpec>,
    expect: Expect,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operation {
    #[default]
    Create,
    Update,
    Delete,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserInfo {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub groups: Vec<Cow<'static, str>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConvertSpec {
    #[serde(default)]
    object: Option<Value>,
    #[serde(default)]
    object_file: Option<String>,
    #[serde(rename = "desiredAPIVersion")]
    desired_api_version: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Expect {
    #[serde(default)]
    allowed: Option<bool>,
    #[serde(default)]
    violations: Option<Vec<String>>,
    #[serde(default)]
    warnings: Option<Vec<String>>,
    #[serde(default)]
    mutated: Option<Value>,
    #[serde(default)]
    converted: Option<Value>,
    /// For a conversion expected to fail: a substring of its error.
    #[serde(default)]
    error: Option<String>,
}

/// A problem that makes a suite unusable (exit code 2), with its file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {message}", file.display())]
pub struct SuiteError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

/// One case, ready to run.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub line: usize,
    /// Who makes the request (for rules that look at `request.userInfo`).
    pub user_info: UserInfo,
    kind: CaseKind,
    expect: Expect,
}

#[derive(Debug, Clone)]
enum CaseKind {
    Admission {
        operation: Operation,
        object: Value,
        old_object: Option<Value>,
    },
    Convert {
        object: Value,
        desired_api_version: String,
    },
}

impl Case {
    /// An admission case's request: its operation, object and old object (`None` for a
    /// conversion case), for tests that replay the suite elsewhere.
    pub fn admission(&self) -> Option<(Operation, &Value, Option<&Value>)> {
        match &self.kind {
            CaseKind::Admission {
                operation,
                object,
                old_object,
            } => Some((*operation, object, old_object.as_ref())),
            CaseKind::Convert { .. } => None,
        }
    }
}

/// A loaded suite: its policies compiled, its cases read.
#[derive(Debug)]
pub struct Suite {
    pub file: PathBuf,
    pub name: String,
    pub store: Store,
    pub cases: Vec<Case>,
}

/// The outcome of one case: empty `failures` means it passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    pub name: String,
    pub line: usize,
    pub failures: Vec<String>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Every `.yaml`/`.yml` file under `roots` (recursively, hidden entries skipped) that holds a
/// `PolicyTest`. A root that is a file is taken as it is.
pub fn discover(roots: &[PathBuf]) -> Result<Vec<PathBuf>, SuiteError> {
    let mut found = Vec::new();
    for root in roots {
        if root.is_file() {
            found.push(root.clone());
            continue;
        }
        if !root.is_dir() {
            return Err(SuiteError {
                file: root.clone(),
                line: 0,
                message: "no such file or directory".into(),
            });
        }
        walk(root, &mut found).map_err(|e| SuiteError {
            file: root.clone(),
            line: 0,
            message: format!("cannot read directory: {e}"),
        })?;
    }
    found.sort();
    found.dedup();
    Ok(found)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, found)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml")
            && std::fs::read_to_string(&path).is_ok_and(|t| t.contains(SUITE_KIND))
        {
            found.push(path);
        }
    }
    Ok(())
}

/// Reads one test file (one or more `PolicyTest` documents) and compiles the policies it names.
pub fn load(file: &Path) -> Result<Vec<Suite>, SuiteError> {
    let fail = |line: usize, message: String| SuiteError {
        file: file.to_path_buf(),
        line,
        message,
    };
    let text = std::fs::read_to_string(file).map_err(|e| fail(0, format!("cannot read: {e}")))?;
    let docs = yaml::parse_documents(&text)
        .map_err(|e| fail(e.line, format!("invalid YAML: {}", e.message)))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let mut suites = Vec::new();
    for doc in docs {
        let kind = doc.value.get("kind").and_then(Value::as_str);
        let api_version = doc.value.get("apiVersion").and_then(Value::as_str);
        if kind != Some(SUITE_KIND) || api_version != Some(SUITE_API_VERSION) {
            return Err(fail(
                doc.start_line(),
                format!("expected apiVersion {SUITE_API_VERSION:?} and kind {SUITE_KIND:?}"),
            ));
        }
        let parsed: SuiteDocument = serde_path_to_error::deserialize(&doc.value).map_err(|e| {
            let pointer: String = e
                .path()
                .iter()
                .filter_map(|s| match s {
                    serde_path_to_error::Segment::Seq { index } => Some(format!("/{index}")),
                    serde_path_to_error::Segment::Map { key } => {
                        Some(format!("/{}", escape_pointer(key)))
                    }
                    _ => None,
                })
                .collect();
            fail(
                doc.line_of(&pointer),
                format!("{}: {}", e.path(), e.inner()),
            )
        })?;
        if parsed.spec.cases.is_empty() {
            // A suite without cases would pass whatever the policies do.
            return Err(fail(
                doc.line_of("/spec/cases"),
                "spec.cases is empty".into(),
            ));
        }
        let policies = base.join(&parsed.spec.policies);
        let store = crate::load_dir(&policies).map_err(|e| {
            fail(
                doc.line_of("/spec/policies"),
                format!("spec.policies {}: {e}", policies.display()),
            )
        })?;
        let cases = parsed
            .spec
            .cases
            .into_iter()
            .enumerate()
            .map(|(idx, case)| read_case(case, idx, &doc, base, &fail))
            .collect::<Result<_, _>>()?;
        suites.push(Suite {
            file: file.to_path_buf(),
            name: parsed.metadata.name,
            store,
            cases,
        });
    }
    Ok(suites)
}

fn read_case(
    case: CaseSpec,
    idx: usize,
    doc: &SourceDocument,
    base: &Path,
    fail: &dyn Fn(usize, String) -> SuiteError,
) -> Result<Case, SuiteError> {
    let at = |field: &str| doc.line_of(&format!("/spec/cases/{idx}{field}"));
    let line = at("");
    let inline_or_file =
        |inline: Option<Value>, file: Option<String>, field: &str| match (inline, file) {
            (Some(_), Some(_)) => Err(fail(
                at(&format!("/{field}")),
                format!(
                    "case {:?}: give {field} or {field}File, not both",
                    case.name
                ),
            )),
            (Some(v), None) => Ok(Some(v)),
            (None, Some(path)) => read_object(&base.join(&path))
                .map(Some)
                .map_err(|message| fail(at(&format!("/{field}File")), message)),
            (None, None) => Ok(None),
        };
    let kind = if let Some(convert) = case.convert.clone() {
        let object = inline_or_file(convert.object, convert.object_file, "convert/object")?
            .ok_or_else(|| {
                fail(
                    at("/convert"),
                    format!("case {:?}: convert needs an object", case.name),
                )
            })?;
        CaseKind::Convert {
            object,
            desired_api_version: convert.desired_api_version,
        }
    } else {
        let object = inline_or_file(case.object.clone(), case.object_file.clone(), "object")?
            .ok_or_else(|| {
                fail(
                    line,
                    format!("case {:?}: needs object, objectFile or convert", case.name),
                )
            })?;
        let old_object = inline_or_file(
            case.old_object.clone(),
            case.old_object_file.clone(),
            "oldObject",
        )?;
        if case.operation == Operation::Update && old_object.is_none() {
            return Err(fail(
                line,
                format!(
                    "case {:?}: UPDATE needs oldObject or oldObjectFile",
                    case.name
                ),
            ));
        }
        CaseKind::Admission {
            operation: case.operation,
            object,
            old_object,
        }
    };
    let e = &case.expect;
    let nothing_expected = e.allowed.is_none()
        && e.violations.is_none()
        && e.warnings.is_none()
        && e.mutated.is_none()
        && e.converted.is_none()
        && e.error.is_none();
    if nothing_expected {
        // A case that checks nothing would pass whatever happens: refuse it.
        return Err(fail(
            at("/expect"),
            format!("case {:?}: expect states nothing to check", case.name),
        ));
    }
    Ok(Case {
        name: case.name,
        line,
        user_info: case.user_info.unwrap_or_default(),
        kind,
        expect: case.expect,
    })
}

fn read_object(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let docs = yaml::parse_documents(&text)
        .map_err(|e| format!("{}:{}: {}", path.display(), e.line, e.message))?;
    match docs.as_slice() {
        [one] => Ok(one.value.clone()),
        _ => Err(format!("{}: expected exactly one document", path.display())),
    }
}

impl Suite {
    pub fn run(&self) -> Vec<CaseResult> {
        self.cases
            .iter()
            .map(|case| CaseResult {
                name: case.name.clone(),
                line: case.line,
                failures: run_case(&self.store, case),
            })
            .collect()
    }
}

fn run_case(store: &Store, case: &Case) -> Vec<String> {
    match &case.kind {
        CaseKind::Admission {
            operation,
            object,
            old_object,
        } => run_admission(
            store,
            *operation,
            object,
            old_object.as_ref(),
            &case.user_info,
            &case.expect,
        ),
        CaseKind::Convert {
            object,
            desired_api_version,
        } => run_convert(store, object, desired_api_version, &case.expect),
    }
}

fn run_admission(
    store: &Store,
    operation: Operation,
    object: &Value,
    old_object: Option<&Value>,
    user_info: &UserInfo,
    expect: &Expect,
) -> Vec<String> {
    let mut failures = Vec::new();
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let operation = match operation {
        Operation::Create => Some(OperationName::Create),
        Operation::Update => Some(OperationName::Update),
        // As the server does: DELETE carries nothing the policies judge.
        Operation::Delete => None,
    };
    let (verdict, patch) = match operation {
        Some(operation) => {
            let target = Target {
                group,
                version,
                kind,
                operation,
                namespace: object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str),
                object: Some(object.into()),
                old_object: old_object.map(Into::into),
                request: RequestInfo {
                    name: object
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                    username: &user_info.username,
                    groups: &user_info.groups,
                    dry_run: false,
                },
                restore: false,
            };
            (
                evaluate::validate(store, &target),
                evaluate::default_patch(store, &target),
            )
        }
        None => (evaluate::Verdict::default(), json_patch::Patch(Vec::new())),
    };
    if let Some(allowed) = expect.allowed
        && allowed != verdict.is_allowed()
    {
        let detail = if verdict.is_allowed() {
            "it was allowed".to_string()
        } else {
            format!("it was denied: {}", verdict.denial_message(kind, ""))
        };
        failures.push(format!("expected allowed: {allowed}, but {detail}"));
    }
    if let Some(expected) = &expect.violations {
        let found: BTreeMap<String, usize> =
            count(verdict.denials.iter().map(|v| v.path.to_string()));
        let wanted: BTreeMap<String, usize> = count(expected.iter().cloned());
        if found != wanted {
            failures.push(format!(
                "expected violations [{}], found [{}]",
                expected.join(", "),
                verdict
                    .denials
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
    }
    if let Some(expected) = &expect.warnings {
        for wanted in expected {
            if !verdict.warnings.iter().any(|w| w.contains(wanted.as_str())) {
                failures.push(format!(
                    "expected a warning containing {wanted:?}, found {:?}",
                    verdict.warnings
                ));
            }
        }
        if expected.is_empty() && !verdict.warnings.is_empty() {
            failures.push(format!(
                "expected no warnings, found {:?}",
                verdict.warnings
            ));
        }
    }
    if let Some(expected) = &expect.mutated {
        let mut mutated = object.clone();
        match json_patch::patch(&mut mutated, &patch.0) {
            Ok(()) if &mutated == expected => {}
            Ok(()) => failures.push(format!(
                "the mutated object differs: {}",
                differences(expected, &mutated).join("; ")
            )),
            Err(e) => failures.push(format!("the defaults patch does not apply: {e}")),
        }
    }
    if expect.converted.is_some() || expect.error.is_some() {
        failures.push("converted and error are expectations of convert cases".into());
    }
    failures
}

fn run_convert(store: &Store, object: &Value, desired: &str, expect: &Expect) -> Vec<String> {
    let mut failures = Vec::new();
    if expect.allowed.is_some()
        || expect.violations.is_some()
        || expect.warnings.is_some()
        || expect.mutated.is_some()
    {
        failures.push(
            "allowed, violations, warnings and mutated are expectations of admission cases".into(),
        );
    }
    match (
        evaluate::convert(store, object.clone(), desired),
        &expect.error,
    ) {
        (Ok(converted), None) => {
            if let Some(expected) = &expect.converted
                && &converted != expected
            {
                failures.push(format!(
                    "the converted object differs: {}",
                    differences(expected, &converted).join("; ")
                ));
            }
        }
        (Ok(_), Some(wanted)) => failures.push(format!(
            "expected the conversion to fail with {wanted:?}, but it succeeded"
        )),
        (Err(e), Some(wanted)) if e.to_string().contains(wanted.as_str()) => {}
        (Err(e), _) => failures.push(format!("the conversion failed: {e}")),
    }
    failures
}

fn count(items: impl Iterator<Item = String>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for item in items {
        *out.entry(item).or_insert(0) += 1;
    }
    out
}

/// Where two JSON values differ, as JSON pointers (at most a few, to keep messages readable).
fn differences(expected: &Value, found: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_into(expected, found, String::new(), &mut out);
    let total = out.len();
    out.truncate(5);
    if total > 5 {
        out.push(format!("and {} more", total - 5));
    }
    out
}

fn diff_into(expected: &Value, found: &Value, at: String, out: &mut Vec<String>) {
    match (expected, found) {
        (Value::Object(e), Value::Object(f)) => {
            for (k, v) in e {
                let here = format!("{at}/{}", escape_pointer(k));
                match f.get(k) {
                    Some(fv) => diff_into(v, fv, here, out),
                    None => out.push(format!("{here} is missing")),
                }
            }
            for k in f.keys().filter(|k| !e.contains_key(*k)) {
                out.push(format!("{at}/{} is not expected", escape_pointer(k)));
            }
        }
        _ if expected == found => {}
        _ => out.push(format!(
            "{} is {found}, expected {expected}",
            if at.is_empty() { "/" } else { &at }
        )),
    }
}
