//! What stops `tollgate reconcile` (and `release-finalizers`) from running, for the CLI to report.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The policy directory could not be loaded.
    #[error(transparent)]
    Policies(#[from] tollgate_engine::LoadError),
    /// No policy has a `rollout` section: nothing to reconcile.
    #[error("no policy in {} has a spec.rollout section; nothing to reconcile", .0.display())]
    NothingToManage(PathBuf),
    /// No Kubernetes configuration could be found (KUBECONFIG, ~/.kube/config, in-cluster).
    #[error("cannot configure a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// The metrics address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A call to the apiserver failed.
    #[error("{0}")]
    Api(String),
}

impl RunError {
    pub fn is_config_error(&self) -> bool {
        matches!(
            self,
            Self::Policies(_) | Self::NothingToManage(_) | Self::Client(_)
        )
    }
}
