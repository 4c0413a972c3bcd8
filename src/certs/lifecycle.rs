//! Certificate lifetimes, when a certificate is due for renewal, and renewing: the serving
//! certificate from the CA in the directory, and the CA itself by a staged rotation whose every
//! step keeps both the old and the new CA trusted until the serving certificate has moved over.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{Issuer, KeyPair};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::OffsetDateTime;

use super::generate::{ca_params, parse_sans, serving_params};
use super::{CA_CERT, CA_KEY, CertDir, CertError, TLS_CERT, TLS_KEY, read, write_file};

/// The CA that will sign next, during a CA rotation (`ca.crt` then trusts both).
pub const CA_NEXT_CERT: &str = "ca-next.crt";
pub const CA_NEXT_KEY: &str = "ca-next.key";
/// The CA that signed before the rotation, still trusted until the rotation completes.
pub const CA_PREVIOUS_CERT: &str = "ca-previous.crt";

/// How long generated certificates are valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub serving: Duration,
    pub ca: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            serving: Duration::from_secs(365 * DAY),
            ca: Duration::from_secs(3650 * DAY),
        }
    }
}

const DAY: u64 = 24 * 3600;

/// `90d`, `12h`, `30m`, `45s`, or several together (`1d12h`).
pub fn parse_lifetime(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration like 90d, 12h, 30m or 45s");
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'd' => DAY,
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(invalid()),
        };
        let value: u64 = digits.parse().map_err(|_| invalid())?;
        digits.clear();
        total = value
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(invalid)?;
    }
    if !digits.is_empty() || total == 0 {
        return Err(invalid());
    }
    Ok(Duration::from_secs(total))
}

/// A certificate's validity window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// Read from the first certificate of a PEM file.
    pub fn of_file(path: &Path) -> Result<Self, CertError> {
        let pem = read(path)?;
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| CertError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| CertError::Parse {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let at = |t: x509_parser::time::ASN1Time| {
            let seconds = t.timestamp();
            if seconds >= 0 {
                UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs())
            } else {
                UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs())
            }
        };
        Ok(Self {
            not_before: at(cert.validity().not_before),
            not_after: at(cert.validity().not_after),
        })
    }

    /// Two thirds of the window have passed.
    pub fn renewal_due(&self, now: SystemTime) -> bool {
        let total = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        now.duration_since(self.not_before)
            .is_ok_and(|elapsed| elapsed >= total * 2 / 3)
    }

    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or_default()
    }

    pub fn expires_unix(&self) -> i64 {
        self.not_after
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

/// Where a CA rotation stands, by what the directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationPhase {
    /// No rotation under way.
    Idle,
    /// `ca-next.*` exist: both CAs trusted, the old one signs.
    Staged,
    /// `ca-previous.crt` exists: both trusted, the new one signs.
    Switched,
}

/// What one `certs --rotate-ca` (or one automatic step) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationStep {
    /// A new CA exists next to the old one; `ca.crt` trusts both, the old one still signs.
    Staged,
    /// The serving certificate now comes from the new CA; `ca.crt` still trusts the old one.
    Switched,
    /// The old CA left `ca.crt`.
    Completed,
}

impl RotationStep {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Staged => {
                "staged a new CA: ca.crt now holds the old and the new CA (the old one still signs). Next: publish ca.crt as the caBundle everywhere (tollgate manifests … | kubectl apply -f -), then run --rotate-ca again"
            }
            Self::Switched => {
                "switched: the serving certificate is now signed by the new CA; ca.crt still trusts the old one. Next: once every replica serves the new certificate, run --rotate-ca again"
            }
            Self::Completed => {
                "completed: the old CA left ca.crt. Next: publish ca.crt as the caBundle again to drop the old CA there too"
            }
        }
    }
}

/// The first PEM certificate block of a bundle (the signer comes first).
fn first_certificate(bundle: &str) -> &str {
    const END: &str = "-----END CERTIFICATE-----";
    match bundle.find(END) {
        Some(end) => &bundle[..end + END.len()],
        None => bundle,
    }
}

fn issuer_from(
    dir: &CertDir,
    cert: &str,
    key: &str,
) -> Result<Issuer<'static, KeyPair>, CertError> {
    let key_pem = read(&dir.path(key))?;
    let bundle = read(&dir.path(cert))?;
    Ok(Issuer::from_ca_cert_pem(
        first_certificate(&bundle),
        KeyPair::from_pem(&key_pem)?,
    )?)
}

fn to_offset(time: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(time)
}

impl CertDir {
    pub fn serving_validity(&self) -> Result<Validity, CertError> {
        Validity::of_file(&self.path(TLS_CERT))
    }

