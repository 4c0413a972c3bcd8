//! OpenReports (`openreports.io/v1alpha1`): one `Report` per namespace and one `ClusterReport` for
//! cluster-scoped kinds, named `tollgate-audit`, `source: tollgate`. The summary counts every
//! result of the pass exactly; `results` holds the failing and warning ones — one per violated
//! field — up to `--max-results`, so a report stays far below etcd's object limit whatever the
//! cluster's size. Each report is written by one server-side apply per pass; the reports of
//! namespaces with nothing left to judge are deleted.

use std::collections::{BTreeMap, BTreeSet};

use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::{Finding, Outcome};

pub const REPORT_NAME: &str = "tollgate-audit";
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "tollgate");
const FIELD_MANAGER: &str = "tollgate-audit";

#[derive(Debug, Default)]
struct ScopeReport {
    pass: usize,
    fail: usize,
    warn: usize,
    results: Vec<Value>,
}

/// The reports of one pass, filled as objects are judged.
#[derive(Debug)]
pub struct Reports {
    max_results: usize,
    /// `None`: the cluster-scoped report.
    scopes: BTreeMap<Option<String>, ScopeReport>,
    timestamp: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(
        "the OpenReports CRDs are not installed (kubectl apply -f deploy/crd-openreports.yaml)"
    )]
    NotInstalled,
    #[error("cannot write the report {what}: {message}")]
    Write { what: String, message: String },
}

impl Reports {
    pub fn new(max_results: usize) -> Self {
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            max_results,
            scopes: BTreeMap::new(),
            timestamp: json!({"seconds": seconds, "nanos": 0}),
        }
    }

    /// Counts `passed` (object, policy) pairs that passed in `namespace`.
    pub fn passed(&mut self, namespace: Option<&str>, passed: usize) {
        self.scope(namespace).pass += passed;
    }

    /// Counts a finding's violations, keeping them as results while there is room.
    pub fn finding(&mut self, finding: &Finding) {
        let max_results = self.max_results;
        let timestamp = self.timestamp.clone();
        let scope = self.scope(finding.namespace.as_deref());
        let result = match finding.outcome {
            Outcome::Fail => "fail",
            Outcome::Warn => "warn",
        };
        for violation in &finding.violations {
            match finding.outcome {
                Outcome::Fail => scope.fail += 1,
                Outcome::Warn => scope.warn += 1,
            }
            if scope.results.len() >= max_results {
                continue;
            }
            let mut resource = json!({
                "apiVersion": finding.api_version,
                "kind": finding.kind,
                "name": finding.name,
            });
            if let Some(ns) = &finding.namespace {
                resource["namespace"] = json!(ns);
            }
            if let Some(uid) = &finding.uid {
                resource["uid"] = json!(uid);
            }
            let mut entry = json!({
                "source": "tollgate",
                "policy": finding.policy,
                "rule": violation.path.to_string(),
                "result": result,
                "scored": true,
                "message": violation.message,
                "timestamp": timestamp,
                "resources": [resource],
            });
            if let Some(severity) = finding.severity {
                entry["severity"] = json!(severity);
            }
            scope.results.push(entry);
        }
    }

    fn scope(&mut self, namespace: Option<&str>) -> &mut ScopeReport {
        self.scopes
            .entry(namespace.map(str::to_string))
            .or_default()
    }

    /// Applies every report of the pass and deletes tollgate's reports of namespaces (within
    /// `only_namespace`, when given) that had nothing to judge. Returns how many were written
    /// and deleted.
    pub async fn write(
        self,
        client: &Client,
        only_namespace: Option<&str>,
    ) -> Result<(usize, usize), ReportError> {
        let written = self.scopes.len();
        let keep: BTreeSet<Option<String>> = self.scopes.keys().cloned().collect();
        for (namespace, report) in self.scopes {
            let api = api(client, namespace.as_deref());
            let body = report_body(namespace.as_deref(), report, self.max_results);
            api.patch(
                REPORT_NAME,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .map_err(|e| write_error(namespace.as_deref(), e))?;
        }
        let mut deleted = 0;
        let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
        let namespaced = match only_namespace {
            Some(ns) => api(client, Some(ns)),
            None => Api::all_with(client.clone(), &resource(false)),
        };
        let stale = namespaced
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| write_error(only_namespace, e))?;
        for report in stale.items {
            let namespace = report.metadata.namespace.clone();
            if keep.contains(&namespace) {
                continue;
            }
            delete(client, namespace.as_deref()).await?;
            deleted += 1;
        }
        if only_namespace.is_none() && !keep.contains(&None) {
            let cluster = api(client, None);
            if cluster.get_opt(REPORT_NAME).await.ok().flatten().is_some() {
                delete(client, None).await?;
                deleted += 1;
            }
        }
        Ok((written, deleted))
    }
}

fn report_body(namespace: Option<&str>, report: ScopeReport, max_results: usize) -> Value {
    let mut metadata = json!({
        "name": REPORT_NAME,
        "labels": {MANAGED_BY.0: MANAGED_BY.1},
    });
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    json!({
        "apiVersion": "openreports.io/v1alpha1",
        "kind": if namespace.is_some() { "Report" } else { "ClusterReport" },
        "metadata": metadata,
        "source": "tollgate",
        "configuration": {"limits": {"maxResults": max_results}},
        "summary": {
            "pass": report.pass,
            "fail": report.fail,
            "warn": report.warn,
            "error": 0,
            "skip": 0,
        },
        "results": report.results,
    })
}

fn resource(cluster: bool) -> ApiResource {
    let (kind, plural) = if cluster {
        ("ClusterReport", "clusterreports")
    } else {
        ("Report", "reports")
    };
    ApiResource {
        group: "openreports.io".into(),
        version: "v1alpha1".into(),
        api_version: "openreports.io/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn api(client: &Client, namespace: Option<&str>) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource(false)),
        None => Api::all_with(client.clone(), &resource(true)),
    }
}

async fn delete(client: &Client, namespace: Option<&str>) -> Result<(), ReportError> {
    match api(client, namespace)
        .delete(REPORT_NAME, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(write_error(namespace, e)),
    }
}

fn write_error(namespace: Option<&str>, error: kube::Error) -> ReportError {
    let message = match error {
        kube::Error::Api(status) => status.message,
        other => other.to_string(),
    };
    ReportError::Write {
        what: scope_name(namespace),
        message,
    }
}

/// Whether the OpenReports CRDs are served: asked before a pass, so a missing install fails at
/// once, not after the whole cluster was judged.
pub async fn check_installed(client: &Client) -> Result<(), ReportError> {
    for cluster in [false, true] {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource(cluster));
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Err(ReportError::NotInstalled);
            }
            Err(e) => return Err(write_error(None, e)),
        }
    }
    Ok(())
}

fn scope_name(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{REPORT_NAME}"),
        None => format!("ClusterReport {REPORT_NAME}"),
    }
}
