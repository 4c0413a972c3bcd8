//! Certificates: a CA and a serving certificate generated with rcgen when none exist, and the
//! checks that make a bad pair a clear start-up error instead of failed handshakes later.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use time::{Duration, OffsetDateTime};

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";

const CA_VALIDITY_DAYS: i64 = 3650;
const SERVING_VALIDITY_DAYS: i64 = 365;
/// Covers clock skew between this host and the apiserver's.
const BACKDATE: Duration = Duration::hours(1);

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
}

/// What `ensure` found or did, so the caller can tell the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertOutcome {
    Existing,
    Generated { dir: PathBuf, ca_reused: bool },
}

pub struct CertDir {
    dir: PathBuf,
}

impl CertDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn serving_pair_exists(&self) -> Result<bool, CertError> {
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

    /// Generates whatever is missing; refuses when a serving pair is already there.
    pub fn generate(&self, sans: &[String]) -> Result<CertOutcome, CertError> {
        if self.serving_pair_exists()? {
            return Err(CertError::AlreadyExist(self.dir.clone()));
        }
        let san_types = parse_sans(sans)?;
        fs::create_dir_all(&self.dir).map_err(|source| CertError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let ca_reused = pair_state(&self.path(CA_CERT), &self.path(CA_KEY))?;
        let issuer = if ca_reused {
            let key_pem = read(&self.path(CA_KEY))?;
            let cert_pem = read(&self.path(CA_CERT))?;
            check_validity(&self.path(CA_CERT), &cert_pem)?;
            Issuer::from_ca_cert_pem(&cert_pem, KeyPair::from_pem(&key_pem)?)?
        } else {
            let key = KeyPair::generate()?;
            let params = ca_params()?;
            let cert = params.self_signed(&key)?;
            write_file(&self.path(CA_KEY), key.serialize_pem().as_bytes(), 0o600)?;
            write_file(&self.path(CA_CERT), cert.pem().as_bytes(), 0o644)?;
            Issuer::new(params, key)
        };
        let serving_key = KeyPair::generate()?;
        let serving = serving_params(san_types)?.signed_by(&serving_key, &issuer)?;
        // Key first: a crash between the two writes leaves a half pair that is reported, not used.
        write_file(
            &self.path(TLS_KEY),
            serving_key.serialize_pem().as_bytes(),
            0o600,
        )?;
        write_file(&self.path(TLS_CERT), serving.pem().as_bytes(), 0o644)?;
        Ok(CertOutcome::Generated {
            dir: self.dir.clone(),
            ca_reused,
        })
    }

    /// The serving chain and key as rustls uses them, after checking dates and that they match.
    pub fn load_serving_key(&self) -> Result<Arc<CertifiedKey>, CertError> {
        let cert_path = self.path(TLS_CERT);
        let key_path = self.path(TLS_KEY);
        let cert_pem = read(&cert_path)?;
        check_validity(&cert_path, &cert_pem)?;
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| CertError::Pem {
                    path: cert_path.clone(),
                    reason: e.to_string(),
                })?;
        if chain.is_empty() {
            return Err(CertError::NoCertificate(cert_path));
        }
        let key_pem = read(&key_path)?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| CertError::Pem {
                path: key_path.clone(),
                reason: e.to_string(),
            })?;
        let provider = rustls::crypto::ring::default_provider();
        let mismatch = |reason: String| CertError::Mismatch {
            cert: cert_path.clone(),
            key: key_path.clone(),
            reason,
        };
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| mismatch(format!("unusable private key: {e}")))?;
        let certified = CertifiedKey::new(chain, signing_key);
        certified
            .keys_match()
            .map_err(|e| mismatch(format!("the key does not match the certificate ({e})")))?;
        Ok(Arc::new(certified))
    }

    /// PEM of the CA, for `caBundle`.
    pub fn ca_pem(&self) -> Result<String, CertError> {
        read(&self.path(CA_CERT))
    }
}

fn pair_state(cert: &Path, key: &Path) -> Result<bool, CertError> {
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

fn ca_params() -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "tollgate CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
    Ok(params)
}

fn serving_params(sans: Vec<SanType>) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "tollgate");
    params.distinguished_name = name;
    params.subject_alt_names = sans;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(SERVING_VALIDITY_DAYS);
    Ok(params)
}

/// localhost, 127.0.0.1 and ::1 always; each extra name is an IP address or a DNS name.
fn parse_sans(extra: &[String]) -> Result<Vec<SanType>, CertError> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    for name in extra {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
        .iter()
        .map(|name| match name.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) if !is_dns_name(name) => Err(CertError::San(
                name.clone(),
                "not an IP address or a DNS name (RFC 1123 labels, optional leading \"*.\")".into(),
            )),
            Err(_) => name
                .as_str()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|e: rcgen::Error| CertError::San(name.clone(), e.to_string())),
        })
        .collect()
}

fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn check_validity(path: &Path, pem: &str) -> Result<(), CertError> {
    let parse_err = |reason: String| CertError::Parse {
        path: path.to_path_buf(),
        reason,
    };
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| CertError::Pem {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| parse_err(e.to_string()))?;
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    if validity.not_after < now {
        return Err(CertError::Expired {
            path: path.to_path_buf(),
            not_after: validity.not_after.to_string(),
        });
    }
    if validity.not_before > now {
        return Err(CertError::NotYetValid {
            path: path.to_path_buf(),
            not_before: validity.not_before.to_string(),
        });
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Written to a temporary file and renamed, so a reader never sees a half-written key.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
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
        let mut params = serving_params(parse_sans(&[])?)?;
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
