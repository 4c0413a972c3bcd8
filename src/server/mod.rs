//! The webhook server, in the order it runs: start-up here (policies, certificates, bind),
//! then `listener` (accept, handshake, serve HTTP, drain on shutdown) while `reload` watches the
//! policy files and certificates and swaps in what changed.

mod aside;
mod cert_secret;
mod connection;
mod linger;
mod listener;
mod reload;
mod renewal;
mod tls;

pub use connection::{ConnectionLimits, OVERFLOW_CONNECTIONS};
pub use tls::{ClientAuth, TlsError};

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tollgate_engine::LoadError;

use crate::certs::{CertDir, CertError, CertOutcome, Lifetimes};
use crate::http::{AppState, HttpConfig};
use crate::metrics::Metrics;
use crate::register::{RegisterConfig, RegisterError, Registrar};
use crate::traces::{TraceConfig, TraceError, Traces};
use cert_secret::{CertSecret, SecretError};
use tls::{ReloadableCert, TlsSettings};

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
    pub connections: ConnectionLimits,
    /// Mutual TLS: whether, and against which CA, client certificates are verified.
    pub client_auth: ClientAuth,
    /// Lifetimes of generated (and renewed) certificates.
    pub lifetimes: Lifetimes,
    /// Warn when a certificate expires within this.
    pub expiry_warning: Duration,
    /// Register with the apiserver (`serve --register`).
    pub register: Option<RegisterConfig>,
    /// Share the certificates with other replicas through this Secret (NAMESPACE/NAME).
    pub cert_secret: Option<String>,
    /// Where review traces go (off unless an OTLP endpoint is set).
    pub traces: TraceConfig,
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
            connections: ConnectionLimits::default(),
            client_auth: ClientAuth::None,
            lifetimes: Lifetimes::default(),
            expiry_warning: Duration::from_secs(30 * 24 * 3600),
            register: None,
            cert_secret: None,
            traces: TraceConfig::default(),
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
    /// rustls rejected the configuration, or the client CA is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The shared certificate Secret could not be used.
    #[error(transparent)]
    CertSecret(#[from] SecretError),
    /// Registration with the apiserver could not start.
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// The trace exporter could not be configured.
    #[error(transparent)]
    Traces(#[from] TraceError),
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
        matches!(
            self,
            Self::Policies(_)
                | Self::Traces(_)
                | Self::Certs(_)
                | Self::Tls(_)
                | Self::Register(RegisterError::Config(_))
                | Self::CertSecret(SecretError::Name(_) | SecretError::Config(_))
        )
    }
}

/// A bound, ready-to-serve server. Binding first lets tests ask for port 0 and read the port.
pub struct Server {
    config: ServeConfig,
    listener: TcpListener,
    tls: Arc<TlsSettings>,
    state: AppState,
    registrar: Option<Registrar>,
    cert_secret: Option<CertSecret>,
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
    let cert_dir = CertDir::new(&config.cert_dir).with_lifetimes(config.lifetimes);
    let cert_secret = match &config.cert_secret {
        Some(spec) => {
            let mut secret = CertSecret::connect(spec).await?;
            match secret.start(&cert_dir, &config.sans).await {
                Ok(()) => {}
                // A broken Secret never replaces a working pair already here.
                Err(e @ SecretError::Invalid { .. }) if cert_dir.load_serving_key().is_ok() => {
                    tracing::error!(error = %e, "refusing the shared Secret; serving the certificates in the cert dir");
                }
                Err(e) => return Err(e.into()),
            }
            Some(secret)
        }
        None => None,
    };
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
    let tls = Arc::new(TlsSettings::new(cert, config.client_auth.clone())?);
    let listener = TcpListener::bind(config.addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.addr,
            source,
        })?;
    let traces = Traces::start(&config.traces)?.map(Arc::new);
    if traces.is_some() {
        tracing::info!("exporting a trace span per review over OTLP");
    }
    let state = AppState::traced(config.http.clone(), store, metrics, traces);
    let registrar = match &config.register {
        Some(register) => Some(Registrar::connect(register.clone()).await?),
        None => None,
    };
    Ok(Server {
        cert_secret,
        registrar,
        config,
        listener,
        tls,
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
