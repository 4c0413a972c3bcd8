//! Reconciler metrics (Prometheus text on `/metrics`) and the readiness report per kind.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::status::Phase;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub kind: String,
    pub decision: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub kind: String,
    pub phase: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DigestLabels {
    pub digest: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: &'static str,
}

/// The policy set in force and the last one refused, for `/readyz`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySetReport {
    /// Digest of the files of the set in force (`Store::digest`).
    pub in_force: String,
    /// The kinds it manages.
    pub kinds: Vec<String>,
    /// Why the last changed set was refused, while the files stay as they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
}

/// How a managed kind is doing, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase", tag = "state", content = "detail")]
pub enum KindState {
    /// Waiting for the CRD to be served (retried).
    Missing(String),
    Running,
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub errors: Family<KindLabels, Counter>,
    pub rollbacks: Family<KindLabels, Counter>,
    pub objects: Family<PhaseLabels, Gauge>,
    pub kind_missing: Family<KindLabels, Gauge>,
    pub leader: Gauge,
    policy_set: Family<DigestLabels, Gauge>,
    pub policy_reloads: Family<ReloadLabels, Counter>,
    policy_report: Mutex<PolicySetReport>,
    phases: Mutex<HashMap<(String, String), Phase>>,
    kinds: Mutex<BTreeMap<String, KindState>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tollgate_reconciler");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let errors = Family::<KindLabels, Counter>::default();
        let rollbacks = Family::<KindLabels, Counter>::default();
        let objects = Family::<PhaseLabels, Gauge>::default();
        let kind_missing = Family::<KindLabels, Gauge>::default();
        let leader = Gauge::default();
        registry.register(
            "reconciles",
            "Reconciles by kind and decision",
            reconciles.clone(),
        );
        registry.register("errors", "Failed reconciles by kind", errors.clone());
        registry.register(
            "rollbacks",
            "Rollbacks carried out, by kind",
            rollbacks.clone(),
        );
        registry.register(
            "objects",
            "Managed objects by kind and phase",
            objects.clone(),
        );
        registry.register(
            "kind_missing",
            "1 while a kind's CRD is not served (retried)",
            kind_missing.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the lease",
            leader.clone(),
        );
        let policy_set = Family::<DigestLabels, Gauge>::default();
        let policy_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "policy_set_info",
            "The policy set in force, by the digest of its files",
            policy_set.clone(),
        );
        registry.register(
            "policy_reloads",
            "Changed policy sets, applied or rejected (the last good set stays in force)",
            policy_reloads.clone(),
        );
        Self {
            registry,
            policy_set,
            policy_reloads,
            policy_report: Mutex::default(),
            reconciles,
            errors,
            rollbacks,
            objects,
            kind_missing,
            leader,
            phases: Mutex::default(),
            kinds: Mutex::default(),
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Records an object's phase (`None` once it is gone) and refreshes the per-phase gauges.
    /// Moves one object between the per-phase gauges (constant time: called on every reconcile).
    pub fn set_phase(&self, kind: &str, key: &str, phase: Option<Phase>) {
        let mut phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        let id = (kind.to_string(), key.to_string());
        let before = match phase {
            Some(p) => phases.insert(id, p),
            None => phases.remove(&id),
        };
        if before == phase {
            return;
        }
        let gauge = |p: Phase| {
            self.objects.get_or_create(&PhaseLabels {
                kind: kind.to_string(),
                phase: p.as_str().to_string(),
            })
        };
        // Every phase of a kind is exported, zeros included, once the kind has an object.
        for p in Phase::ALL {
            let g = gauge(p);
            if before == Some(p) {
                g.dec();
            }
            if phase == Some(p) {
                g.inc();
            }
        }
    }

    pub fn set_kind_state(&self, kind: &str, state: KindState) {
        let missing = matches!(state, KindState::Missing(_));
        self.kind_missing
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .set(i64::from(missing));
        self.kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(kind.to_string(), state);
    }

    /// A kind no longer managed leaves the readiness report and the gauges.
    pub fn forget_kind(&self, kind: &str) {
        self.kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(kind);
        self.kind_missing.remove(&KindLabels {
            kind: kind.to_string(),
        });
        let mut phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        phases.retain(|(k, _), _| k != kind);
        for p in Phase::ALL {
            self.objects.remove(&PhaseLabels {
                kind: kind.to_string(),
                phase: p.as_str().to_string(),
            });
        }
    }

    /// The set now in force (a reload applied it).
    pub fn policy_set_applied(&self, digest: &str, kinds: Vec<String>) {
        self.policy_set.clear();
        self.policy_set
            .get_or_create(&DigestLabels {
                digest: digest.to_string(),
            })
            .set(1);
        *self.policy_report.lock().unwrap_or_else(|p| p.into_inner()) = PolicySetReport {
            in_force: digest.to_string(),
            kinds,
            rejected: None,
        };
    }

    /// A changed set was refused; the one in force stays.
    pub fn policy_set_rejected(&self, reason: String) {
        self.policy_reloads
            .get_or_create(&ReloadLabels { result: "rejected" })
            .inc();
        self.policy_report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rejected = Some(reason);
    }

    pub fn policy_report(&self) -> PolicySetReport {
        self.policy_report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn kind_states(&self) -> BTreeMap<String, KindState> {
        self.kinds.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// An encoded registry as a `/metrics` answer: OpenMetrics text, or a 500 saying why not.
pub fn openmetrics_response(encoded: Result<String, std::fmt::Error>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match encoded {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str, phase: &str) -> String {
        let wanted = format!("tollgate_reconciler_objects{{kind=\"K\",phase=\"{phase}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&wanted))
            .unwrap_or("absent")
            .to_string()
    }

    #[test]
    fn objects_move_between_phases_and_leave_when_deleted() {
        let metrics = Metrics::default();
        metrics.set_phase("K", "ns/a", Some(Phase::Progressing));
        metrics.set_phase("K", "ns/b", Some(Phase::Progressing));
        metrics.set_phase("K", "ns/a", Some(Phase::Ready));
        metrics.set_phase("K", "ns/a", Some(Phase::Ready));
        let text = metrics.encode().unwrap_or_default();
        assert_eq!(line(&text, "Progressing"), "1");
        assert_eq!(line(&text, "Ready"), "1");
        assert_eq!(line(&text, "Failed"), "0");
        metrics.set_phase("K", "ns/b", None);
        metrics.set_phase("K", "ns/gone", None);
        let text = metrics.encode().unwrap_or_default();
        assert_eq!(line(&text, "Progressing"), "0");
        assert_eq!(line(&text, "Ready"), "1");
    }
}
