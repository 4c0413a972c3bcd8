//! The custom resource kinds the reconciler manages: every policy with a `rollout` section.

use tollgate_engine::Store;
use tollgate_engine::policy::Scope;
use tollgate_engine::rollout::Rollout;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedKind {
    pub policy: String,
    pub group: String,
    /// The version read and written: the conversion hub (storage version) when the policy has
    /// conversion rules, else its first matched version.
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    pub rollout: Rollout,
}

impl ManagedKind {
    /// `kind.group`, the name used in logs and metric labels.
    pub fn label(&self) -> String {
        format!("{}.{}", self.kind, self.group)
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

pub fn managed_kinds(store: &Store) -> Vec<ManagedKind> {
    store
        .policies()
        .iter()
        .filter_map(|p| {
            let rollout = p.rollout.clone()?;
            let version = p
                .conversion
                .as_ref()
                .map(|c| c.hub.clone())
                .or_else(|| p.matcher.versions.first().cloned())?;
            Some(ManagedKind {
                policy: p.name.clone(),
                group: p.matcher.group.clone(),
                version,
                kind: p.matcher.kind.clone(),
                plural: p.matcher.resource.clone(),
                namespaced: p.matcher.scope == Scope::Namespaced,
                rollout,
            })
        })
        .collect()
}
