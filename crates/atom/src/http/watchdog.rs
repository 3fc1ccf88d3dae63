//! The header-read timeout (slowloris protection) and the idle keep-alive limit, as one rule:
//! an HTTP/1 connection with no request in flight must, within `timeout`, either deliver a
//! whole request head or take response bytes; otherwise it is closed.
//!
//! Why not hyper's own `header_read_timeout`: hyper makes a new timer for every request head
//! it reads and goes round its connection loop once more to start it, so every request put an
//! entry into tokio's timer wheel and took it out again: 1 450 instructions of a `/health`
//! request's 21 730 (`docs/benchmarks.md`, session 8). Here each connection has one [`Watch`]
//! of counters: a request moves them with a few atomic additions ([`Watch::begin`], the
//! [`Watched`] socket's writes), and one sweeper task looks at every connection every
//! [`TICK`], so a quiet connection is cut off between `timeout` and `timeout` + [`TICK`] after
//! it went quiet. Dripping header bytes is not progress: only a whole head is.
//!
//! A request in flight is never cut off here (the request timeout bounds the handler, and so
//! a body that arrives too slowly); a response body that streams for longer than `timeout` is
//! progress with every write. Upgraded connections (WebSocket) leave the watch, and so do
//! HTTP/2 connections, which have their own keep-alive, at their first request (one that
//! sends no request within `timeout` is closed like an HTTP/1 one).
//!
//! The same table of connections carries graceful shutdown ([`Watchdog::drain`]): a flag that
//! each connection's future reads on every poll (one atomic load, where hyper-util's watcher
//! polled a channel's notification: ~175 instructions per request), and the wake-up that makes
//! every connection read it. Connections that left the watch stay in the table for this, and
//! leave it when they close.
//!
//! The socket wrapper, [`Watched`], is also where two other things happen to the bytes of a
//! connection: hyper's own empty answers to requests it cannot parse go out as problem+json
//! ([`Refusals`]), and a close lingers while the client is still sending (`Linger`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http::refusal::Refusals;

/// How often the sweeper looks at the connections: how late past its timeout a quiet
/// connection can be cut off.
pub const TICK: Duration = Duration::from_millis(250);

/// Every watched connection, for the sweeper.
#[derive(Debug)]
pub struct Watchdog {
    timeout: Duration,
    open: Mutex<Vec<Entry>>,
    /// Set once, when shutdown begins.
    draining: AtomicBool,
}

/// The sweeper's view of one connection.
#[derive(Debug)]
struct Entry {
    watch: Weak<Watch>,
    /// `activity` when last looked at.
    seen: u64,
    /// When the sweeper last saw the connection busy or moving.
    quiet_since: Instant,
}

impl Watchdog {
    /// The table of connections, with its sweeper running on the current tokio runtime until
    /// the table is dropped: by the accept loop and by every connection ([`Watch`] holds it).
    pub fn start(timeout: Duration) -> Arc<Self> {
        let dog = Self::new(timeout);
        tokio::spawn(sweep(Arc::downgrade(&dog)));
        dog
    }

    /// The table alone, swept by hand ([`Watchdog::sweep_once`]).
    fn new(timeout: Duration) -> Arc<Self> {
        Arc::new(Self { timeout, open: Mutex::new(Vec::new()), draining: AtomicBool::new(false) })
    }

    /// A new connection's watch.
    pub fn watch(self: &Arc<Self>) -> Arc<Watch> {
        let watch = Arc::new(Watch {
            dog: Arc::clone(self),
            busy: AtomicU64::new(0),
            activity: AtomicU64::new(0),
            left: AtomicBool::new(false),
            expired: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        let entry = Entry { watch: Arc::downgrade(&watch), seen: 0, quiet_since: Instant::now() };
        self.open.lock().unwrap_or_else(PoisonError::into_inner).push(entry);
        watch
    }

    /// Begins graceful shutdown: every connection's future, woken now, asks its connection to
    /// finish what is in flight and close (see [`Watch::draining`]).
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        for entry in self.open.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            if let Some(watch) = entry.watch.upgrade() {
                watch.waker.wake();
            }
        }
    }

