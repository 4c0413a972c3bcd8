//! Generating a CA (or reusing the one on disk) and a serving certificate signed by it.

use std::fs;
use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use super::load::check_validity;
use super::{
    CA_CERT, CA_KEY, CertDir, CertError, CertOutcome, TLS_CERT, TLS_KEY, pair_state, read,
    write_file,
};

impl CertDir {
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
            let params = ca_params(self.lifetimes().ca)?;
            let cert = params.self_signed(&key)?;
            write_file(&self.path(CA_KEY), key.serialize_pem().as_bytes(), 0o600)?;
            write_file(&self.path(CA_CERT), cert.pem().as_bytes(), 0o644)?;
            Issuer::new(params, key)
        };
        let serving_key = KeyPair::generate()?;
        let serving = serving_params(san_types, self.lifetimes().serving)?
            .signed_by(&serving_key, &issuer)?;
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
}

pub(super) fn ca_params(lifetime: std::time::Duration) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    let now = OffsetDateTime::now_utc();
    // A distinct name per CA: during a rotation both are trusted, and operators (and issuer
    // checks) can tell them apart.
    name.push(
        DnType::CommonName,
        format!(
            "tollgate CA {}.{:09}",
            now.unix_timestamp(),
            now.nanosecond()
        ),
    );
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, now, lifetime);
    Ok(params)
}

fn set_validity(
    params: &mut CertificateParams,
    now: OffsetDateTime,
    lifetime: std::time::Duration,
) {
    params.not_before = now - backdate(lifetime);
    params.not_after = now + lifetime;
}

pub(super) fn serving_params(
    sans: Vec<SanType>,
    lifetime: std::time::Duration,
) -> Result<CertificateParams, CertError> {
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
    set_validity(&mut params, OffsetDateTime::now_utc(), lifetime);
    Ok(params)
}

/// localhost, 127.0.0.1 and ::1 always; each extra name is an IP address or a DNS name.
pub(super) fn parse_sans(extra: &[String]) -> Result<Vec<SanType>, CertError> {
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

/// Backdating covers clock skew between this host and the apiserver's, but never more than a
/// tenth of a short lifetime.
fn backdate(lifetime: std::time::Duration) -> std::time::Duration {
    (lifetime / 10).min(std::time::Duration::from_secs(3600))
}
