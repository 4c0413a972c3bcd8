//! The watcher that, every reload interval, renews certificates that are due, picks up changed
//! policy files and certificates, and (with `--register`) keeps the registration in step.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::ServeConfig;
use super::cert_secret::{self, CertSecret};
use super::renewal::CertUpkeep;
use super::tls::TlsSettings;
use crate::certs::CertDir;
use crate::http::AppState;
use crate::register::Registrar;

/// A bad change is reported (log and `tollgate_policy_load_errors`) and the previous, working
/// set stays active.
pub async fn watch(
    config: ServeConfig,
    tls: Arc<TlsSettings>,
    state: AppState,
    mut registrar: Option<Registrar>,
    mut cert_secret: Option<CertSecret>,
) {
    let cert_dir = CertDir::new(&config.cert_dir);
    let mut upkeep = CertUpkeep::new(
        CertDir::new(&config.cert_dir).with_lifetimes(config.lifetimes),
        config.sans.clone(),
        config.expiry_warning,
    );
    let overlap = rotation_overlap(&config);
    upkeep.tick(state.metrics());
    register(&mut registrar, &cert_dir, &state).await;
    let mut last_seen = tollgate_engine::policy::dir_fingerprint(&config.policies_dir);
    let mut ticker = tokio::time::interval(config.reload_interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if let Some(secret) = &mut cert_secret
            && let Err(e) = secret.pull(&cert_dir).await
        {
            tracing::error!(error = %e, "keeping the certificates in use");
        }
        let before = cert_secret
            .is_some()
            .then(|| cert_secret::read_files(&cert_dir).ok());
        upkeep.tick(state.metrics());
        if let Some(registrar) = &registrar {
            let published = cert_dir
                .ca_pem()
                .is_ok_and(|ca| registrar.published(&state.store().current(), &ca));
            upkeep.advance_ca_rotation(published, overlap);
        }
        if let Some(secret) = &mut cert_secret
            && before != Some(cert_secret::read_files(&cert_dir).ok())
        {
            match secret.push(&cert_dir).await {
                Ok(true) => tracing::info!("certificate change stored in the shared Secret"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "cannot store the certificate change in the shared Secret; retrying")
                }
            }
        }
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
        let seen = tollgate_engine::policy::dir_fingerprint(&config.policies_dir);
        if seen != last_seen {
            last_seen = seen;
            reload_policies(&config.policies_dir, &state).await;
        }
        register(&mut registrar, &cert_dir, &state).await;
    }
}

/// How long both CAs stay trusted at each step of an automatic CA rotation: long enough for
/// every apiserver and replica to see the new bundle, short against the CA's life.
fn rotation_overlap(config: &ServeConfig) -> Duration {
    (config.lifetimes.ca / 10).clamp(
        config.reload_interval * 3,
        Duration::from_secs(24 * 3600).max(config.reload_interval * 3),
    )
}

async fn reload_policies(dir: &Path, state: &AppState) {
    let dir = dir.to_path_buf();
    match tokio::task::spawn_blocking(move || tollgate_engine::load_dir(&dir)).await {
        Ok(Ok(store)) => {
            let count = store.policies().len();
            state.metrics().set_policy_set(&store);
            let digest = store.digest().to_string();
            state.store().replace(store);
            tracing::info!(policies = count, %digest, "policies reloaded");
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

/// Applies the registration when it changed; a failure is logged and retried next time.
async fn register(registrar: &mut Option<Registrar>, cert_dir: &CertDir, state: &AppState) {
    let Some(registrar) = registrar else { return };
    let ca = match cert_dir.ca_pem() {
        Ok(ca) => ca,
        Err(e) => {
            tracing::error!(error = %e, "cannot register: no CA bundle");
            state.set_registration_problem(Some(format!("no CA bundle: {e}")));
            return;
        }
    };
    match registrar.sync(&state.store().current(), &ca).await {
        Ok(applied) => {
            if applied {
                tracing::info!("registration applied (webhook configurations, CRD conversion)");
            }
            state.set_registration_problem(None);
        }
        Err(e) => {
            tracing::error!(error = %e, "registration failed; retrying at the next reload");
            state.set_registration_problem(Some(e.to_string()));
        }
    }
}
