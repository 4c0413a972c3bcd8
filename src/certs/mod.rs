//! Certificates in a directory (`ca.crt`, `ca.key`, `tls.crt`, `tls.key`): generated with rcgen
//! when none exist (`generate`), and loaded with the checks that make a bad pair a clear start-up
//! error instead of failed handshakes later (`load`).

mod generate;
mod lifecycle;
mod load;

pub use lifecycle::{
    CA_NEXT_CERT, CA_NEXT_KEY, CA_PREVIOUS_CERT, Lifetimes, RotationPhase, RotationStep, Validity,
    parse_lifetime,
};
pub use load::load_client_roots;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Reading or writing a file in the cert dir failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// rcgen could not build or sign a certificate.
    #[error("cannot generate certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{}: no PEM certificate found", .0.display())]
    NoCertificate(PathBuf),
    #[error("{}: cannot read PEM data: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("{}: cannot parse certificate: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error("{}: certificate expired on {not_after}", path.display())]
    Expired { path: PathBuf, not_after: String },
    #[error("{}: certificate is not valid before {not_before}", path.display())]
    NotYetValid { path: PathBuf, not_before: String },
    #[error("{} and {} do not belong together: {reason}", cert.display(), key.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("{} exists but {} is missing; refusing to overwrite a half pair (move it away or restore its partner)", present.display(), missing.display())]
    HalfPair { present: PathBuf, missing: PathBuf },
    #[error("invalid --san {0:?}: {1}")]
    San(String, String),
    #[error("certificates already exist in {}; move them away to generate new ones", .0.display())]
    AlreadyExist(PathBuf),
    #[error("{} is missing: only a CA whose key is here can issue or rotate certificates", .0.display())]
    NoCaKey(PathBuf),
}

/// What `ensure` found or did, so the caller can tell the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertOutcome {
    Existing,
    Generated { dir: PathBuf, ca_reused: bool },
}

pub struct CertDir {
    dir: PathBuf,
    lifetimes: Lifetimes,
}

impl CertDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            lifetimes: Lifetimes::default(),
        }
    }

    /// Lifetimes for the certificates generated from now on.
    pub fn with_lifetimes(mut self, lifetimes: Lifetimes) -> Self {
        self.lifetimes = lifetimes;
        self
    }

    pub fn lifetimes(&self) -> Lifetimes {
        self.lifetimes
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn serving_pair_exists(&self) -> Result<bool, CertError> {
        pair_state(&self.path(TLS_CERT), &self.path(TLS_KEY))
    }

    /// Uses the serving pair if present (checked), otherwise generates it, reusing an existing
    /// CA so a `caBundle` already registered stays valid.
    pub fn ensure(&self, sans: &[String]) -> Result<CertOutcome, CertError> {
        if self.serving_pair_exists()? {
            self.load_serving_key()?;
            return Ok(CertOutcome::Existing);
        }
        self.generate(sans)
    }

    /// PEM of the CA, for `caBundle`.
    pub fn ca_pem(&self) -> Result<String, CertError> {
        read(&self.path(CA_CERT))
    }
}

pub(crate) fn pair_state(cert: &Path, key: &Path) -> Result<bool, CertError> {
    match (cert.exists(), key.exists()) {
        (true, true) => Ok(true),
        (false, false) => Ok(false),
        (true, false) => Err(CertError::HalfPair {
            present: cert.to_path_buf(),
            missing: key.to_path_buf(),
        }),
        (false, true) => Err(CertError::HalfPair {
            present: key.to_path_buf(),
            missing: cert.to_path_buf(),
        }),
    }
}

pub(crate) fn read(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Written to a temporary file and renamed, so a reader never sees a half-written key.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    let io_err = |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(io_err)?;
    file.write_all(contents).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    fs::rename(&tmp, path).map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::KeyPair;
    use time::{Duration, OffsetDateTime};

    use super::generate::{parse_sans, serving_params};

    #[test]
    fn generates_loads_and_reuses_the_ca() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let dir = CertDir::new(tmp.path().join("certs"));
        assert!(matches!(
            dir.ensure(&["tollgate.svc".into()])?,
            CertOutcome::Generated {
                ca_reused: false,
                ..
            }
        ));
        assert_eq!(dir.ensure(&[])?, CertOutcome::Existing);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in [CA_KEY, TLS_KEY] {
                assert_eq!(
                    fs::metadata(dir.path(key))?.permissions().mode() & 0o777,
                    0o600
                );
            }
        }
        let ca_before = dir.ca_pem()?;
        fs::remove_file(dir.path(TLS_CERT))?;
        fs::remove_file(dir.path(TLS_KEY))?;
        assert!(matches!(
            dir.ensure(&[])?,
            CertOutcome::Generated {
                ca_reused: true,
                ..
            }
        ));
        assert_eq!(dir.ca_pem()?, ca_before);
        dir.load_serving_key()?;
        Ok(())
    }

    #[test]
    fn reports_half_pairs_and_mismatched_keys() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let dir = CertDir::new(tmp.path());
        dir.ensure(&[])?;
        // A serving key swapped for the CA key no longer matches tls.crt.
        fs::copy(dir.path(CA_KEY), dir.path(TLS_KEY))?;
        assert!(matches!(dir.ensure(&[]), Err(CertError::Mismatch { .. })));
        fs::remove_file(dir.path(TLS_KEY))?;
        assert!(matches!(dir.ensure(&[]), Err(CertError::HalfPair { .. })));
        assert!(
            dir.path(TLS_CERT).exists(),
            "a half pair must never be overwritten"
        );
        Ok(())
    }

    #[test]
    fn rejects_expired_certificates() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let dir = CertDir::new(tmp.path());
        let key = KeyPair::generate()?;
        let mut params = serving_params(parse_sans(&[])?, Lifetimes::default().serving)?;
        params.not_before = OffsetDateTime::now_utc() - Duration::days(10);
        params.not_after = OffsetDateTime::now_utc() - Duration::days(1);
        let cert = params.self_signed(&key)?;
        fs::write(dir.path(TLS_CERT), cert.pem())?;
        fs::write(dir.path(TLS_KEY), key.serialize_pem())?;
        let err = dir
            .ensure(&[])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("expired"), "{err}");
        Ok(())
    }

    #[test]
    fn rejects_bad_sans() {
        assert!(parse_sans(&["bad name!".into()]).is_err());
        assert!(parse_sans(&["-x.example".into()]).is_err());
        assert!(
            parse_sans(&[
                "tollgate.tollgate.svc".into(),
                "*.example.com".into(),
                "10.0.0.1".into()
            ])
            .is_ok()
        );
    }
}
