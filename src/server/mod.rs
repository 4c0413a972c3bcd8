//! The webhook server, in the order it runs: start-up here (policies, certificates, bind),
//! then `listener` (accept, handshake, serve HTTP, drain on shutdown) while `reload` watches the
//! policy files and certificates and swaps in what changed.

mod listener;
mod reload;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tollgate_engine::LoadError;

use crate::certs::{CertDir, CertError, CertOutcome};
use crate::http::{AppState, HttpConfig};
use crate::metrics::Metrics;
use tls::ReloadableCert;

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
    let store = tollgate_engine::load_dir(&config.policies_dir).inspect_err(|e| {
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
}