    /// One look at every connection: cuts off the quiet ones and forgets the closed ones.
    /// Those that left the watch are kept, never cut off, for [`Watchdog::drain`].
    fn sweep_once(&self, now: Instant) {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).retain_mut(|entry| {
            let Some(watch) = entry.watch.upgrade() else { return false };
            if watch.left.load(Ordering::Acquire) {
                return true;
            }
            let activity = watch.activity.load(Ordering::Acquire);
            if watch.busy.load(Ordering::Acquire) > 0 || activity != entry.seen {
                entry.seen = activity;
                entry.quiet_since = now;
                return true;
            }
            if now.saturating_duration_since(entry.quiet_since) < self.timeout {
                return true;
            }
            watch.expired.store(true, Ordering::Release);
            watch.waker.wake();
            false
        });
    }
}

async fn sweep(dog: Weak<Watchdog>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(dog) = dog.upgrade() else { return };
        dog.sweep_once(Instant::now());
    }
}

/// One connection's counters.
#[derive(Debug)]
pub struct Watch {
    /// Keeps the sweeper running while the connection is open; its drain flag.
    dog: Arc<Watchdog>,
    /// Requests in flight (HTTP/1 has one at a time; pipelining and HTTP/2 streams, more).
    busy: AtomicU64,
    /// Moves with every request head, response end and write: progress.
    activity: AtomicU64,
    /// Out of the watch for good: upgraded, or HTTP/2.
    left: AtomicBool,
    /// Cut off: the socket fails every read and write from now on.
    expired: AtomicBool,
    /// The connection's task, woken when it is cut off.
    waker: AtomicWaker,
}

impl Watch {
    /// A request head has arrived; the request is in flight until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.activity.fetch_add(1, Ordering::Release);
        Busy(Arc::clone(self))
    }

    /// Whether graceful shutdown has begun. Read by the connection's future on every poll;
    /// after a poll that waits, read again, so that a drain that came in between is not
    /// missed (its wake-up found no task registered yet, or the one before).
    pub fn draining(&self) -> bool {
        self.dog.draining.load(Ordering::SeqCst)
    }

    /// Takes the connection out of the watch for good (an upgrade, HTTP/2).
    pub fn leave(&self) {
        self.left.store(true, Ordering::Release);
    }

    fn check(&self) -> io::Result<()> {
        if self.expired.load(Ordering::Acquire) {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no request head within the header-read timeout"));
        }
        Ok(())
    }
}

/// A request in flight on a watched connection.
#[derive(Debug)]
pub struct Busy(Arc<Watch>);

