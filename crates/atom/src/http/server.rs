//! The accept loop: hyper connections under a header-read timeout (a slowloris client is cut
//! off, and so is an idle keep-alive connection: [`crate::http::watchdog`]), caps on open
//! connections in total and per client address, and graceful shutdown.
//!
//! axum's `serve` exposes none of these knobs, so this is the few lines of hyper-util it
//! would otherwise do for us. Connections over a cap are closed at once, before any byte is
//! read: answering them would cost the very resources the cap protects.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::Version;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::{Builder, UpgradeableConnection};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::http::middleware::{Stack, StackFuture};
use crate::http::refusal::Refusals;
use crate::http::watchdog::{Watch, Watchdog, Watched};

/// The service hyper calls for each request of one connection: the whole stack answers it,
/// with the connection's peer address in the request's scope. Implemented for hyper
/// directly, so that a request costs no clone of the stack and no `tower` adapter.
struct Connection {
    app: Stack,
    peer: SocketAddr,
    watch: Arc<Watch>,
}

impl hyper::service::Service<Request<Incoming>> for Connection {
    type Response = Response;
    type Error = Infallible;
    type Future = StackFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        if req.version() == Version::HTTP_2 {
            // HTTP/2 has its own keep-alive (pings) and no slow head to wait for.
            self.watch.leave();
        }
        let busy = self.watch.begin();
        self.app.serve_on(req.map(Body::new), Some(busy), Some(self.peer))
    }
}

/// Limits applied per connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub header_read_timeout: Duration,
    /// hyper's read buffer limit: a request head that does not fit is refused (431 or 414).
    /// hyper checks it after each read, so a head can reach up to about twice this.
    pub max_header_bytes: usize,
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

pin_project_lite::pin_project! {
    /// A connection that finishes gracefully once its watchdog drains: the request in flight
    /// is answered, then the connection closes (HTTP/2: a GOAWAY).
    struct Drained {
        #[pin]
        conn: HyperConnection,
        watch: Arc<Watch>,
        asked: bool,
    }
}

type HyperConnection =
    UpgradeableConnection<'static, TokioIo<Watched<tokio::net::TcpStream>>, Connection, TokioExecutor>;

impl Future for Drained {
    type Output = <HyperConnection as Future>::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        /// Asks the connection to finish once the drain has begun; whether it asked now.
        fn ask(conn: Pin<&mut HyperConnection>, watch: &Watch, asked: &mut bool) -> bool {
            if *asked || !watch.draining() {
                return false;
            }
            *asked = true;
            conn.graceful_shutdown();
            true
        }
        ask(this.conn.as_mut(), this.watch, this.asked);
        let poll = this.conn.as_mut().poll(cx);
        // A drain that came between the check above and the socket's registration of this
        // task found no waker to wake: poll again.
        if poll.is_pending() && ask(this.conn.as_mut(), this.watch, this.asked) {
            cx.waker().wake_by_ref();
        }
        poll
    }
}

/// The open connections, once the listener has closed.
#[derive(Debug)]
pub struct Connections {
    watchdog: Arc<Watchdog>,
    total: Arc<Semaphore>,
    max: u32,
}

impl Connections {
    /// Asks every connection to finish what is in flight and close; resolves once all have.
    pub async fn shutdown(self) {
        self.watchdog.drain();
        // Each connection holds one permit until its task ends.
        let _all = self.total.acquire_many(self.max).await;
    }
}

/// Accepts and serves connections until `stop` resolves, then closes the listener and
/// returns the open connections, for their graceful shutdown.
pub async fn serve(
    listener: TcpListener,
    app: Stack,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()>,
) -> Connections {
    // At most 1 000 000 (checked with the configuration).
    let max = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let total = Arc::new(Semaphore::new(max as usize));
    let per_ip = Arc::new(PerIp::default());
    let mut builder = Builder::new(TokioExecutor::new());
    // No `header_read_timeout` here: the watchdog does its work at a fraction of its cost.
    builder.http1().header_read_timeout(None).max_buf_size(limits.max_header_bytes);
    let watchdog = Watchdog::start(limits.header_read_timeout);
    let refusals = Arc::new(Refusals::new(app.security_headers()));
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(Duration::from_secs(30));
    let builder = Arc::new(builder);
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
        let Some(connection) = admit(&total, &per_ip, peer.ip(), &limits) else {
            metrics::counter!("http_connections_rejected_total").increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let watch = watchdog.watch();
        let service = Connection { app: app.clone(), peer, watch: Arc::clone(&watch) };
        let io = TokioIo::new(Watched::new(stream, Arc::clone(&watch), Arc::clone(&refusals)));
        let conn = builder.serve_connection_with_upgrades(io, service).into_owned();
        let conn = Drained { conn, watch, asked: false };
        tokio::spawn(async move {
            let _held = connection;
            metrics::gauge!("http_connections_open").increment(1.0);
            let _ = conn.await;
            metrics::gauge!("http_connections_open").decrement(1.0);
        });
    }
    drop(listener);
    Connections { watchdog, total, max }
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