    pub fn ca_validity(&self) -> Result<Validity, CertError> {
        Validity::of_file(&self.path(CA_CERT))
    }

    /// Whether tollgate holds the CA key here (and so may issue serving certificates).
    pub fn owns_ca(&self) -> bool {
        self.path(CA_KEY).exists() && self.path(CA_CERT).exists()
    }

    /// Whether the serving certificate was signed by the CA that signs here now (and not, say,
    /// provided by an operator from another CA).
    pub fn serving_issued_here(&self) -> bool {
        let name = |path: &Path, issuer: bool| -> Option<String> {
            let pem = read(path).ok()?;
            let der = CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
            let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
            Some(
                if issuer {
                    cert.issuer()
                } else {
                    cert.subject()
                }
                .to_string(),
            )
        };
        let issuer = name(&self.path(TLS_CERT), true);
        issuer.is_some() && issuer == name(&self.path(CA_CERT), false)
    }

    /// A new serving pair from the CA in the directory (never valid beyond the CA itself).
    pub fn renew_serving(&self, sans: &[String]) -> Result<Validity, CertError> {
        let issuer = issuer_from(self, CA_CERT, CA_KEY)?;
        let ca = self.ca_validity()?;
        self.issue_serving(&issuer, ca, sans)?;
        self.serving_validity()
    }

    fn issue_serving(
        &self,
        issuer: &Issuer<'static, KeyPair>,
        ca: Validity,
        sans: &[String],
    ) -> Result<(), CertError> {
        let mut params = serving_params(parse_sans(sans)?, self.lifetimes().serving)?;
        let ca_end = to_offset(ca.not_after);
        if params.not_after > ca_end {
            params.not_after = ca_end;
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, issuer)?;
        // Key first: a reload that sees the new key with the old certificate refuses the pair
        // and keeps serving; the next look finds both.
        write_file(&self.path(TLS_KEY), key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&self.path(TLS_CERT), cert.pem().as_bytes(), 0o644)?;
        Ok(())
    }

    pub fn rotation_phase(&self) -> RotationPhase {
        if self.path(CA_NEXT_KEY).exists() {
            RotationPhase::Staged
        } else if self.path(CA_PREVIOUS_CERT).exists() {
            RotationPhase::Switched
        } else {
            RotationPhase::Idle
        }
    }

    /// One step of a CA rotation, decided by `rotation_phase`.
    pub fn rotate_ca_step(&self, sans: &[String]) -> Result<RotationStep, CertError> {
        let phase = self.rotation_phase();
        if phase == RotationPhase::Staged {
            // Switch: the new CA signs from now on; the old one stays trusted.
            let next = read(&self.path(CA_NEXT_CERT))?;
            let old_bundle = read(&self.path(CA_CERT))?;
            let old = first_certificate(&old_bundle).to_string();
            let issuer = issuer_from(self, CA_NEXT_CERT, CA_NEXT_KEY)?;
            let next_validity = Validity::of_file(&self.path(CA_NEXT_CERT))?;
            self.issue_serving(&issuer, next_validity, sans)?;
            write_file(&self.path(CA_PREVIOUS_CERT), old.as_bytes(), 0o644)?;
            write_file(
                &self.path(CA_CERT),
                format!("{}\n{}\n", next.trim_end(), old.trim_end()).as_bytes(),
                0o644,
            )?;
            let next_key = read(&self.path(CA_NEXT_KEY))?;
            write_file(&self.path(CA_KEY), next_key.as_bytes(), 0o600)?;
            remove(&self.path(CA_NEXT_KEY))?;
            remove(&self.path(CA_NEXT_CERT))?;
            return Ok(RotationStep::Switched);
        }
        if phase == RotationPhase::Switched {
            let bundle = read(&self.path(CA_CERT))?;
            let current = first_certificate(&bundle).to_string();
            write_file(
                &self.path(CA_CERT),
                format!("{}\n", current.trim_end()).as_bytes(),
                0o644,
            )?;
            remove(&self.path(CA_PREVIOUS_CERT))?;
            return Ok(RotationStep::Completed);
        }
        if !self.owns_ca() {
            return Err(CertError::NoCaKey(self.path(CA_KEY)));
        }
        let key = KeyPair::generate()?;
        let cert = ca_params(self.lifetimes().ca)?.self_signed(&key)?;
        write_file(
            &self.path(CA_NEXT_KEY),
            key.serialize_pem().as_bytes(),
            0o600,
        )?;
        write_file(&self.path(CA_NEXT_CERT), cert.pem().as_bytes(), 0o644)?;
        let bundle = read(&self.path(CA_CERT))?;
        write_file(
            &self.path(CA_CERT),
            format!("{}\n{}\n", bundle.trim_end(), cert.pem().trim_end()).as_bytes(),
            0o644,
        )?;
        Ok(RotationStep::Staged)
    }
}

