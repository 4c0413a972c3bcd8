//! TLS server configuration whose serving certificate and client CA can be swapped while
//! running, so a renewed certificate or CA is picked up without dropping connections or
//! restarting.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::certs::{self, CertDir, CertError};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("TLS configuration error: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA {}: {reason}", path.display())]
    ClientCa { path: PathBuf, reason: String },
}

#[derive(Debug)]
pub struct ReloadableCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    pub fn new(initial: Arc<CertifiedKey>) -> Self {
        Self {
            current: RwLock::new(initial),
        }
    }

    /// Loads and checks the pair from disk; on error the certificate in use stays in place.
    pub fn reload_from(&self, dir: &CertDir) -> Result<bool, CertError> {
        let fresh = dir.load_serving_key()?;
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.cert == fresh.cert {
            return Ok(false);
        }
        *current = fresh;
        Ok(true)
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(Arc::clone(&current))
    }
}

/// Who may connect: anyone (server-side TLS only), or clients with a certificate from the CAs
/// in a file (mutual TLS).
#[derive(Debug, Clone, Default)]
pub enum ClientAuth {
    #[default]
    None,
    Verify {
        ca_file: PathBuf,
        /// Also accept connections that present no certificate at all (a certificate from
        /// another CA is still refused at the handshake); the HTTP layer then limits what they
        /// may call.
        allow_anonymous: bool,
    },
}

/// The acceptor every new connection uses; reloading builds a new configuration and swaps it.
pub struct TlsSettings {
    cert: Arc<ReloadableCert>,
    client_auth: ClientAuth,
    /// The client CA file's contents behind the current configuration.
    client_ca_pem: RwLock<Option<Vec<u8>>>,
    acceptor: RwLock<TlsAcceptor>,
}

impl TlsSettings {
    pub fn new(cert: Arc<ReloadableCert>, client_auth: ClientAuth) -> Result<Self, TlsError> {
        let pem = client_ca_bytes(&client_auth)?;
        let config = server_config(Arc::clone(&cert), &client_auth)?;
        Ok(Self {
            cert,
            client_auth,
            client_ca_pem: RwLock::new(pem),
            acceptor: RwLock::new(TlsAcceptor::from(Arc::new(config))),
        })
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn cert(&self) -> &ReloadableCert {
        &self.cert
    }

    /// Picks up a changed client CA file. A file that cannot be used keeps the CA in force.
    pub fn reload_client_ca(&self) -> Result<bool, TlsError> {
        let fresh = client_ca_bytes(&self.client_auth)?;
        if *self.client_ca_pem.read().unwrap_or_else(|p| p.into_inner()) == fresh {
            return Ok(false);
        }
        let config = server_config(Arc::clone(&self.cert), &self.client_auth)?;
        *self.acceptor.write().unwrap_or_else(|p| p.into_inner()) =
            TlsAcceptor::from(Arc::new(config));
        *self
            .client_ca_pem
            .write()
            .unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(true)
    }
}

fn client_ca_bytes(client_auth: &ClientAuth) -> Result<Option<Vec<u8>>, TlsError> {
    match client_auth {
        ClientAuth::None => Ok(None),
        ClientAuth::Verify { ca_file, .. } => std::fs::read(ca_file)
            .map(Some)
            .map_err(|e| client_ca_error(ca_file, e.to_string())),
    }
}

fn client_ca_error(path: &Path, reason: String) -> TlsError {
    TlsError::ClientCa {
        path: path.to_path_buf(),
        reason,
    }
}

/// TLS 1.2 and 1.3 only; ALPN offers `h2` and `http/1.1` (the apiserver speaks the latter).
pub fn server_config(
    cert: Arc<ReloadableCert>,
    client_auth: &ClientAuth,
) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let mut config = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Verify {
            ca_file,
            allow_anonymous,
        } => {
            let roots = certs::load_client_roots(ca_file)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if *allow_anonymous {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| client_ca_error(ca_file, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    }
    .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
