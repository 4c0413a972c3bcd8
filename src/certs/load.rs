//! Loading the serving pair for rustls, with the date and key-match checks.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::{CertDir, CertError, TLS_CERT, TLS_KEY, read};

impl CertDir {
    /// The serving chain and key as rustls uses them, after checking dates and that they match.
    pub fn load_serving_key(&self) -> Result<Arc<CertifiedKey>, CertError> {
        let cert_path = self.path(TLS_CERT);
        let key_path = self.path(TLS_KEY);
        let cert_pem = read(&cert_path)?;
        check_validity(&cert_path, &cert_pem)?;
        let chain = certificates(&cert_path, &cert_pem)?;
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
}

/// Every certificate of a PEM text (at least one), in order.
fn certificates(path: &Path, pem: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

pub(super) fn check_validity(path: &Path, pem: &str) -> Result<(), CertError> {
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

/// The CAs trusted to sign client certificates (`serve --client-ca`): every certificate in the
/// PEM file, each checked by rustls as a trust anchor.
pub fn load_client_roots(path: &Path) -> Result<rustls::RootCertStore, CertError> {
    let certs = certificates(path, &read(path)?)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| CertError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}
