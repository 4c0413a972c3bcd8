//! The TLS listener: accept, handshake, serve HTTP, and shut down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::certs::{CertDir, CertError, CertOutcome};
use crate::http::{self, AppState, HttpConfig};
use crate::metrics::Metrics;
use crate::policy::{self, LoadError};
use crate::tls::{self, ReloadableCert};

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub policies_dir: PathBuf,
    pub cert_dir: PathBuf,
    pub addr: SocketAddr,
    pub sans: Vec<String>,
    pub http: HttpConfig,
    /// How often policy files and certificates are checked for changes.
    pub reload_interval: Duration,
    /// How long in-flight requests may run after shutdown begins.
    pub shutdown_grace: Duration,
    pub handshake_timeout: Duration,
    pub max_connections: usize,
}

impl ServeConfig {
    pub fn new(
        policies_dir: impl Into<PathBuf>,
        cert_dir: impl Into<PathBuf>,
        addr: SocketAddr,
    ) -> Self {
        Self {
            policies_dir: policies_dir.into(),
            cert_dir: cert_dir.into(),
            addr,
            sans: Vec::new(),
            http: HttpConfig::default(),
            reload_interval: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(25),
            handshake_timeout: Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The policy directory could not be loaded; every problem is listed.
    #[error(transparent)]
    Policies(#[from] LoadError),
    /// Certificates could not be generated or are unusable.
    #[error(transparent)]
    Certs(#[from] CertError),
    /// rustls rejected the configuration.
    #[error("TLS configuration error: {0}")]
    Tls(#[from] rustls::Error),
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl ServeError {
    /// Configuration problems (exit code 2) versus runtime failures.
    pub fn is_config_error(&self) -> bool {
        matches!(self, Self::Policies(_) | Self::Certs(_))
    }
}

/// A bound, ready-to-serve server. Binding first lets tests ask for port 0 and read the port.
pub struct Server {
    config: ServeConfig,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    cert: Arc<ReloadableCert>,
    state: AppState,
}

pub async fn run(
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    bind(config).await?.serve(shutdown).await;
    Ok(())
}

pub async fn bind(config: ServeConfig) -> Result<Server, ServeError> {
    let metrics = Metrics::default();
    let store = policy::load_dir(&config.policies_dir).inspect_err(|e| {
        metrics.policy_load_errors.inc_by(e.problem_count() as u64);
    })?;
    tracing::info!(
        dir = %config.policies_dir.display(),
        policies = store.policies().len(),
        "policies loaded"
    );
    let cert_dir = CertDir::new(&config.cert_dir);
    match cert_dir.ensure(&config.sans)? {
        CertOutcome::Existing => {
            tracing::info!(dir = %config.cert_dir.display(), "using existing certificates")
        }
        CertOutcome::Generated { dir, ca_reused } => tracing::info!(
            dir = %dir.display(),
            ca = %dir.join(crate::certs::CA_CERT).display(),
            ca_reused,
            "generated serving certificate (ca.crt, ca.key, tls.crt, tls.key)"
        ),
    }
    let cert = Arc::new(ReloadableCert::new(cert_dir.load_serving_key()?));
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(Arc::clone(&cert))?));
    let listener = TcpListener::bind(config.addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.addr,
            source,
        })?;
    let state = AppState::new(config.http.clone(), store, metrics);
    Ok(Server {
        config,
        listener,
        acceptor,
        cert,
        state,
    })
}

impl Server {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let Server {
            config,
            listener,
            acceptor,
            cert,
            state,
        } = self;
        let service = TowerToHyperService::new(http::router(state.clone()));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // Slow or idle clients that never finish their headers are cut off.
            .header_read_timeout(config.handshake_timeout);
        let builder = Arc::new(builder);
        let graceful = GracefulShutdown::new();
        let connections = Arc::new(Semaphore::new(config.max_connections));
        let reloader = tokio::spawn(reload_loop(
            config.clone(),
            Arc::clone(&cert),
            state.clone(),
        ));

        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "listening (HTTPS)");
        }
        state.set_ready(true);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            // Usually fd exhaustion: back off instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                        tracing::warn!(%peer, "connection limit reached; dropping connection");
                        continue;
                    };
                    let acceptor = acceptor.clone();
                    let builder = Arc::clone(&builder);
                    let service = service.clone();
                    let watcher = graceful.watcher();
                    let handshake_timeout = config.handshake_timeout;
                    tokio::spawn(async move {
                        let _permit = permit;
                        let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                        let conn = builder.serve_connection(TokioIo::new(tls), service).into_owned();
                        if let Err(e) = watcher.watch(conn).await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
            }
        }

        tracing::info!("shutting down: no new connections, draining in-flight requests");
        state.set_ready(false);
        drop(listener);
        reloader.abort();
        if tokio::time::timeout(config.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?config.shutdown_grace, "in-flight requests still running at the end of the grace period");
        }
        tracing::info!("shutdown complete");
    }
}

/// Picks up changed policy files and renewed certificates. A bad change is reported (log and
/// `tollgate_policy_load_errors`) and the previous, working set stays active.
async fn reload_loop(config: ServeConfig, cert: Arc<ReloadableCert>, state: AppState) {
    let cert_dir = CertDir::new(&config.cert_dir);
    let mut last_seen = fingerprint(&config.policies_dir);
    let mut ticker = tokio::time::interval(config.reload_interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        match cert.reload_from(&cert_dir) {
            Ok(true) => tracing::info!("serving certificate reloaded"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "keeping the current serving certificate"),
        }
        let seen = fingerprint(&config.policies_dir);
        if seen == last_seen {
            continue;
        }
        last_seen = seen;
        let dir = config.policies_dir.clone();
        match tokio::task::spawn_blocking(move || policy::load_dir(&dir)).await {
            Ok(Ok(store)) => {
                let count = store.policies().len();
                state.store().replace(store);
                state.metrics().policies_loaded.set(count as i64);
                tracing::info!(policies = count, "policies reloaded");
            }
            Ok(Err(e)) => {
                state
                    .metrics()
                    .policy_load_errors
                    .inc_by(e.problem_count() as u64);
                tracing::error!(error = %e, "policy reload failed; keeping the previous policies");
            }
            Err(e) => tracing::error!(error = %e, "policy reload task failed"),
        }
    }
}

fn fingerprint(dir: &std::path::Path) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
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
