//! A real tollgate server on a loopback port over TLS, and an HTTPS client that trusts it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tollgate::ServeConfig;
use tollgate::http::AppState;

use super::repo_path;

pub struct TestServer {
    pub addr: SocketAddr,
    pub ca_pem: String,
    pub state: AppState,
    pub cert_dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(repo_path("policies"), |_| {}).await
    }

    pub async fn start_with(policies: PathBuf, adjust: impl FnOnce(&mut ServeConfig)) -> Self {
        tollgate::install_crypto_provider();
        let cert_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
        let mut config = ServeConfig::new(policies, cert_dir.path(), addr);
        adjust(&mut config);
        let server = tollgate::server::bind(config)
            .await
            .unwrap_or_else(|e| panic!("server failed to bind: {e}"));
        let addr = server.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let state = server.state().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.serve(async {
            let _ = rx.await;
        }));
        let ca_pem = std::fs::read_to_string(cert_dir.path().join("ca.crt")).unwrap_or_default();
        // The listener is bound before `serve` starts, so connections queue until it accepts.
        Self {
            addr,
            ca_pem,
            state,
            cert_dir,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    pub fn client(&self) -> reqwest::Client {
        https_client(self.ca_pem.as_bytes(), self.addr)
            .build()
            .unwrap_or_else(|e| panic!("client: {e}"))
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client()
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Begins graceful shutdown; `finish` waits for it to complete.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub async fn finish(mut self) {
        self.begin_shutdown();
        if let Some(handle) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), handle).await;
        }
    }
}

/// A client that trusts only `ca_pem` and reaches `localhost` at `addr` (the certificate's SAN).
pub fn https_client(ca_pem: &[u8], addr: SocketAddr) -> reqwest::ClientBuilder {
    let ca = reqwest::Certificate::from_pem(ca_pem).unwrap_or_else(|e| panic!("ca: {e}"));
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .resolve("localhost", addr)
        .timeout(Duration::from_secs(30))
}

/// Decodes a response's base64 JSON Patch.
pub fn decode_patch(response: &Value) -> Option<json_patch::Patch> {
    use base64::Engine;
    let encoded = response.pointer("/response/patch")?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Applies a patch the way the apiserver does: every op must succeed against the object as
/// received, parents included.
pub fn apply_strictly(object: &Value, patch: &json_patch::Patch) -> Result<Value, String> {
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &patch.0).map_err(|e| e.to_string())?;
    Ok(patched)
}

/// tollgate in-process, restartable on the same port with the same (or new) certificates.
pub struct RestartableServer {
    pub addr: SocketAddr,
    pub cert_dir: PathBuf,
    /// Mutual TLS: require client certificates from this CA on every endpoint but /convert
    /// (the apiserver calls conversion webhooks without one).
    pub client_ca: Option<PathBuf>,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl RestartableServer {
    pub fn new(addr: SocketAddr, cert_dir: PathBuf) -> Self {
        Self {
            addr,
            cert_dir,
            client_ca: None,
            running: None,
        }
    }

    pub async fn start(&mut self) {
        let mut config =
            tollgate::ServeConfig::new(repo_path("policies"), &self.cert_dir, self.addr);
        config.shutdown_grace = Duration::from_secs(5);
        if let Some(ca_file) = &self.client_ca {
            config.client_auth = tollgate::server::ClientAuth::Verify {
                ca_file: ca_file.clone(),
                allow_anonymous: true,
            };
            config.http.anonymous_endpoints = vec![tollgate::http::Endpoint::Convert];
        }
        let server = tollgate::server::bind(config)
            .await
            .unwrap_or_else(|e| panic!("tollgate binds: {e}"));
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.serve(async {
            let _ = rx.await;
        }));
        self.running = Some((tx, handle));
    }

    pub async fn stop(&mut self) {
        if let Some((tx, handle)) = self.running.take() {
            let _ = tx.send(());
            let _ = tokio::time::timeout(Duration::from_secs(20), handle).await;
        }
    }
}

/// A client certificate and key, PEM.
pub struct ClientIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A raw TLS connection to `addr` trusting `ca_pem`, offering `alpn`, optionally presenting a
/// client certificate. The handshake's error is returned, not panicked on.
pub async fn tls_connect(
    addr: SocketAddr,
    ca_pem: &str,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
    identity: Option<&ClientIdentity>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.unwrap_or_else(|e| panic!("ca pem: {e}")))
            .unwrap_or_else(|e| panic!("root: {e}"));
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap_or_else(|e| panic!("versions: {e}"))
    .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let chain = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap_or_else(|e| panic!("client cert: {e}"));
            let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes())
                .unwrap_or_else(|e| panic!("client key: {e}"));
            builder
                .with_client_auth_cert(chain, key)
                .unwrap_or_else(|e| panic!("client auth: {e}"))
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap_or_else(|e| panic!("name: {e}"));
    connector.connect(name, tcp).await
}

/// A certificate authority for client certificates in mutual-TLS tests.
pub struct TestCa {
    pub pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("key: {e}"));
        let mut params =
            CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("params: {e}"));
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params
            .self_signed(&key)
            .unwrap_or_else(|e| panic!("ca: {e}"));
        Self {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    pub fn client(&self, common_name: &str) -> ClientIdentity {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("key: {e}"));
        let mut params =
            CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("params: {e}"));
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .unwrap_or_else(|e| panic!("client cert: {e}"));
        ClientIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}
