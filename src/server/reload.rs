//! The watcher that picks up changed policy files and renewed certificates while serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::ServeConfig;
use super::renewal::CertUpkeep;
use super::tls::TlsSettings;
use crate::certs::CertDir;
use crate::http::AppState;

/// Picks up changed policy files and renewed certificates. A bad change is reported (log and
/// `tollgate_policy_load_errors`) and the previous, working set stays active.
pub async fn watch(config: ServeConfig, tls: Arc<TlsSettings>, state: AppState) {
    let cert_dir = CertDir::new(&config.cert_dir);
    let mut upkeep = CertUpkeep::new(
        CertDir::new(&config.cert_dir).with_lifetimes(config.lifetimes),
        config.sans.clone(),
        config.expiry_warning,
    );
    upkeep.tick(state.metrics());
    let mut last_seen = fingerprint(&config.policies_dir);
    let mut ticker = tokio::time::interval(config.reload_interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        upkeep.tick(state.metrics());
        match tls.cert().reload_from(&cert_dir) {
            Ok(true) => tracing::info!("serving certificate reloaded"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "keeping the current serving certificate"),
        }
        match tls.reload_client_ca() {
            Ok(true) => tracing::info!("client CA reloaded"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "keeping the current client CA"),
        }
        let seen = fingerprint(&config.policies_dir);
        if seen == last_seen {
            continue;
        }
        last_seen = seen;
        let dir = config.policies_dir.clone();
        match tokio::task::spawn_blocking(move || tollgate_engine::load_dir(&dir)).await {
            Ok(Ok(store)) => {
                let count = store.policies().len();
                state.store().replace(store);
                state.metrics().policies_loaded.set(count as i64);
                tracing::info!(policies = count, "policies reloaded");
            }
            Ok(Err(e)) => {
                state
                    .metrics()
                    .policy_load_errors
                    .inc_by(e.problem_count() as u64);
                tracing::error!(error = %e, "policy reload failed; keeping the previous policies");
            }
            Err(e) => tracing::error!(error = %e, "policy reload task failed"),
        }
    }
}

fn fingerprint(dir: &Path) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let meta = std::fs::metadata(e.path()).ok()?;
            Some((e.path(), meta.modified().ok(), meta.len()))
        })
        .collect();
    entries.sort();
    entries
}
