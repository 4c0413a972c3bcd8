//! `tollgate audit`: judges what is already stored. Every object of every kind the policies
//! match is listed from the apiserver, page by page, in each version a policy judges, and judged
//! as the webhook would judge its CREATE — the same engine, defaults in place, `warn` policies
//! giving warnings. Each object that fails or warns is written out as soon as its page is judged,
//! so memory holds one page whatever the size of the cluster.

mod continuous;
mod listing;
mod output;
mod reports;

use std::io::Write;
use std::path::PathBuf;

use kube::Client;
use serde_json::Value;
use tollgate_engine::cel::RequestInfo;
use tollgate_engine::evaluate::judgements;
use tollgate_engine::instance::Instance;
use tollgate_engine::policy::{self, Enforcement, OperationName, Store, Target};
use tollgate_engine::validate::Violation;

pub use continuous::{Schedule, run as run_continuously};
pub use listing::ListedKind;
pub use output::Format;
pub use reports::{REPORT_NAME, ReportError};

/// What to audit, and how to write it.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    pub policies: PathBuf,
    /// Only this namespace (cluster-scoped kinds are then left out).
    pub namespace: Option<String>,
    pub format: Format,
    /// Objects per list request (`limit`).
    pub page_size: u32,
    /// Write OpenReports with at most this many results each; `None` writes none.
    pub reports: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Policies(#[from] tollgate_engine::LoadError),
    #[error("no policy in {} judges CREATE of any kind; nothing to audit", .0.display())]
    NothingToAudit(PathBuf),
    #[error("cannot reach the cluster: {0}")]
    Unreachable(String),
    #[error("cannot list {kind}: {message}")]
    List { kind: String, message: String },
    #[error("cannot write the results: {0}")]
    Write(#[from] std::io::Error),
    #[error(transparent)]
    Reports(#[from] ReportError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// How one object fares under one policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Fail,
    Warn,
}

/// One object that fails or warns under one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub namespace: Option<String>,
    pub name: String,
    pub uid: Option<String>,
    pub kind: String,
    pub api_version: String,
    pub policy: String,
    /// The policy's `severity`, when it declares one.
    pub severity: Option<&'static str>,
    pub outcome: Outcome,
    pub violations: Vec<Violation>,
}

/// The counts of one audit pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Objects judged (an object listed in two versions counts twice).
    pub judged: usize,
    /// (object, policy) pairs that passed, failed and warned.
    pub passed: usize,
    pub failed: usize,
    pub warned: usize,
    /// Kinds whose resource the apiserver does not serve, skipped.
    pub not_served: Vec<String>,
    /// Failing and warning (object, policy) pairs by policy.
    pub by_policy: std::collections::BTreeMap<(String, Outcome), usize>,
    /// Reports written and deleted (with `--write-reports`).
    pub reports_written: usize,
    pub reports_deleted: usize,
}

/// Loads the policies and audits the cluster `client` reaches once, writing each finding to
/// `out`.
pub async fn run(
    options: &AuditOptions,
    client: Client,
    out: &mut impl Write,
) -> Result<Summary, AuditError> {
    let store = policy::load_dir(&options.policies)?;
    pass(&store, options, &client, out).await
}

/// One audit pass with the policies of `store`.
pub async fn pass(
    store: &Store,
    options: &AuditOptions,
    client: &Client,
    out: &mut impl Write,
) -> Result<Summary, AuditError> {
    let kinds = listing::kinds(store, options.namespace.is_some());
    if kinds.is_empty() {
        return Err(AuditError::NothingToAudit(options.policies.clone()));
    }
    if options.reports.is_some() {
        reports::check_installed(client).await?;
    }
    let mut reports = options.reports.map(reports::Reports::new);
    let mut summary = Summary::default();
    let mut writer = output::Writer::new(options.format, out);
    for kind in &kinds {
        let mut pages = listing::Pages::new(client.clone(), kind, options.namespace.as_deref())
            .with_page_size(options.page_size);
        loop {
            let page = match pages.next().await {
                Ok(Some(page)) => page,
                Ok(None) => break,
                Err(listing::ListError::NotServed) => {
                    summary.not_served.push(kind.label());
                    break;
                }
                Err(listing::ListError::Unreachable(message)) => {
                    return Err(AuditError::Unreachable(message));
                }
                Err(listing::ListError::Refused(message)) => {
                    return Err(AuditError::List {
                        kind: kind.label(),
                        message,
                    });
                }
            };
            for object in &page {
                let judged = judge(store, kind, object);
                summary.count(&judged);
                if let Some(reports) = &mut reports {
                    reports.passed(judged.namespace.as_deref(), judged.passed);
                }
                for finding in &judged.findings {
                    if let Some(reports) = &mut reports {
                        reports.finding(finding);
                    }
                    writer.write(finding)?;
                }
            }
        }
    }
    writer.finish()?;
    if let Some(reports) = reports {
        let (written, deleted) = reports.write(client, options.namespace.as_deref()).await?;
        summary.reports_written = written;
        summary.reports_deleted = deleted;
    }
    Ok(summary)
}

impl Summary {
    fn count(&mut self, judged: &Judged) {
        self.judged += 1;
        self.passed += judged.passed;
        for finding in &judged.findings {
            match finding.outcome {
                Outcome::Fail => self.failed += 1,
                Outcome::Warn => self.warned += 1,
            }
            *self
                .by_policy
                .entry((finding.policy.clone(), finding.outcome))
                .or_default() += 1;
        }
    }
}

/// What the policies make of one object as its CREATE.
#[derive(Debug, Default)]
pub struct Judged {
    pub namespace: Option<String>,
    pub findings: Vec<Finding>,
    /// Policies that found nothing wrong.
    pub passed: usize,
}

/// Every policy's finding on `object` as its CREATE.
pub fn judge(store: &Store, kind: &ListedKind, object: &Value) -> Judged {
    let metadata = object.get("metadata");
    let text = |field: &str| metadata.and_then(|m| m.get(field)).and_then(Value::as_str);
    let namespace = text("namespace");
    let target = Target {
        group: &kind.group,
        version: &kind.version,
        kind: &kind.kind,
        operation: OperationName::Create,
        namespace,
        object: Some(Instance::Value(object)),
        old_object: None,
        request: RequestInfo {
            name: text("name").unwrap_or_default(),
            ..RequestInfo::default()
        },
        restore: false,
    };
    let mut judged = Judged {
        namespace: namespace.map(str::to_string),
        ..Judged::default()
    };
    for (policy, judgement) in judgements(store, &target) {
        if judgement.denials.is_empty() {
            judged.passed += 1;
            continue;
        }
        judged.findings.push(Finding {
            namespace: judged.namespace.clone(),
            name: text("name").unwrap_or_default().to_string(),
            uid: text("uid").map(str::to_string),
            kind: kind.kind.clone(),
            api_version: kind.api_version(),
            policy: policy.name.clone(),
            severity: policy.severity.map(|s| s.as_str()),
            outcome: match policy.enforcement {
                Enforcement::Enforce => Outcome::Fail,
                Enforcement::Warn => Outcome::Warn,
            },
            violations: judgement.denials,
        });
    }
    judged
}
