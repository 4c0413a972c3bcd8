//! Accept, connection slots, TLS handshake, then HTTP/1.1 or h2 per connection until it ends,
//! and a bounded drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use futures_util::future::Either;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;

use super::aside;
use super::connection::{self, ConnectionLimits, Lifecycle, OVERFLOW_CONNECTIONS, Responder};
use super::linger::Lingering;
use super::tls::{ClientAuth, TlsSettings};
use super::{Server, reload};
use crate::http::{self, AppState};

/// Which service a connection gets, by the slot it holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Regular,
    /// Beyond the connection cap: every request answered 503, then closed.
    Overflow,
}

/// What can end a connection before it ends by itself.
enum Early {
    Retired,
    Shutdown,
    /// The idle or closing deadline passed.
    Timer,
}

/// What every connection task needs, cloned once per accepted connection.
#[derive(Clone)]
struct ConnectionContext {
    tls: Arc<TlsSettings>,
    requires_client_cert: bool,
    builder: Arc<auto::Builder<TokioExecutor>>,
    front: http::Front,
    overflow_router: Router,
    limits: ConnectionLimits,
    state: AppState,
    shutdown: watch::Receiver<bool>,
    /// Held by every connection; the drain ends when the last one is dropped.
    drain: mpsc::Sender<()>,
}

impl Server {
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let Server {
            config,
            listener,
            tls,
            state,
            registrar,
            cert_secret,
        } = self;
        let limits = config.connections.clone();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);
        let context = ConnectionContext {
            requires_client_cert: matches!(config.client_auth, ClientAuth::Verify { .. }),
            tls: Arc::clone(&tls),
            builder: Arc::new(limits.builder()),
            front: http::Front::new(state.clone()),
            overflow_router: http::overflow_router(),
            limits: limits.clone(),
            state: state.clone(),
            shutdown: shutdown_rx,
            drain: drain_tx,
        };
        let regular = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        let overflow = Arc::new(Semaphore::new(OVERFLOW_CONNECTIONS));
        let reloader = tokio::spawn(reload::watch(
            config.clone(),
            Arc::clone(&tls),
            state.clone(),
            registrar,
            cert_secret,
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
                    send_without_delay(&tcp, peer);
                    let (slot, permit) = match Arc::clone(&regular).try_acquire_owned() {
                        Ok(permit) => (Slot::Regular, permit),
                        Err(_) => match Arc::clone(&overflow).try_acquire_owned() {
                            Ok(permit) => (Slot::Overflow, permit),
                            Err(_) => {
                                state.metrics().refuse_connection("dropped");
                                tracing::warn!(%peer, "connection and overflow limits reached; closing the connection unanswered");
                                continue;
                            }
                        },
                    };
                    tokio::spawn(serve_connection(context.clone(), tcp, peer, slot, permit));
                }
            }
        }

        tracing::info!("shutting down: no new connections, draining in-flight requests");
        state.set_ready(false);
        drop(listener);
        reloader.abort();
        let _ = shutdown_tx.send(true);
        drop(context);
        if tokio::time::timeout(config.shutdown_grace, drain_rx.recv())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?config.shutdown_grace, "in-flight requests still running at the end of the grace period");
        }
        flush_traces(&state).await;
        tracing::info!("shutdown complete");
    }
}

/// The spans of the last reviews are exported before the process ends; an unreachable
/// collector holds shutdown up for at most a few seconds.
async fn flush_traces(state: &http::AppState) {
    if state.traces().is_none() {
        return;
    }
    let state = state.clone();
    let flushed = tokio::task::spawn_blocking(move || {
        if let Some(traces) = state.traces() {
            traces.shutdown(Duration::from_secs(5));
        }
    });
    let _ = flushed.await;
}

/// Answers go out as soon as they are written, as Go's servers and clients do. With Nagle's
/// algorithm an h2 frame written after another waited for the client's delayed ACK: at 64
/// concurrent streams p99 was 44 ms and throughput halved (BENCHMARKS.md, h2 rows).
fn send_without_delay(tcp: &TcpStream, peer: SocketAddr) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
}

/// One connection from handshake to close; the permit holds its slot.
async fn serve_connection(
    context: ConnectionContext,
    tcp: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    permit: OwnedSemaphorePermit,
) {
    let _permit = permit;
    let metrics = context.state.metrics();
    let accepting = context.tls.acceptor().accept(tcp);
    let tls = match tokio::time::timeout(context.limits.handshake_timeout, accepting).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            metrics.refuse_connection("handshake_failed");
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            metrics.refuse_connection("handshake_timeout");
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    // With mutual TLS, a connection without a certificate got this far only because some
    // endpoints are open to anonymous clients; the HTTP layer enforces which.
    let anonymous = context.requires_client_cert && tls.get_ref().1.peer_certificates().is_none();
    let (responder, max_requests) = match slot {
        Slot::Regular => (
            Responder::Regular(context.front.clone()),
            context.limits.max_requests,
        ),
        Slot::Overflow => {
            metrics.refuse_connection("limit");
            (Responder::Overflow(context.overflow_router.clone()), 1)
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let lifecycle = Lifecycle::new(&context.limits, max_requests, h2);
    let service = connection::service(responder, Arc::clone(&lifecycle), anonymous);
    let conn = context
        .builder
        .serve_connection(TokioIo::new(Lingering::new(tls)), service);
    tokio::pin!(conn);

    metrics.connections_open.inc();
    let mut shutdown = context.shutdown.clone();
    // Once closing has begun: the moment by which the connection must be gone.
    let mut closing_deadline: Option<Instant> = None;
    loop {
        let wake = closing_deadline.unwrap_or_else(|| lifecycle.next_check());
        let closing = closing_deadline.is_some();
        let side = pin!(async {
            tokio::select! {
                () = lifecycle.goaway_requested(), if !closing => Early::Retired,
                _ = shutdown.wait_for(|stopping| *stopping), if !closing => Early::Shutdown,
                () = tokio::time::sleep_until(wake) => Early::Timer,
            }
        });
        let close_reason = match aside::first_of(conn.as_mut(), side).await {
            Either::Left(result) => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            Either::Right(Early::Retired) => "retired",
            Either::Right(Early::Shutdown) => "shutdown",
            Either::Right(Early::Timer) => {
                if closing {
                    tracing::debug!(%peer, "connection did not finish closing in time; dropped");
                    break;
                }
                if !lifecycle.should_close() {
                    continue;
                }
                if lifecycle.retired() {
                    "retired"
                } else {
                    "idle"
                }
            }
        };
        tracing::debug!(%peer, reason = close_reason, served = lifecycle.served(), "closing connection");
        conn.as_mut().graceful_shutdown();
        let grace = if lifecycle.idle() {
            context.limits.header_read_timeout
        } else {
            context.limits.close_grace
        };
        closing_deadline = Some(Instant::now() + grace);
    }
    metrics.connections_open.dec();
    if lifecycle.retired() && slot == Slot::Regular {
        metrics.connections_retired.inc();
    }
    drop(context.drain);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_send_without_delay() -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let client = TcpStream::connect(listener.local_addr()?).await?;
        let (accepted, peer) = listener.accept().await?;
        assert!(!accepted.nodelay()?, "Nagle is on by default");
        send_without_delay(&accepted, peer);
        assert!(accepted.nodelay()?);
        drop(client);
        Ok(())
    }
}
