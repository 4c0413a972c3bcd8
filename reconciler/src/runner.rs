//! `tollgate reconcile`: loads the policies, competes for the lease, serves metrics and probes,
//! and runs one controller per managed kind, each started once its CRD is served.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::core::DynamicObject;
use serde_json::json;
use tokio::sync::watch;

use crate::controller::{self, Context};
use crate::kinds::{ManagedKind, managed_kinds};
use crate::leader::{self, Leadership, LeaseConfig, LeaseState};
use crate::metrics::{KindState, Metrics};

/// How often a kind whose CRD is not served is looked for again.
const CRD_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    pub policies_dir: PathBuf,
    /// Plain-HTTP address for `/metrics`, `/healthz` and `/readyz`; `None` serves nothing.
    pub metrics_addr: Option<SocketAddr>,
    /// `None` runs without leader election (one replica only).
    pub lease: Option<LeaseConfig>,
    pub identity: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The policy directory could not be loaded.
    #[error(transparent)]
    Policies(#[from] tollgate_engine::LoadError),
    /// No policy has a `rollout` section: nothing to reconcile.
    #[error("no policy in {} has a spec.rollout section; nothing to reconcile", .0.display())]
    NothingToManage(PathBuf),
    /// No Kubernetes configuration could be found (KUBECONFIG, ~/.kube/config, in-cluster).
    #[error("cannot configure a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// The metrics address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A call to the apiserver failed.
    #[error("{0}")]
    Api(String),
}

impl RunError {
    pub fn is_config_error(&self) -> bool {
        matches!(
            self,
            Self::Policies(_) | Self::NothingToManage(_) | Self::Client(_)
        )
    }
}

/// The kinds to manage, from the policy directory.
pub fn load_kinds(policies_dir: &std::path::Path) -> Result<Vec<ManagedKind>, RunError> {
    let store = tollgate_engine::load_dir(policies_dir)?;
    let kinds = managed_kinds(&store);
    if kinds.is_empty() {
        return Err(RunError::NothingToManage(policies_dir.to_path_buf()));
    }
    Ok(kinds)
}

pub async fn run(
    config: ReconcilerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let kinds = load_kinds(&config.policies_dir)?;
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
    for kind in kinds {
        metrics.set_kind_state(
            &kind.label(),
            KindState::Missing("looking up the CRD".into()),
        );
        let (client, leadership, metrics, identity) = (
            client.clone(),
            Arc::clone(&leadership),
            Arc::clone(&metrics),
            config.identity.clone(),
        );
        let until = stopped();
        let mut stop = stop_tx.subscribe();
        tasks.spawn(async move {
            let resource = tokio::select! {
                found = discover(&client, &kind, &metrics) => found,
                _ = stop.wait_for(|s| *s) => return,
            };
            metrics.set_kind_state(&kind.label(), KindState::Running);
            tracing::info!(kind = %kind.label(), version = %kind.version, "reconciling");
            let ctx = Arc::new(Context::new(
                client, kind, resource, leadership, metrics, &identity,
            ));
            controller::run(ctx, until).await;
        });
    }
    shutdown.await;
    tracing::info!("reconciler shutting down");
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Waits until the kind's CRD is served; a missing kind is reported, not fatal.
async fn discover(
    client: &Client,
    kind: &ManagedKind,
    metrics: &Metrics,
) -> kube::core::ApiResource {
    loop {
        match kube::discovery::pinned_kind(client, &controller::gvk(kind)).await {
            Ok((resource, _)) => return resource,
            Err(e) => {
                let detail = format!("{} is not served: {e}", kind.api_version());
                tracing::warn!(kind = %kind.label(), error = %e, retry_in = ?CRD_RETRY, "CRD not served; will retry");
                metrics.set_kind_state(&kind.label(), KindState::Missing(detail));
            }
        }
        tokio::time::sleep(CRD_RETRY).await;
    }
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
    (status, axum::Json(json!({"ready": ready, "kinds": kinds}))).into_response()
}

async fn metrics_text(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.encode() {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}"),
        )
            .into_response(),
    }
}

/// Removes tollgate's finalizer from every object of every managed kind, so the objects can be
/// deleted after the reconciler is uninstalled. Returns how many objects were released.
pub async fn release_finalizers(policies_dir: &std::path::Path) -> Result<usize, RunError> {
    let kinds = load_kinds(policies_dir)?;
    let client = Client::try_default().await.map_err(RunError::Client)?;
    let mut released = 0;
    for kind in kinds {
        let resource = match kube::discovery::pinned_kind(&client, &controller::gvk(&kind)).await {
            Ok((resource, _)) => resource,
            Err(e) => {
                tracing::warn!(kind = %kind.label(), error = %e, "kind not served; skipped");
                continue;
            }
        };
        let all: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let objects = all
            .list(&ListParams::default())
            .await
            .map_err(|e| RunError::Api(format!("list {}: {e}", kind.label())))?;
        for object in objects.items {
            if !object
                .metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == controller::FINALIZER)
            {
                continue;
            }
            let api: Api<DynamicObject> = match object.metadata.namespace.as_deref() {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                None => Api::all_with(client.clone(), &resource),
            };
            controller::remove_finalizer(&api, &object)
                .await
                .map_err(|e| RunError::Api(e.to_string()))?;
            released += 1;
        }
    }
    Ok(released)
}
