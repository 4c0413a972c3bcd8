//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas exactly one
//! writes. The leader renews every `retry_period`; it counts itself leader only until
//! `renew_deadline` after its last successful renewal, which is shorter than the lease duration,
//! so a leader cut off from the apiserver stops writing before anyone else may take over.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This replica's identity (pod name or host name plus a random suffix).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub fn new(name: &str, namespace: &str, identity: &str) -> Self {
        Self {
            name: name.to_string(),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Whether this replica may write now; cheap to ask before every write.
#[derive(Debug)]
pub struct Leadership {
    valid_until: std::sync::Mutex<Option<Instant>>,
    /// Bumped each time this replica becomes leader, so controllers can re-examine everything.
    epoch: watch::Sender<u64>,
    elected: AtomicBool,
}

impl Leadership {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            valid_until: std::sync::Mutex::new(None),
            epoch: watch::channel(0).0,
            elected: AtomicBool::new(false),
        })
    }

    /// A replica that never competes (single-process use and tests) is always leader.
    pub fn always() -> Arc<Self> {
        let me = Self::new();
        me.extend(Instant::now() + Duration::from_secs(u32::MAX as u64));
        me
    }

    pub fn is_leader(&self) -> bool {
        let guard = self.valid_until.lock().unwrap_or_else(|p| p.into_inner());
        guard.is_some_and(|until| Instant::now() < until)
    }

    /// Which term of leadership this is (0 before the first).
    pub fn epoch(&self) -> u64 {
        *self.epoch.borrow()
    }

    pub fn epochs(&self) -> watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    fn extend(&self, until: Instant) {
        *self.valid_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
        if !self.elected.swap(true, Ordering::SeqCst) {
            self.epoch.send_modify(|e| *e += 1);
        }
    }

    fn step_down(&self) {
        *self.valid_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.elected.store(false, Ordering::SeqCst);
    }
}

/// What one attempt found, for logs and the lease-state metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    Leading,
    Following(String),
}

/// Competes for the lease until `shutdown`; a leader that shuts down releases the lease so a
/// follower takes over at once instead of after the lease duration.
pub async fn run(
    client: Client,
    config: LeaseConfig,
    leadership: Arc<Leadership>,
    on_state: impl Fn(&LeaseState) + Send,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut last: Option<LeaseState> = None;
    tokio::pin!(shutdown);
    loop {
        let attempt = Instant::now();
        match try_acquire(&api, &config).await {
            Ok(state) => {
                if state == LeaseState::Leading {
                    leadership.extend(attempt + config.renew_deadline);
                } else {
                    leadership.step_down();
                }
                if last.as_ref() != Some(&state) {
                    match &state {
                        LeaseState::Leading => {
                            tracing::info!(lease = %config.name, identity = %config.identity, "became leader")
                        }
                        LeaseState::Following(holder) => {
                            tracing::info!(lease = %config.name, %holder, "following")
                        }
                    }
                    on_state(&state);
                    last = Some(state);
                }
            }
            Err(e) => {
                // Keep the current term until renew_deadline runs out; `is_leader` enforces it.
                tracing::warn!(lease = %config.name, error = %e, "lease renewal failed");
            }
        }
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(config.retry_period) => {}
        }
    }
    if leadership.is_leader() {
        leadership.step_down();
        if let Err(e) = release(&api, &config).await {
            tracing::warn!(error = %e, "could not release the lease");
        }
    }
}

async fn try_acquire(api: &Api<Lease>, config: &LeaseConfig) -> Result<LeaseState, kube::Error> {
    let now = Timestamp::now();
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(held_by(config, now, now, 0)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(LeaseState::Leading),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                Ok(LeaseState::Following("<unknown>".into()))
            }
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0.as_second())
        .unwrap_or(0);
    let expired = holder.is_empty() || renewed + duration < now.as_second();
    let next = if holder == config.identity {
        let acquired = spec.acquire_time.as_ref().map_or(now, |t| t.0);
        held_by(config, acquired, now, spec.lease_transitions.unwrap_or(0))
    } else if expired {
        held_by(config, now, now, spec.lease_transitions.unwrap_or(0) + 1)
    } else {
        return Ok(LeaseState::Following(holder));
    };
    lease.spec = Some(next);
    // `replace` carries the resourceVersion just read: two contenders cannot both win.
    match api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(LeaseState::Leading),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(LeaseState::Following(holder)),
        Err(e) => Err(e),
    }
}

fn held_by(
    config: &LeaseConfig,
    acquired: Timestamp,
    renewed: Timestamp,
    transitions: i32,
) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(config.lease_duration.as_secs() as i32),
        acquire_time: Some(MicroTime(acquired)),
        renew_time: Some(MicroTime(renewed)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

async fn release(api: &Api<Lease>, config: &LeaseConfig) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        return Ok(());
    };
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(());
    };
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    api.replace(&config.name, &PostParams::default(), &lease)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leadership_lapses_at_its_deadline_and_bumps_the_epoch_once_per_term() {
        let l = Leadership::new();
        let epochs = l.epochs();
        assert!(!l.is_leader());
        l.extend(Instant::now() + Duration::from_secs(60));
        l.extend(Instant::now() + Duration::from_secs(60));
        assert!(l.is_leader());
        assert_eq!(*epochs.borrow(), 1);
        l.extend(Instant::now() - Duration::from_millis(1));
        assert!(!l.is_leader(), "a term past its renew deadline is over");
        l.step_down();
        l.extend(Instant::now() + Duration::from_secs(60));
        assert_eq!(*epochs.borrow(), 2);
    }
}
