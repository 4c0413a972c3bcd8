//! `tollgate reconcile`: loads the policies, competes for the lease, serves metrics and probes,
//! and runs one controller per managed kind, each started once its CRD is served. Every reload
//! interval it looks for changed policy files, as `serve` does, and brings the controllers in
//! step with them; a set that does not load is refused whole and the one in force stays.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kube::Client;
use serde_json::json;
use tokio::sync::watch;
use tollgate_engine::Store;
use tollgate_engine::policy::dir_fingerprint;

use crate::error::RunError;
use crate::kinds::{ManagedKind, managed_kinds};
use crate::leader::{self, Leadership, LeaseConfig, LeaseState};
use crate::metrics::{KindState, Metrics};
use crate::supervisor::{Supervisor, release_kind};

#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    pub policies_dir: PathBuf,
    /// Plain-HTTP address for `/metrics`, `/healthz` and `/readyz`; `None` serves nothing.
    pub metrics_addr: Option<SocketAddr>,
    /// `None` runs without leader election (one replica only).
    pub lease: Option<LeaseConfig>,
    pub identity: String,
    /// How often the policy directory is looked at for changes.
    pub reload_interval: Duration,
}

/// The kinds to manage, from the policy directory.
pub fn load_kinds(policies_dir: &Path) -> Result<Vec<ManagedKind>, RunError> {
    load_managed(policies_dir).map(|(_, kinds)| kinds)
}

/// The policy set and the kinds it manages; starting with none is refused (a reload may
/// remove them all, and the reconciler then idles).
fn load_managed(policies_dir: &Path) -> Result<(Store, Vec<ManagedKind>), RunError> {
    let store = tollgate_engine::load_dir(policies_dir)?;
    let kinds = managed_kinds(&store);
    if kinds.is_empty() {
        return Err(RunError::NothingToManage(policies_dir.to_path_buf()));
    }
    Ok((store, kinds))
}

pub async fn run(
    config: ReconcilerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let mut seen = dir_fingerprint(&config.policies_dir);
    let (store, kinds) = load_managed(&config.policies_dir)?;
    let client = Client::try_default().await.map_err(RunError::Client)?;
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(addr) = config.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::Bind { addr, source })?;
        tracing::info!(%addr, "reconciler metrics and probes listening (HTTP)");
        let app = probes(Arc::clone(&metrics));
        let until = stopped();
        tasks.spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(until)
                .await
            {
                tracing::error!(error = %e, "metrics server failed");
            }
        });
    }
    let leadership = match config.lease.clone() {
        Some(lease) => {
            let leadership = Leadership::new();
            let (client, l, m, until) = (
                client.clone(),
                Arc::clone(&leadership),
                Arc::clone(&metrics),
                stopped(),
            );
            tasks.spawn(leader::run(
                client,
                lease,
                l,
                move |state| {
                    m.leader.set(i64::from(*state == LeaseState::Leading));
                },
                until,
            ));
            leadership
        }
        None => {
            metrics.leader.set(1);
            Leadership::always()
        }
    };
    let mut supervisor = Supervisor::new(
        client,
        leadership,
        Arc::clone(&metrics),
        config.identity.clone(),
    );
    apply(&mut supervisor, &metrics, &store, kinds).await;
    let mut shutdown = std::pin::pin!(shutdown);
    let mut ticker = tokio::time::interval(config.reload_interval);
    ticker.tick().await;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = ticker.tick() => {}
        }
        supervisor.release_unmanaged().await;
        let now_seen = dir_fingerprint(&config.policies_dir);
        if now_seen == seen {
            continue;
        }
        seen = now_seen;
        reload(&config.policies_dir, &mut supervisor, &metrics).await;
    }
    tracing::info!("reconciler shutting down");
    supervisor.stop_all().await;
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Loads the changed directory and applies it, or keeps the set in force and says why.
async fn reload(dir: &Path, supervisor: &mut Supervisor, metrics: &Metrics) {
    let owned = dir.to_path_buf();
    match tokio::task::spawn_blocking(move || tollgate_engine::load_dir(&owned)).await {
        Ok(Ok(store)) => {
            let kinds = managed_kinds(&store);
            apply(supervisor, metrics, &store, kinds).await;
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "policy reload failed; keeping the policies in force");
            metrics.policy_set_rejected(e.to_string());
        }
        Err(e) => tracing::error!(error = %e, "policy reload task failed"),
    }
}

async fn apply(
    supervisor: &mut Supervisor,
    metrics: &Metrics,
    store: &Store,
    kinds: Vec<ManagedKind>,
) {
    let labels = kinds.iter().map(ManagedKind::label).collect();
    let changes = supervisor.apply(kinds).await;
    metrics.policy_set_applied(store.digest(), labels);
    metrics
        .policy_reloads
        .get_or_create(&crate::metrics::ReloadLabels { result: "applied" })
        .inc();
    tracing::info!(
        digest = store.digest(),
        started = ?changes.started,
        restarted = ?changes.restarted,
        stopped = ?changes.stopped,
        "policy set in force"
    );
}

fn probes(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(metrics)
}

async fn readyz(State(metrics): State<Arc<Metrics>>) -> Response {
    let kinds = metrics.kind_states();
    let ready = kinds.values().all(|s| *s == KindState::Running);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({"ready": ready, "kinds": kinds, "policies": metrics.policy_report()});
    (status, axum::Json(body)).into_response()
}

async fn metrics_text(State(metrics): State<Arc<Metrics>>) -> Response {
    crate::metrics::openmetrics_response(metrics.encode())
}

/// Removes tollgate's finalizer from every object of every managed kind, so the objects can be
/// deleted after the reconciler is uninstalled. Returns how many objects were released.
pub async fn release_finalizers(policies_dir: &Path) -> Result<usize, RunError> {
    let kinds = load_kinds(policies_dir)?;
    let client = Client::try_default().await.map_err(RunError::Client)?;
    let mut released = 0;
    for kind in kinds {
        released += release_kind(&client, &kind).await?;
    }
    Ok(released)
}
