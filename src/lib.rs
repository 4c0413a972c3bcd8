//! tollgate: an admission webhook server for Kubernetes custom resources.
//!
//! `server::run(config, shutdown)` is the entry point; `http::router(state)` is the whole HTTP
//! surface and can be driven without a socket.

#![forbid(unsafe_code)]

pub mod admission;
pub mod certs;
pub mod cli;
pub mod conversion;
pub mod http;
pub mod manifests;
pub mod metrics;
pub mod policy;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod worker;

pub use http::router;
pub use server::{ServeConfig, run};

/// Both rustls users here (server and any client) must agree on one crypto provider; an
/// explicit choice avoids rustls refusing to pick between ring and aws-lc-rs at run time.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