impl Busy {
    /// The response switches protocols: the connection is no longer HTTP's to watch.
    pub fn upgraded(&self) {
        self.0.leave();
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.activity.fetch_add(1, Ordering::Release);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// A connection's socket under its [`Watch`]: writes count as progress, and once the
    /// connection is cut off every read and write fails, which ends hyper's connection.
    /// hyper's own answers to requests it could not parse are written as problem+json
    /// ([`Refusals`]).
    #[derive(Debug)]
    pub struct Watched<T> {
        #[pin]
        io: T,
        watch: Arc<Watch>,
        refusals: Arc<Refusals>,
        // A replacement answer, and how much of it is written.
        pending: Option<(Vec<u8>, usize)>,
        // The lingering close, once the write side is shut.
        linger: Option<Linger>,
    }
}

/// How long a closing connection may keep reading what the client still sends.
const LINGER_FOR: Duration = Duration::from_secs(5);

/// How much a lingering close reads and throws away at most.
const LINGER_BYTES: usize = 64 * 1024 * 1024;

/// A lingering close (as nginx's `lingering_close`): when hyper closes a connection whose
/// client is still sending (a body too large, or one the handler never read), the socket is
/// shut for writing and what still arrives is read and thrown away, until the client closes,
/// [`LINGER_FOR`] has passed or [`LINGER_BYTES`] were read. Closing with unread data would
/// make the kernel reset the connection, and a client still writing its body would see the
/// reset instead of the answer (a 413 problem, say) already sent to it.
#[derive(Debug)]
struct Linger {
    until: Pin<Box<tokio::time::Sleep>>,
    discarded: usize,
}

impl<T> Watched<T> {
    pub fn new(io: T, watch: Arc<Watch>, refusals: Arc<Refusals>) -> Self {
        Self { io, watch, refusals, pending: None, linger: None }
    }
}

/// Writes what is left of a replacement answer.
fn drive<T: AsyncWrite>(
    mut io: Pin<&mut T>,
    pending: &mut Option<(Vec<u8>, usize)>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while let Some((bytes, written)) = pending {
        match ready!(io.as_mut().poll_write(cx, &bytes[*written..])) {
            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => *written += n,
            Err(e) => return Poll::Ready(Err(e)),
        }
        if *written == bytes.len() {
            *pending = None;
        }
    }
    Poll::Ready(Ok(()))
}

impl<T: AsyncWrite> Watched<T> {
    /// Writes what is left of a replacement answer, if any, before anything else.
    fn finish_replacement(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        drive(this.io, this.pending, cx)
    }

    /// Takes `buf` when it is hyper's automatic answer: its replacement is written instead
    /// (now, or on the flush that follows), and the whole of `buf` counts as written.
    fn take_refusal(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Option<Poll<io::Result<usize>>> {
        if !Refusals::may_be(buf) {
            return None;
        }
        let this = self.project();
        let replacement = this.refusals.replace(buf)?;
        *this.pending = Some((replacement, 0));
        Some(match drive(this.io, this.pending, cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(buf.len())),
        })
    }
}

/// Notes a write's outcome: bytes taken are progress; a wait registers the task, so that a
/// cut-off finds it.
fn wrote(watch: &Watch, cx: &Context<'_>, poll: &Poll<io::Result<usize>>) {
    match poll {
        Poll::Ready(Ok(n)) if *n > 0 => {
            watch.activity.fetch_add(1, Ordering::Release);
        }
        Poll::Pending => watch.waker.register(cx.waker()),
        Poll::Ready(_) => {}
    }
}

impl<T: AsyncRead> AsyncRead for Watched<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        this.watch.check()?;
        let poll = this.io.poll_read(cx, buf);
        if poll.is_pending() {
            this.watch.waker.register(cx.waker());
        }
        poll
    }
}

