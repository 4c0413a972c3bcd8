//! `tollgate audit --interval`: the audit kept running in the cluster. A full pass every
//! interval, and one as soon as the policy files change (the same directory fingerprint `serve`
//! reloads on) or this replica becomes the leader. With a lease, only the leader audits and
//! writes reports, so replicas never race on them. `/metrics` counts objects judged, the last
//! pass's results by policy and result, and pass durations; `/healthz` answers while it runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use kube::Client;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tollgate_engine::policy::{self, dir_fingerprint};
use tollgate_reconciler::leader::{self, Leadership, LeaseConfig, LeaseState};

use super::{AuditError, AuditOptions, Outcome, Summary};

/// How the audit keeps running.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub interval: Duration,
    /// `None`: no leader election (one replica only).
    pub lease: Option<LeaseConfig>,
    pub metrics_addr: Option<SocketAddr>,
}

/// How often the policy directory and the leadership are looked at between passes.
const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    policy: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PassLabels {
    outcome: &'static str,
}

struct Metrics {
    registry: Registry,
    judged: Counter,
    results: Family<ResultLabels, Gauge>,
    passes: Family<PassLabels, Counter>,
    duration: Histogram,
    leader: Gauge,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let judged = Counter::default();
        let results = Family::<ResultLabels, Gauge>::default();
        let passes = Family::<PassLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.1, 2.0, 14));
        let leader = Gauge::default();
        registry.register(
            "tollgate_audit_objects_judged",
            "Objects judged by the audit",
            judged.clone(),
        );
        registry.register(
            "tollgate_audit_results",
            "Failing and warning (object, policy) pairs found by the last pass",
            results.clone(),
        );
        registry.register(
            "tollgate_audit_passes",
            "Audit passes, by how they ended",
            passes.clone(),
        );
        registry.register(
            "tollgate_audit_pass_duration_seconds",
            "How long one audit pass took",
            duration.clone(),
        );
        registry.register(
            "tollgate_audit_leader",
            "1 while this replica audits (holds the lease)",
            leader.clone(),
        );
        Self {
            registry,
            judged,
            results,
            passes,
            duration,
            leader,
        }
    }

    fn observe(&self, summary: &Summary, took: Duration) {
        self.judged.inc_by(summary.judged as u64);
        self.results.clear();
        for ((policy, outcome), count) in &summary.by_policy {
            let result = match outcome {
                Outcome::Fail => "fail",
                Outcome::Warn => "warn",
            };
            self.results
                .get_or_create(&ResultLabels {
                    policy: policy.clone(),
                    result,
                })
                .set(*count as i64);
        }
        self.duration.observe(took.as_secs_f64());
        self.passes
            .get_or_create(&PassLabels { outcome: "ok" })
            .inc();
    }

    fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Audits until `shutdown` completes.
pub async fn run(
    options: AuditOptions,
    schedule: Schedule,
    client: Client,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AuditError> {
    let metrics = Arc::new(Metrics::new());
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(addr) = schedule.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| AuditError::Bind { addr, source })?;
        tracing::info!(%addr, "audit metrics listening (HTTP)");
        let app = Router::new()
            .route("/metrics", get(metrics_text))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(Arc::clone(&metrics));
        tasks.spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "audit metrics server failed");
            }
        });
    }
    let leadership = match schedule.lease.clone() {
        Some(lease) => {
            let leadership = Leadership::new();
            let (c, l, m) = (
                client.clone(),
                Arc::clone(&leadership),
                Arc::clone(&metrics),
            );
            tasks.spawn(leader::run(
                c,
                lease,
                l,
                move |state| {
                    m.leader.set(i64::from(*state == LeaseState::Leading));
                },
                std::future::pending(),
            ));
            leadership
        }
        None => {
            metrics.leader.set(1);
            Leadership::always()
        }
    };
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_pass: Option<(Instant, policy::DirFingerprint, u64)> = None;
    loop {
        if leadership.is_leader() {
            let seen = dir_fingerprint(&options.policies);
            let epoch = leadership.epoch();
            let due = match &last_pass {
                None => true,
                Some((at, fingerprint, term)) => {
                    at.elapsed() >= schedule.interval || *fingerprint != seen || *term != epoch
                }
            };
            if due {
                let reason = match &last_pass {
                    None => "first",
                    Some((_, fingerprint, _)) if *fingerprint != seen => "policies changed",
                    Some((_, _, term)) if *term != epoch => "became leader",
                    Some(_) => "interval",
                };
                audit_once(&options, &client, &metrics, reason).await;
                last_pass = Some((Instant::now(), seen, epoch));
            }
        }
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(POLL) => {}
        }
    }
    tasks.abort_all();
    Ok(())
}

/// One pass, its outcome logged and counted; a failed pass is retried at the next interval.
async fn audit_once(options: &AuditOptions, client: &Client, metrics: &Metrics, reason: &str) {
    let started = Instant::now();
    let outcome = match policy::load_dir(&options.policies) {
        Ok(store) => super::pass(&store, options, client, &mut std::io::sink()).await,
        Err(e) => Err(AuditError::Policies(e)),
    };
    match outcome {
        Ok(summary) => {
            let took = started.elapsed();
            metrics.observe(&summary, took);
            tracing::info!(
                reason,
                judged = summary.judged,
                fail = summary.failed,
                warn = summary.warned,
                pass = summary.passed,
                reports_written = summary.reports_written,
                reports_deleted = summary.reports_deleted,
                seconds = took.as_secs_f64(),
                "audit pass"
            );
        }
        Err(e) => {
            metrics
                .passes
                .get_or_create(&PassLabels { outcome: "error" })
                .inc();
            tracing::error!(reason, error = %e, "audit pass failed");
        }
    }
}

async fn metrics_text(State(metrics): State<Arc<Metrics>>) -> Response {
    tollgate_reconciler::metrics::openmetrics_response(metrics.encode())
}
