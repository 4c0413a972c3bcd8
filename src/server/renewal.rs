//! Certificate upkeep while serving: the serving certificate is renewed from tollgate's own CA at
//! two thirds of its life; expiry times go to metrics, and a warning to the log when either
//! certificate nears its end.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use crate::certs::{CA_NEXT_CERT, CA_PREVIOUS_CERT, CertDir, RotationPhase, Validity};
use crate::metrics::Metrics;

/// How often the same expiry warning may repeat.
const WARN_EVERY: Duration = Duration::from_secs(3600);

pub struct CertUpkeep {
    dir: CertDir,
    sans: Vec<String>,
    warn_within: Duration,
    last_warned: HashMap<&'static str, Instant>,
}

impl CertUpkeep {
    pub fn new(dir: CertDir, sans: Vec<String>, warn_within: Duration) -> Self {
        Self {
            dir,
            sans,
            warn_within,
            last_warned: HashMap::new(),
        }
    }

    pub fn tick(&mut self, metrics: &Metrics) {
        let now = SystemTime::now();
        let due = self
            .dir
            .serving_validity()
            .is_ok_and(|serving| serving.renewal_due(now));
        if due && self.dir.owns_ca() && self.dir.serving_issued_here() {
            match self.dir.renew_serving(&self.sans) {
                Ok(fresh) => {
                    tracing::info!(
                        expires_unix = fresh.expires_unix(),
                        "serving certificate renewed from the CA"
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "serving certificate due for renewal, but renewal failed");
                }
            }
        }
        for (which, validity) in [
            ("serving", self.dir.serving_validity()),
            ("ca", self.dir.ca_validity()),
        ] {
            let Ok(validity) = validity else { continue };
            metrics.set_certificate_expiry(which, validity.expires_unix());
            let _ = self.warn_if_near(which, validity, now);
        }
    }

    /// With registration: one step of a CA rotation when it is due, each step only once the
    /// apiserver has the bundle it relies on (`published`) and the previous step has had
    /// `overlap` to reach every replica and apiserver.
    pub fn advance_ca_rotation(&mut self, published: bool, overlap: Duration) {
        let age = |name: &str| {
            std::fs::metadata(self.dir.path(name))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default()
        };
        let due = match self.dir.rotation_phase() {
            RotationPhase::Staged => published && age(CA_NEXT_CERT) >= overlap,
            RotationPhase::Switched => age(CA_PREVIOUS_CERT) >= overlap,
            RotationPhase::Idle => {
                self.dir.owns_ca()
                    && self.dir.serving_issued_here()
                    && self
                        .dir
                        .ca_validity()
                        .is_ok_and(|ca| ca.renewal_due(SystemTime::now()))
            }
        };
        if !due {
            return;
        }
        match self.dir.rotate_ca_step(&self.sans) {
            Ok(step) => tracing::info!(step = ?step, "CA rotation: {}", step.describe()),
            Err(e) => tracing::error!(error = %e, "CA rotation step failed; retrying later"),
        }
    }

    /// Returns whether it warned.
    fn warn_if_near(&mut self, which: &'static str, validity: Validity, now: SystemTime) -> bool {
        let remaining = validity.remaining(now);
        if remaining > self.warn_within {
            return false;
        }
        if self
            .last_warned
            .get(which)
            .is_some_and(|at| at.elapsed() < WARN_EVERY)
        {
            return false;
        }
        self.last_warned.insert(which, Instant::now());
        let advice = match which {
            "ca" => "rotate it: `tollgate certs --rotate-ca` (see the README for the order)",
            _ if self.dir.owns_ca() => {
                "it is renewed automatically from the CA; check the log for renewal errors"
            }
            _ => "replace it: tollgate does not hold the key of the CA that signed it",
        };
        tracing::warn!(
            certificate = which,
            remaining_seconds = remaining.as_secs(),
            expires_unix = validity.expires_unix(),
            "certificate expires soon; {advice}"
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_within_the_window_and_at_most_hourly() {
        let mut upkeep = CertUpkeep::new(
            CertDir::new("/nonexistent"),
            Vec::new(),
            Duration::from_secs(30 * 24 * 3600),
        );
        let now = SystemTime::now();
        let far = Validity {
            not_before: now,
            not_after: now + Duration::from_secs(90 * 24 * 3600),
        };
        let near = Validity {
            not_before: now,
            not_after: now + Duration::from_secs(10 * 24 * 3600),
        };
        assert!(!upkeep.warn_if_near("serving", far, now));
        assert!(upkeep.warn_if_near("serving", near, now));
        assert!(
            !upkeep.warn_if_near("serving", near, now),
            "repeated within the hour"
        );
        assert!(
            upkeep.warn_if_near("ca", near, now),
            "each certificate on its own"
        );
    }
}
