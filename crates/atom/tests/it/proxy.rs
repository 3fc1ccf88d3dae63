//! A TCP proxy that can cut, stop or slow a real PostgreSQL or Redis connection, and raw
//! HTTP over a socket, for the tests of outages and of what hyper itself answers.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP proxy in front of a real server, which a test can cut (`set_down`: connections are
/// accepted and closed at once), stop (`set_refusing`: connecting is refused, as with a
/// stopped server) or slow (`set_delay`, applied to every chunk the server sends back).
#[derive(Debug)]
pub struct TcpProxy {
    pub addr: SocketAddr,
    upstream: SocketAddr,
    state: Arc<ProxyState>,
    task: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct ProxyState {
    down: AtomicBool,
    delay_ms: AtomicU64,
    connections: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let proxy = Self { addr, upstream, state: Arc::new(ProxyState::default()), task: Mutex::new(None) };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let (accept_state, upstream) = (Arc::clone(&self.state), self.upstream);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if accept_state.down.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let state = Arc::clone(&accept_state);
                let conn = tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else { return };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let upstream_copy = async { tokio::io::copy(&mut client_read, &mut server_write).await };
                    let downstream_copy = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = server_read.read(&mut buf).await?;
                            if n == 0 {
                                return Ok::<_, std::io::Error>(());
                            }
                            let delay = state.delay_ms.load(Ordering::SeqCst);
                            if delay > 0 {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                            }
                            client_write.write_all(&buf[..n]).await?;
                        }
                    };
                    tokio::select! {
                        _ = upstream_copy => {}
                        _ = downstream_copy => {}
                    }
                });
                accept_state.connections.lock().expect("lock").push(conn);
            }
        });
        if let Some(previous) = self.task.lock().expect("lock").replace(task) {
            previous.abort();
        }
    }

    fn cut_connections(&self) {
        for conn in self.state.connections.lock().expect("lock").drain(..) {
            conn.abort();
        }
    }

    /// Cuts every open connection and refuses new ones while `down`.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
        if down {
            self.cut_connections();
        }
    }

    /// `true`: cuts every open connection and closes the listening socket, so that
    /// connecting is refused outright; `false`: listens on the same port again.
    pub async fn set_refusing(&self, refusing: bool) {
        if refusing {
            if let Some(task) = self.task.lock().expect("lock").take() {
                task.abort();
            }
            self.cut_connections();
            // The listener closes when the aborted task is dropped: wait until it has.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while TcpStream::connect(self.addr).await.is_ok() {
                assert!(tokio::time::Instant::now() < deadline, "the proxy still accepts connections");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        } else {
            self.serve(TcpListener::bind(self.addr).await.expect("the proxy listens again on its port"));
        }
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state.delay_ms.store(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().map(|mut t| t.take()).unwrap_or_default() {
            task.abort();
        }
        for conn in self.state.connections.lock().map(|mut c| c.drain(..).collect::<Vec<_>>()).unwrap_or_default() {
            conn.abort();
        }
    }
}

/// The host:port of a `scheme://user@host:port/...` URL, resolved.
pub fn socket_addr_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host_port = rest.split(['/', '?']).next().unwrap_or(rest);
    use std::net::ToSocketAddrs;
    host_port.to_socket_addrs().ok().and_then(|mut a| a.next()).unwrap_or_else(|| panic!("cannot resolve {host_port}"))
}

/// `url` with its host:port replaced by `addr`.
pub fn via(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("URL has a scheme");
    let (user, rest) = rest.rsplit_once('@').map_or((None, rest), |(u, r)| (Some(u), r));
    let tail_start = rest.find(['/', '?']).unwrap_or(rest.len());
    let tail = &rest[tail_start..];
    match user {
        Some(u) => format!("{scheme}://{u}@{addr}{tail}"),
        None => format!("{scheme}://{addr}{tail}"),
    }
}

/// Sends raw bytes on a fresh connection and returns everything the server sent back
/// until it closed the connection (or 10 s passed).
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}
