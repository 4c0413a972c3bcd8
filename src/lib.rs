//! tollgate: an admission webhook server for Kubernetes custom resources.
//!
//! The policy core is the `tollgate-engine` crate; this crate is the webhook server and the
//! command line. `server::run(config, shutdown)` is the entry point; `http::Front::new(state)` is
//! the whole HTTP surface and can be driven without a socket.

#![forbid(unsafe_code)]

pub mod audit;
pub mod certs;
pub mod cli;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod manifests;
pub mod metrics;
pub mod policy_test;
pub mod register;
pub mod server;
mod shutdown;
mod telemetry;
pub mod traces;

pub use server::{ServeConfig, run};

/// Both rustls users here (server and any client) must agree on one crypto provider; an
/// explicit choice avoids rustls refusing to pick between ring and aws-lc-rs at run time.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
