//! The accept loop: hyper-util's auto connection builder (HTTP/1.1, and HTTP/2 with prior
//! knowledge or over TLS at a proxy), caps on open connections in total and per client
//! address, hyper's header-read timeout, and graceful shutdown through hyper-util's
//! [`GracefulShutdown`].
//!
//! axum's `serve` exposes none of these knobs, so this is the loop it would otherwise run.
//! Connections over a cap are closed at once, before any byte is read: answering them would
//! cost the very resources the cap protects.
//!
//! What each connection gets:
//! - its peer address as a [`ConnectInfo`] request extension, for the rate limits, the audit
//!   rows and Socket.io's handshake;
//! - HTTP/1: `header_read_timeout` (slowloris protection; hyper also applies it to an idle
//!   keep-alive connection waiting for its next request) and a read buffer of twice
//!   `http.max_header_bytes`, so that a head over the limit is answered 431 by the stack
//!   (with a problem body) and only a head over twice the limit is refused by hyper itself;
//! - a lingering close ([`super::linger`]), so that a client still sending a body gets the
//!   answer (a 413, say) instead of a reset.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_http::add_extension::AddExtension;

use super::linger::Lingering;

/// Limits applied per connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub header_read_timeout: Duration,
    /// The largest request head the stack answers (431 above it, [`super::middleware`]).
    pub max_header_bytes: usize,
}

impl ConnectionLimits {
    /// hyper's read buffer: twice the head limit (at least hyper's minimum of 8 KiB), so that
    /// the stack sees, and answers with a problem, most heads over the limit.
    fn read_buffer(&self) -> usize {
        self.max_header_bytes.saturating_mul(2).max(8192)
    }
}

/// Open connections per client address.
#[derive(Debug, Default)]
struct PerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// Releases one connection of an address when the connection ends.
struct PerIpGuard {
    ip: IpAddr,
    table: Arc<PerIp>,
}

impl PerIp {
    fn try_open(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PerIpGuard> {
        let mut open = self.open.lock().ok()?;
        let count = open.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PerIpGuard { ip, table: Arc::clone(self) })
    }
}

impl Drop for PerIpGuard {
    fn drop(&mut self) {
        if let Ok(mut open) = self.table.open.lock()
            && let Some(count) = open.get_mut(&self.ip)
        {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The open connections, once the listener has closed.
#[derive(Debug)]
pub struct Connections {
    graceful: GracefulShutdown,
}

impl Connections {
    /// Asks every connection to finish what is in flight and close (HTTP/1: after the
    /// response in flight; HTTP/2: a GOAWAY); resolves once all have.
    pub async fn shutdown(self) {
        self.graceful.shutdown().await;
    }
}

/// Accepts and serves connections until `stop` resolves, then closes the listener and
/// returns the open connections, for their graceful shutdown.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()>,
) -> Connections {
    let total = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = Arc::new(PerIp::default());
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.read_buffer());
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .max_header_list_size(u32::try_from(limits.read_buffer()).unwrap_or(u32::MAX));
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Some(held) = admit(&total, &per_ip, peer.ip(), &limits) else {
            metrics::counter!("http_connections_rejected_total").increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(AddExtension::new(app.clone(), ConnectInfo(peer)));
        let io = TokioIo::new(Lingering::new(stream));
        let conn = graceful.watch(builder.serve_connection_with_upgrades(io, service).into_owned());
        tokio::spawn(async move {
            let _held = held;
            metrics::gauge!("http_connections_open").increment(1.0);
            let _ = conn.await;
            metrics::gauge!("http_connections_open").decrement(1.0);
        });
    }
    drop(listener);
    Connections { graceful }
}

fn admit(
    total: &Arc<Semaphore>,
    per_ip: &Arc<PerIp>,
    ip: IpAddr,
    limits: &ConnectionLimits,
) -> Option<(OwnedSemaphorePermit, PerIpGuard)> {
    let permit = Arc::clone(total).try_acquire_owned().ok()?;
    let guard = per_ip.try_open(ip, limits.max_connections_per_ip)?;
    Some((permit, guard))
}