impl<T: AsyncRead + AsyncWrite> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.watch.check()?;
        ready!(self.as_mut().finish_replacement(cx))?;
        if let Some(taken) = self.as_mut().take_refusal(cx, buf) {
            return taken;
        }
        let this = self.project();
        let poll = this.io.poll_write(cx, buf);
        wrote(this.watch, cx, &poll);
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.watch.check()?;
        ready!(self.as_mut().finish_replacement(cx))?;
        // hyper's automatic answer is a head alone, in one slice.
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(first), None) = (filled.next(), filled.next())
            && let Some(taken) = self.as_mut().take_refusal(cx, first)
        {
            return taken;
        }
        let this = self.project();
        let poll = this.io.poll_write_vectored(cx, bufs);
        wrote(this.watch, cx, &poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().finish_replacement(cx))?;
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        let mut buf = [0u8; 8192];
        let linger = match this.linger {
            Some(linger) => linger,
            None => {
                ready!(drive(this.io.as_mut(), this.pending, cx))?;
                ready!(this.io.as_mut().poll_shutdown(cx))?;
                // Only a client whose data is already waiting is lingered for: an idle one
                // (a pooled keep-alive connection, a graceful shutdown) is closed at once.
                let mut read = ReadBuf::new(&mut buf);
                match this.io.as_mut().poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) if !read.filled().is_empty() => {}
                    _ => return Poll::Ready(Ok(())),
                }
                let discarded = read.filled().len();
                this.linger.insert(Linger { until: Box::pin(tokio::time::sleep(LINGER_FOR)), discarded })
            }
        };
        loop {
            if linger.until.as_mut().poll(cx).is_ready() || linger.discarded >= LINGER_BYTES {
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut buf);
            match ready!(this.io.as_mut().poll_read(cx, &mut read)) {
                Ok(()) if !read.filled().is_empty() => linger.discarded += read.filled().len(),
                // The client closed, or the connection failed: nothing left to be reset.
                _ => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusals() -> Arc<Refusals> {
        Arc::new(Refusals::new(&crate::edge::headers::SecurityHeaders::new(false)))
    }

    fn entries(dog: &Watchdog) -> usize {
        dog.open.lock().expect("lock").len()
    }

    #[tokio::test]
    async fn a_quiet_connection_is_cut_off_after_the_timeout_and_not_before() {
        let dog = Watchdog::new(Duration::from_secs(10));
        let watch = dog.watch();
        let start = Instant::now();
        dog.sweep_once(start + Duration::from_secs(9));
        assert!(watch.check().is_ok(), "cut off early");
        dog.sweep_once(start + Duration::from_secs(10));
        let err = watch.check().expect_err("cut off");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(entries(&dog), 0, "a cut-off connection is forgotten");
    }

    #[tokio::test]
    async fn a_request_in_flight_is_never_cut_off_and_its_end_restarts_the_clock() {
        let dog = Watchdog::new(Duration::from_secs(10));
        let watch = dog.watch();
        let start = Instant::now();
        let busy = watch.begin();
        dog.sweep_once(start + Duration::from_secs(60));
        assert!(watch.check().is_ok(), "a request in flight was cut off");
        drop(busy);
        dog.sweep_once(start + Duration::from_secs(61));
        dog.sweep_once(start + Duration::from_secs(70));
        assert!(watch.check().is_ok(), "the clock did not restart at the request's end");
        dog.sweep_once(start + Duration::from_secs(71));
        assert!(watch.check().is_err(), "quiet for the timeout after the request");
    }

    #[tokio::test]
    async fn writes_are_progress_and_reads_are_not() {
        let (client, server) = tokio::io::duplex(64);
        let dog = Watchdog::new(Duration::from_secs(10));
        let watch = dog.watch();
        let mut server = Watched::new(server, Arc::clone(&watch), refusals());
        let mut client = client;
        let start = Instant::now();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for second in [8, 16, 24] {
            server.write_all(b"x").await.expect("write");
            dog.sweep_once(start + Duration::from_secs(second));
        }
        assert!(watch.check().is_ok(), "writing every 8 s keeps the connection");
        for second in [30, 35] {
            client.write_all(b"GET / HTTP/1.1\r\nX-Drip: 1\r\n").await.expect("drip");
            let mut buf = [0u8; 64];
            let _ = server.read(&mut buf).await.expect("read");
            dog.sweep_once(start + Duration::from_secs(second));
        }
        assert!(watch.check().is_err(), "dripping header bytes is not progress");
        let mut buf = [0u8; 8];
        assert_eq!(server.read(&mut buf).await.expect_err("read").kind(), io::ErrorKind::TimedOut);
        assert_eq!(server.write(b"x").await.expect_err("write").kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_cut_off_wakes_the_task_waiting_on_the_socket() {
        let (_client, server) = tokio::io::duplex(64);
        let dog = Watchdog::start(Duration::from_millis(300));
        let mut server = Watched::new(server, dog.watch(), refusals());
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 8];
            tokio::io::AsyncReadExt::read(&mut server, &mut buf).await
        });
        let outcome = read.await.expect("the sweeper woke the waiting read");
        assert_eq!(outcome.expect_err("cut off").kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_drain_wakes_every_connection_waiting_on_its_socket_and_flags_it() {
        let dog = Watchdog::new(Duration::from_secs(10));
        let (client, server) = tokio::io::duplex(64);
        let watch = dog.watch();
        let left = dog.watch();
        left.leave();
        let mut server = Watched::new(server, Arc::clone(&watch), refusals());
        let reading = tokio::spawn({
            let watch = Arc::clone(&watch);
            async move {
                let mut buf = [0u8; 8];
                // Stands for hyper's connection future: it reads until woken, then checks the flag.
                std::future::poll_fn(|cx| {
                    let mut read = ReadBuf::new(&mut buf);
                    match Pin::new(&mut server).poll_read(cx, &mut read) {
                        Poll::Pending if watch.draining() => Poll::Ready(true),
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(_) => Poll::Ready(false),
                    }
                })
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!watch.draining() && !reading.is_finished());
        dog.drain();
        let woken = tokio::time::timeout(Duration::from_secs(5), reading).await;
        assert!(woken.expect("woken by the drain").expect("task"), "saw the drain flag");
        assert!(left.draining(), "a connection that left the watch sees the drain too");
        drop(client);
    }

    #[tokio::test]
    async fn hypers_own_answer_goes_out_as_a_whole_problem_even_through_a_narrow_socket() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // 64 bytes of buffer: the replacement goes out over many writes and the flush.
        let (mut client, server) = tokio::io::duplex(64);
        let dog = Watchdog::new(Duration::from_secs(10));
        let mut server = Watched::new(server, dog.watch(), refusals());
        let reading = tokio::spawn(async move {
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.expect("read");
            String::from_utf8(all).expect("utf-8")
        });
        let hyper = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Sun, 29 Nov 2026 05:48:40 GMT\r\n\r\n";
        server.write_all(hyper).await.expect("write");
        server.shutdown().await.expect("flushed and shut down");
        drop(server);
        let sent = reading.await.expect("task");
        let (head, body) = sent.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())), "{head}");
        assert!(body.contains(r#""status":400"#), "{body}");
    }

    #[tokio::test]
    async fn a_close_lingers_while_the_client_still_sends_and_not_when_it_is_idle() {
        use tokio::io::AsyncWriteExt;
        let dog = Watchdog::new(Duration::from_secs(10));
        let (_idle_client, idle) = tokio::io::duplex(1024);
        let mut idle = Watched::new(idle, dog.watch(), refusals());
        let closed = tokio::time::timeout(Duration::from_secs(5), idle.shutdown()).await;
        assert!(closed.expect("an idle client's connection closes at once").is_ok());

        let (mut client, sending) = tokio::io::duplex(1024);
        let mut sending = Watched::new(sending, dog.watch(), refusals());
        client.write_all(b"the rest of a body").await.expect("write");
        let closing = tokio::spawn(async move { sending.shutdown().await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!closing.is_finished(), "the close waits for a client that is still sending");
        client.write_all(&[b'x'; 4096]).await.expect("more of the body is read and dropped");
        drop(client);
        let closed = tokio::time::timeout(Duration::from_secs(5), closing).await;
        assert!(closed.expect("closed once the client closed").expect("task").is_ok());
    }

    #[tokio::test]
    async fn upgraded_connections_are_never_cut_off_and_closed_ones_leave_the_table() {
        let dog = Watchdog::new(Duration::from_secs(10));
        let upgraded = dog.watch();
        upgraded.begin().upgraded();
        let closed = dog.watch();
        drop(closed);
        let kept = dog.watch();
        dog.sweep_once(Instant::now());
        assert_eq!(entries(&dog), 2, "the closed one is forgotten; the upgraded one stays for a drain");
        dog.sweep_once(Instant::now() + Duration::from_secs(3600));
        assert!(upgraded.check().is_ok(), "an upgraded connection is not cut off");
        assert!(kept.check().is_err());
        assert_eq!(entries(&dog), 1);
        let weak = Arc::downgrade(&dog);
        drop((dog, upgraded, kept));
        assert!(weak.upgrade().is_none(), "nothing else holds the table once its connections are gone");
    }
}
