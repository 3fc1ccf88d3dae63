//! A lingering close (nginx's `lingering_close`): when hyper closes a connection whose client
//! is still sending (a body too large, or one the handler never read), the socket is shut for
//! writing and what still arrives is read and thrown away, until the client closes,
//! [`LINGER_FOR`] has passed or [`LINGER_BYTES`] were read.
//!
//! Why: closing a socket with unread data makes the kernel reset the connection, and a client
//! still writing its body would see the reset instead of the answer (a 413 problem, say)
//! already sent to it. Only a client whose data is already waiting is lingered for: an idle
//! one (a pooled keep-alive connection, a graceful shutdown) is closed at once.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long a closing connection may keep reading what the client still sends.
const LINGER_FOR: Duration = Duration::from_secs(5);

/// How much a lingering close reads and throws away at most.
const LINGER_BYTES: usize = 64 * 1024 * 1024;

pin_project_lite::pin_project! {
    /// A socket whose shutdown lingers (see the module's documentation); reads and writes
    /// pass straight through.
    #[derive(Debug)]
    pub struct Lingering<T> {
        #[pin]
        io: T,
        linger: Option<Linger>,
    }
}

#[derive(Debug)]
struct Linger {
    until: Pin<Box<tokio::time::Sleep>>,
    discarded: usize,
}

impl<T> Lingering<T> {
    pub fn new(io: T) -> Self {
        Self { io, linger: None }
    }
}

impl<T: AsyncRead> AsyncRead for Lingering<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite> AsyncWrite for Lingering<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        let mut buf = [0u8; 8192];
        let linger = match this.linger {
            Some(linger) => linger,
            None => {
                ready!(this.io.as_mut().poll_shutdown(cx))?;
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
