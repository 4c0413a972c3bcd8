//! The controllers in force, one per managed kind, kept in step with the policy set: a reload
//! starts the kinds that gained a rollout section, restarts those whose section changed, and
//! stops those that lost it — releasing tollgate's finalizer from their objects, since no
//! controller will be there to remove it when they are deleted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::api::{Api, ListParams};
use kube::core::DynamicObject;
use kube::{Resource, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::controller::{self, Context};
use crate::error::RunError;
use crate::kinds::ManagedKind;
use crate::leader::Leadership;
use crate::metrics::{KindState, Metrics};

/// How often a kind whose CRD is not served is looked for again.
const CRD_RETRY: Duration = Duration::from_secs(5);
/// Objects listed per page when releasing a kind's finalizers.
const PAGE: u32 = 500;

struct Running {
    kind: ManagedKind,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// What a reload changed, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub started: Vec<String>,
    pub restarted: Vec<String>,
    pub stopped: Vec<String>,
}

pub struct Supervisor {
    client: Client,
    leadership: Arc<Leadership>,
    metrics: Arc<Metrics>,
    identity: String,
    running: BTreeMap<String, Running>,
    /// Kinds no longer managed whose objects still carry the finalizer (retried each reload tick).
    to_release: BTreeMap<String, ManagedKind>,
}

impl Supervisor {
    pub fn new(
        client: Client,
        leadership: Arc<Leadership>,
        metrics: Arc<Metrics>,
        identity: String,
    ) -> Self {
        Self {
            client,
            leadership,
            metrics,
            identity,
            running: BTreeMap::new(),
            to_release: BTreeMap::new(),
        }
    }

    /// Brings the running controllers to exactly `kinds`.
    pub async fn apply(&mut self, kinds: Vec<ManagedKind>) -> Changes {
        let running: BTreeMap<String, &ManagedKind> = self
            .running
            .iter()
            .map(|(label, r)| (label.clone(), &r.kind))
            .collect();
        let (changes, wanted) = plan(&running, kinds);
        for label in &changes.stopped {
            if let Some(kind) = self.stop(label).await {
                self.metrics.forget_kind(label);
                self.to_release.insert(label.clone(), kind);
            }
        }
        for label in &changes.restarted {
            self.stop(label).await;
        }
        for (label, kind) in wanted {
            self.to_release.remove(&label);
            if !self.running.contains_key(&label) {
                self.start(kind);
            }
        }
        changes
    }

    fn start(&mut self, kind: ManagedKind) {
        let label = kind.label();
        self.metrics
            .set_kind_state(&label, KindState::Missing("looking up the CRD".into()));
        let (stop, mut stopped) = watch::channel(false);
        let (client, leadership, metrics, identity) = (
            self.client.clone(),
            Arc::clone(&self.leadership),
            Arc::clone(&self.metrics),
            self.identity.clone(),
        );
        let until = {
            let mut rx = stopped.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let running_kind = kind.clone();
        let task = tokio::spawn(async move {
            let resource = tokio::select! {
                found = discover(&client, &kind, &metrics) => found,
                _ = stopped.wait_for(|s| *s) => return,
            };
            metrics.set_kind_state(&kind.label(), KindState::Running);
            tracing::info!(kind = %kind.label(), version = %kind.version, "reconciling");
            let ctx = Arc::new(Context::new(
                client, kind, resource, leadership, metrics, &identity,
            ));
            controller::run(ctx, until).await;
        });
        self.running.insert(
            label,
            Running {
                kind: running_kind,
                stop,
                task,
            },
        );
    }

    /// Stops a kind's controller and waits until it has (its in-flight reconciles finish).
    async fn stop(&mut self, label: &str) -> Option<ManagedKind> {
        let running = self.running.remove(label)?;
        let _ = running.stop.send(true);
        if let Err(e) = running.task.await
            && e.is_panic()
        {
            tracing::error!(kind = %label, error = %e, "a kind's controller panicked");
        }
        Some(running.kind)
    }

    pub async fn stop_all(&mut self) {
        let labels: Vec<String> = self.running.keys().cloned().collect();
        for label in labels {
            self.stop(&label).await;
        }
    }

    /// Releases the finalizer of the kinds no longer managed. Only the leader writes; a kind
    /// whose release failed is retried next time.
    pub async fn release_unmanaged(&mut self) {
        if self.to_release.is_empty() || !self.leadership.is_leader() {
            return;
        }
        let pending = std::mem::take(&mut self.to_release);
        for (label, kind) in pending {
            match release_kind(&self.client, &kind).await {
                Ok(released) => {
                    tracing::info!(kind = %label, released, "kind no longer managed; its objects' finalizer released");
                }
                Err(e) => {
                    tracing::warn!(kind = %label, error = %e, "cannot release the finalizer of a kind no longer managed; retrying");
                    self.to_release.insert(label, kind);
                }
            }
        }
    }
}

/// What bringing `running` to `kinds` takes: kinds to start, to restart (their rollout section
/// changed) and to stop; and the wanted kinds by label.
fn plan(
    running: &BTreeMap<String, &ManagedKind>,
    kinds: Vec<ManagedKind>,
) -> (Changes, BTreeMap<String, ManagedKind>) {
    let wanted: BTreeMap<String, ManagedKind> = kinds.into_iter().map(|k| (k.label(), k)).collect();
    let mut changes = Changes::default();
    for label in running.keys() {
        if !wanted.contains_key(label) {
            changes.stopped.push(label.clone());
        }
    }
    for (label, kind) in &wanted {
        match running.get(label) {
            Some(current) if *current == kind => {}
            Some(_) => changes.restarted.push(label.clone()),
            None => changes.started.push(label.clone()),
        }
    }
    (changes, wanted)
}

/// Waits until the kind's CRD is served; a missing kind is reported, not fatal.
async fn discover(
    client: &Client,
    kind: &ManagedKind,
    metrics: &Metrics,
) -> kube::core::ApiResource {
    loop {
        match kube::discovery::pinned_kind(client, &controller::gvk(kind)).await {
            Ok((resource, _)) => return resource,
            Err(e) => {
                let detail = format!("{} is not served: {e}", kind.api_version());
                tracing::warn!(kind = %kind.label(), error = %e, retry_in = ?CRD_RETRY, "CRD not served; will retry");
                metrics.set_kind_state(&kind.label(), KindState::Missing(detail));
            }
        }
        tokio::time::sleep(CRD_RETRY).await;
    }
}

/// Removes tollgate's finalizer from every object of `kind`, listing in pages. A kind that is
/// not served has nothing to release.
pub async fn release_kind(client: &Client, kind: &ManagedKind) -> Result<usize, RunError> {
    let resource = match kube::discovery::pinned_kind(client, &controller::gvk(kind)).await {
        Ok((resource, _)) => resource,
        Err(e) => {
            tracing::warn!(kind = %kind.label(), error = %e, "kind not served; nothing to release");
            return Ok(0);
        }
    };
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let mut released = 0;
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = all
            .list(&params)
            .await
            .map_err(|e| RunError::Api(format!("list {}: {e}", kind.label())))?;
        for object in &page.items {
            if !object
                .finalizers()
                .iter()
                .any(|f| f == controller::FINALIZER)
            {
                continue;
            }
            let api: Api<DynamicObject> = match object.meta().namespace.as_deref() {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                None => Api::all_with(client.clone(), &resource),
            };
            controller::remove_finalizer(&api, object)
                .await
                .map_err(|e| RunError::Api(e.to_string()))?;
            released += 1;
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(released),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_engine::rollout::{HealthRule, Rollout};

    fn kind(name: &str, deadline: u64) -> ManagedKind {
        ManagedKind {
            policy: name.to_lowercase(),
            group: "example.com".into(),
            version: "v1".into(),
            kind: name.into(),
            plural: format!("{}s", name.to_lowercase()),
            namespaced: true,
            rollout: Rollout {
                health: HealthRule::Condition {
                    type_: "Ready".into(),
                    failure_types: vec![],
                },
                progress_deadline_seconds: deadline,
                revision_history_limit: 10,
                auto_rollback: true,
            },
        }
    }

    #[test]
    fn a_reload_starts_restarts_and_stops_by_what_changed() {
        let (a, b, c) = (kind("A", 60), kind("B", 60), kind("C", 60));
        let running: BTreeMap<String, &ManagedKind> =
            [(a.label(), &a), (b.label(), &b), (c.label(), &c)].into();
        let (changes, wanted) = plan(&running, vec![a.clone(), kind("B", 30), kind("D", 60)]);
        assert_eq!(
            changes,
            Changes {
                started: vec!["D.example.com".into()],
                restarted: vec!["B.example.com".into()],
                stopped: vec!["C.example.com".into()],
            }
        );
        assert_eq!(wanted.len(), 3);
        let (unchanged, _) = plan(&running, vec![a.clone(), b.clone(), c.clone()]);
        assert_eq!(unchanged, Changes::default());
        let (all_gone, _) = plan(&running, vec![]);
        assert_eq!(all_gone.stopped.len(), 3);
    }
}
