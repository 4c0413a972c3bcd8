//! Sharing one CA and serving pair between replicas through a Secret (`--cert-secret NS/NAME`).
//!
//! The Secret is the source of truth; `--cert-dir` is each replica's working copy, which the
//! TLS reload reads as usual. The first replica to find no Secret creates it from its own
//! (generated) certificates; a replica that loses that race reads the winner's. A renewal or CA
//! rotation step is written back with the Secret's resourceVersion, so of several replicas doing
//! it at once exactly one write lands and the others adopt it. Contents that do not form a
//! working pair (a bad hand edit) are refused loudly, and the pair in use is kept.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

use crate::certs::{
    CA_CERT, CA_KEY, CA_NEXT_CERT, CA_NEXT_KEY, CA_PREVIOUS_CERT, CertDir, CertError, TLS_CERT,
    TLS_KEY,
};

/// Every file of the certificate directory that the Secret carries.
const FILES: [&str; 7] = [
    CA_CERT,
    CA_KEY,
    TLS_CERT,
    TLS_KEY,
    CA_NEXT_CERT,
    CA_NEXT_KEY,
    CA_PREVIOUS_CERT,
];

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("--cert-secret {0:?} is not NAMESPACE/NAME")]
    Name(String),
    #[error("no usable kube config for --cert-secret: {0}")]
    Config(#[source] kube::Error),
    #[error("Secret {name}: {source}")]
    Api {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("Secret {name} does not hold a working CA and serving pair: {source}")]
    Invalid {
        name: String,
        #[source]
        source: CertError,
    },
    #[error(transparent)]
    Cert(#[from] CertError),
}

type Files = BTreeMap<String, Vec<u8>>;

pub struct CertSecret {
    api: Api<Secret>,
    namespace: String,
    name: String,
    /// The resourceVersion the working copy was taken from (or written as).
    version: Option<String>,
}

impl CertSecret {
    pub async fn connect(spec: &str) -> Result<Self, SecretError> {
        let (namespace, name) = spec
            .split_once('/')
            .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
            .ok_or_else(|| SecretError::Name(spec.to_string()))?;
        let client = kube::Client::try_default()
            .await
            .map_err(SecretError::Config)?;
        Ok(Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
            version: None,
        })
    }

    fn label(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn api_error(&self, source: kube::Error) -> SecretError {
        SecretError::Api {
            name: self.label(),
            source,
        }
    }

    async fn fetch(&self) -> Result<Option<(Files, String)>, SecretError> {
        let found = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.api_error(e))?;
        Ok(found.map(|secret| {
            let version = secret.metadata.resource_version.clone().unwrap_or_default();
            let files = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .filter(|(key, _)| FILES.contains(&key.as_str()))
                .map(|(key, value)| (key, value.0))
                .collect();
            (files, version)
        }))
    }

    /// At start-up: adopt the Secret, or create it from the working copy (which `ensure` has
    /// generated if needed) when there is none yet.
    pub async fn start(&mut self, dir: &CertDir, sans: &[String]) -> Result<(), SecretError> {
        if self.pull(dir).await? {
            return Ok(());
        }
        dir.ensure(sans)?;
        let secret = self.secret(read_files(dir)?, None);
        match self.api.create(&PostParams::default(), &secret).await {
            Ok(created) => {
                self.version = created.metadata.resource_version;
                tracing::info!(secret = %self.label(), "created the shared certificate Secret");
                Ok(())
            }
            // Another replica created it first: use theirs.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::info!(secret = %self.label(), "another replica created the certificate Secret first; using it");
                self.pull(dir).await.map(|_| ())
            }
            Err(e) => Err(self.api_error(e)),
        }
    }

    /// Brings the working copy in line with the Secret. Returns whether a Secret exists.
    /// Contents that do not form a working pair are refused and the working copy kept.
    pub async fn pull(&mut self, dir: &CertDir) -> Result<bool, SecretError> {
        let Some((files, version)) = self.fetch().await? else {
            return Ok(false);
        };
        if self.version.as_deref() == Some(version.as_str()) {
            return Ok(true);
        }
        if files != read_files(dir)? {
            check(&files).map_err(|source| SecretError::Invalid {
                name: self.label(),
                source,
            })?;
            write_files(dir, &files)?;
            tracing::info!(secret = %self.label(), "certificates updated from the shared Secret");
        }
        self.version = Some(version);
        Ok(true)
    }

    /// Writes a locally made change (renewal, rotation step) back. When another replica wrote
    /// first, its version wins and replaces the local change. Returns whether ours landed.
    pub async fn push(&mut self, dir: &CertDir) -> Result<bool, SecretError> {
        let files = read_files(dir)?;
        let secret = self.secret(files, self.version.clone());
        match self
            .api
            .replace(&self.name, &PostParams::default(), &secret)
            .await
        {
            Ok(stored) => {
                self.version = stored.metadata.resource_version;
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::info!(secret = %self.label(), "another replica updated the certificates first; adopting theirs");
                self.version = None;
                self.pull(dir).await?;
                Ok(false)
            }
            Err(e) => Err(self.api_error(e)),
        }
    }

    fn secret(&self, files: Files, resource_version: Option<String>) -> Secret {
        let mut secret = Secret::default();
        secret.metadata.name = Some(self.name.clone());
        secret.metadata.namespace = Some(self.namespace.clone());
        secret.metadata.resource_version = resource_version;
        secret.metadata.labels = Some(BTreeMap::from([(
            "app.kubernetes.io/managed-by".to_string(),
            "tollgate".to_string(),
        )]));
        secret.type_ = Some("Opaque".into());
        secret.data = Some(
            files
                .into_iter()
                .map(|(key, value)| (key, ByteString(value)))
                .collect(),
        );
        secret
    }
}

/// The certificate files of the working copy.
pub fn read_files(dir: &CertDir) -> Result<Files, CertError> {
    let mut files = Files::new();
    for name in FILES {
        let path = dir.path(name);
        if path.exists() {
            let data = std::fs::read(&path).map_err(|source| CertError::Io {
                path: path.clone(),
                source,
            })?;
            files.insert(name.to_string(), data);
        }
    }
    Ok(files)
}

fn write_files(dir: &CertDir, files: &Files) -> Result<(), CertError> {
    std::fs::create_dir_all(dir.dir()).map_err(|source| CertError::Io {
        path: dir.dir().to_path_buf(),
        source,
    })?;
    // Keys before certificates, as everywhere: a reload in between refuses a mismatched pair.
    let order = [
        CA_KEY,
        CA_NEXT_KEY,
        TLS_KEY,
        CA_NEXT_CERT,
        CA_PREVIOUS_CERT,
        CA_CERT,
        TLS_CERT,
    ];
    for name in order {
        let path = dir.path(name);
        match files.get(name) {
            Some(data) => {
                let mode = if name.ends_with(".key") { 0o600 } else { 0o644 };
                crate::certs::write_file(&path, data, mode)?;
            }
            None if path.exists() => {
                std::fs::remove_file(&path).map_err(|source| CertError::Io {
                    path: path.clone(),
                    source,
                })?;
            }
            None => {}
        }
    }
    Ok(())
}

/// The files form a usable CA and serving pair (checked in a scratch directory).
fn check(files: &Files) -> Result<(), CertError> {
    let scratch = tempfile::tempdir().map_err(|source| CertError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let dir = CertDir::new(scratch.path());
    write_files(&dir, files)?;
    dir.load_serving_key()?;
    dir.ca_validity()?;
    Ok(())
}
