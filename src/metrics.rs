//! Prometheus metrics served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub decision: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DigestLabels {
    pub digest: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    pub certificate: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<EndpointLabels, Histogram>,
    pub in_flight: Gauge,
    pub policy_load_errors: Counter,
    pub policies_loaded: Gauge,
    /// 1 for the digest of the policy set in force (see `Store::digest`).
    policy_set: Family<DigestLabels, Gauge>,
    /// Registration attempts the apiserver refused or could not take (`serve --register`).
    pub registration_failures: Counter,
    /// 1 while the last registration attempt failed.
    pub registration_failing: Gauge,
    pub connections_open: Gauge,
    /// Connections turned away: `limit` (answered 503), `dropped` (beyond the overflow slots),
    /// `handshake_failed`, `handshake_timeout`.
    pub connections_refused: Family<ReasonLabels, Counter>,
    /// Connections asked to reconnect after their maximum age or request count.
    pub connections_retired: Counter,
    /// Unix time at which the serving certificate and the CA expire.
    pub certificate_expiry: Family<CertificateLabels, Gauge>,
    /// The request counters and latency histograms already looked up (see `ReviewHandles`).
    handles: ReviewHandles,
}

/// One endpoint's and decision's counter and histogram, shared with their families.
#[derive(Debug)]
struct Handles {
    endpoint: &'static str,
    decision: &'static str,
    requests: Counter,
    latency: Histogram,
}

/// Every review's metrics fetched from the families once: a family lookup hashes the labels
/// with SipHash and takes a read lock shared by all threads (about 800 instructions a review
/// in a profile); a scan of a few filled slots costs a fraction of that and writes nothing.
/// Slots fill in order; a slot lost to a concurrent filler only means one more slot for the
/// same pair (its handles share the family's metrics).
#[derive(Debug, Default)]
struct ReviewHandles {
    slots: [std::sync::OnceLock<Handles>; 24],
}

impl ReviewHandles {
    fn find(&self, endpoint: &str, decision: &str) -> Option<&Handles> {
        self.slots
            .iter()
            .map_while(std::sync::OnceLock::get)
            .find(|h| h.endpoint == endpoint && h.decision == decision)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tollgate");
        let requests = Family::<RequestLabels, Counter>::default();
        // 0.5 ms .. ~4 s: admission answers must stay far below the apiserver's 10 s default.
        let latency = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        let in_flight = Gauge::default();
        let policy_load_errors = Counter::default();
        let policies_loaded = Gauge::default();
        let policy_set = Family::<DigestLabels, Gauge>::default();
        registry.register(
            "policy_set_info",
            "The policy set in force, by the digest of its files",
            policy_set.clone(),
        );
        registry.register(
            "requests",
            "Requests answered, by endpoint and decision",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request received to response ready",
            latency.clone(),
        );
        registry.register(
            "in_flight_requests",
            "Requests being processed",
            in_flight.clone(),
        );
        registry.register(
            "policy_load_errors",
            "Problems found while loading policy files",
            policy_load_errors.clone(),
        );
        registry.register(
            "policies_loaded",
            "Policies in the active set",
            policies_loaded.clone(),
        );
        let registration_failures = Counter::default();
        let registration_failing = Gauge::default();
        registry.register(
            "registration_failures",
            "Registration attempts that failed (serve --register)",
            registration_failures.clone(),
        );
        registry.register(
            "registration_failing",
            "1 while the last registration attempt failed",
            registration_failing.clone(),
        );
        let connections_open = Gauge::default();
        let connections_refused = Family::<ReasonLabels, Counter>::default();
        let connections_retired = Counter::default();
        registry.register(
            "connections_open",
            "TLS connections being served",
            connections_open.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections turned away, by reason",
            connections_refused.clone(),
        );
        registry.register(
            "connections_retired",
            "Connections asked to reconnect after their maximum age or request count",
            connections_retired.clone(),
        );
        let certificate_expiry = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "Unix time at which the certificate expires (serving, ca)",
            certificate_expiry.clone(),
        );
        Self {
            handles: ReviewHandles::default(),
            certificate_expiry,
            connections_open,
            connections_refused,
            connections_retired,
            registry,
            requests,
            latency,
            in_flight,
            policy_load_errors,
            policies_loaded,
            policy_set,
            registration_failures,
            registration_failing,
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Records the set in force: its size and its digest (the previous digest's series goes).
    pub fn set_policy_set(&self, store: &tollgate_engine::Store) {
        self.policies_loaded.set(store.policies().len() as i64);
        self.policy_set.clear();
        self.policy_set
            .get_or_create(&DigestLabels {
                digest: store.digest().to_string(),
            })
            .set(1);
    }

    pub fn set_certificate_expiry(&self, certificate: &'static str, unix: i64) {
        self.certificate_expiry
            .get_or_create(&CertificateLabels { certificate })
            .set(unix);
    }

    pub fn refuse_connection(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Labels are static strings, so counting a request allocates nothing.
    pub fn record(&self, endpoint: &'static str, decision: &'static str, seconds: f64) {
        if let Some(handles) = self.handles.find(endpoint, decision) {
            handles.requests.inc();
            handles.latency.observe(seconds);
            return;
        }
        let requests = self
            .requests
            .get_or_create(&RequestLabels { endpoint, decision })
            .clone();
        let latency = self
            .latency
            .get_or_create(&EndpointLabels { endpoint })
            .clone();
        requests.inc();
        latency.observe(seconds);
        let mut handles = Handles {
            endpoint,
            decision,
            requests,
            latency,
        };
        for slot in &self.handles.slots {
            match slot.set(handles) {
                Ok(()) => return,
                Err(taken) => handles = taken,
            }
        }
        // All slots taken: this pair keeps going through the families.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests_line(text: &str, endpoint: &str, decision: &str) -> Option<String> {
        let wanted =
            format!("tollgate_requests_total{{endpoint=\"{endpoint}\",decision=\"{decision}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&wanted).map(str::to_string))
    }

    #[test]
    fn every_review_is_counted_in_the_families_whatever_path_it_took() {
        let metrics = Metrics::default();
        // More pairs than cached slots: the rest go through the families every time.
        let endpoints: Vec<&'static str> = (0..30)
            .map(|i| &*Box::leak(format!("e{i}").into_boxed_str()))
            .collect();
        for round in 0..3 {
            for (i, endpoint) in endpoints.iter().enumerate() {
                if i <= round * 12 {
                    metrics.record(endpoint, "allowed", 0.001);
                }
            }
        }
        let text = metrics.encode().unwrap_or_default();
        for (i, endpoint) in endpoints.iter().enumerate() {
            let expected = (0..3).filter(|round| i <= round * 12).count();
            let expected = (expected > 0).then(|| expected.to_string());
            assert_eq!(
                requests_line(&text, endpoint, "allowed"),
                expected,
                "{endpoint}"
            );
        }
        assert!(text.contains("tollgate_request_duration_seconds_count{endpoint=\"e0\"} 3"));
    }
}
