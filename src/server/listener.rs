//! Accept, TLS handshake, HTTP/1.1 or h2 per connection, and a graceful drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::{Server, reload};
use crate::http;

/// What every connection task needs, cloned once per accepted connection.
#[derive(Clone)]
struct ConnectionContext {
    acceptor: TlsAcceptor,
    builder: Arc<auto::Builder<TokioExecutor>>,
    service: TowerToHyperService<Router>,
    handshake_timeout: Duration,
}

impl Server {
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let Server {
            config,
            listener,
            acceptor,
            cert,
            state,
        } = self;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // Slow or idle clients that never finish their headers are cut off.
            .header_read_timeout(config.handshake_timeout);
        let context = ConnectionContext {
            acceptor,
            builder: Arc::new(builder),
            service: TowerToHyperService::new(http::router(state.clone())),
            handshake_timeout: config.handshake_timeout,
        };
        let graceful = GracefulShutdown::new();
        let connections = Arc::new(Semaphore::new(config.max_connections));
        let reloader = tokio::spawn(reload::watch(
            config.clone(),
            Arc::clone(&cert),
            state.clone(),
        ));

        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "listening (HTTPS)");
        }
        state.set_ready(true);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            // Usually fd exhaustion: back off instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                        tracing::warn!(%peer, "connection limit reached; dropping connection");
                        continue;
                    };
                    tokio::spawn(serve_connection(context.clone(), tcp, peer, permit, graceful.watcher()));
                }
            }
        }

        tracing::info!("shutting down: no new connections, draining in-flight requests");
        state.set_ready(false);
        drop(listener);
        reloader.abort();
        if tokio::time::timeout(config.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?config.shutdown_grace, "in-flight requests still running at the end of the grace period");
        }
        tracing::info!("shutdown complete");
    }
}

/// One connection from handshake to close; the permit holds its slot under the connection cap.
async fn serve_connection(
    context: ConnectionContext,
    tcp: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    watcher: Watcher,
) {
    let _permit = permit;
    let tls =
        match tokio::time::timeout(context.handshake_timeout, context.acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
    let conn = context
        .builder
        .serve_connection(TokioIo::new(tls), context.service)
        .into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