fn remove(path: &Path) -> Result<(), CertError> {
    std::fs::remove_file(path).map_err(|source| CertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_parse_in_days_hours_minutes_seconds() {
        assert_eq!(parse_lifetime("90d"), Ok(Duration::from_secs(90 * DAY)));
        assert_eq!(parse_lifetime("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_lifetime("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(
            parse_lifetime("1d12h30m"),
            Ok(Duration::from_secs(DAY + 12 * 3600 + 1800))
        );
        for bad in ["", "0s", "12", "d", "1y", "-5s", "99999999999999999999d"] {
            assert!(parse_lifetime(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn renewal_is_due_after_two_thirds_of_the_window() {
        let start = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let v = Validity {
            not_before: start,
            not_after: start + Duration::from_secs(300),
        };
        assert!(!v.renewal_due(start + Duration::from_secs(199)));
        assert!(v.renewal_due(start + Duration::from_secs(200)));
        assert_eq!(
            v.remaining(start + Duration::from_secs(250)),
            Duration::from_secs(50)
        );
        assert_eq!(
            v.remaining(start + Duration::from_secs(400)),
            Duration::ZERO
        );
    }

    fn subjects(pem: &str) -> Vec<String> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .filter_map(Result::ok)
            .filter_map(|der| {
                x509_parser::parse_x509_certificate(&der)
                    .ok()
                    .map(|(_, c)| c.subject().to_string())
            })
            .collect()
    }

    /// Every CA gets a distinct name (it carries its issue time), so the issuer name tells
    /// which CA signed.
    fn issuer_of_serving(dir: &CertDir) -> String {
        let pem = read(&dir.path(TLS_CERT)).unwrap_or_default();
        CertificateDer::from_pem_slice(pem.as_bytes())
            .ok()
            .and_then(|d| {
                x509_parser::parse_x509_certificate(&d)
                    .ok()
                    .map(|(_, c)| c.issuer().to_string())
            })
            .unwrap_or_default()
    }

    #[test]
    fn serving_renewal_and_a_full_ca_rotation_keep_the_chain_trusted_at_every_step()
    -> Result<(), CertError> {
        let tmp = tempfile::tempdir().map_err(|source| CertError::Io {
            path: "tempdir".into(),
            source,
        })?;
        let dir = CertDir::new(tmp.path()).with_lifetimes(Lifetimes {
            serving: Duration::from_secs(3600),
            ca: Duration::from_secs(7200),
        });
        dir.ensure(&[])?;
        let first = dir.serving_validity()?;
        let ca = dir.ca_validity()?;
        assert!(first.not_after <= ca.not_after);
        let before = read(&dir.path(TLS_CERT))?;
        let renewed = dir.renew_serving(&[])?;
        assert_ne!(read(&dir.path(TLS_CERT))?, before);
        assert!(renewed.not_after <= ca.not_after, "never beyond the CA");
        dir.load_serving_key()?;

        let old_ca = subjects(&read(&dir.path(CA_CERT))?);
        assert_eq!(old_ca.len(), 1);
        let signer_before = issuer_of_serving(&dir);

        assert_eq!(dir.rotate_ca_step(&[])?, RotationStep::Staged);
        let staged = subjects(&read(&dir.path(CA_CERT))?);
        assert_eq!(staged.len(), 2, "old and new CA trusted");
        assert_eq!(staged[0], old_ca[0], "the old CA still signs");
        assert_eq!(issuer_of_serving(&dir), signer_before);

        assert_eq!(dir.rotate_ca_step(&[])?, RotationStep::Switched);
        let switched = subjects(&read(&dir.path(CA_CERT))?);
        assert_eq!(switched.len(), 2);
        assert_eq!(switched[1], old_ca[0], "the old CA is still trusted");
        assert_ne!(issuer_of_serving(&dir), signer_before, "the new CA signs");
        dir.load_serving_key()?;
        // Renewal after the switch signs with the new CA.
        dir.renew_serving(&[])?;
        dir.load_serving_key()?;

        assert_eq!(dir.rotate_ca_step(&[])?, RotationStep::Completed);
        let completed = subjects(&read(&dir.path(CA_CERT))?);
        assert_eq!(completed, vec![switched[0].clone()]);
        assert!(!dir.path(CA_NEXT_KEY).exists() && !dir.path(CA_PREVIOUS_CERT).exists());
        // And the cycle starts again.
        assert_eq!(dir.rotate_ca_step(&[])?, RotationStep::Staged);
        Ok(())
    }
}
