//! A connection's I/O, noting when bytes last moved, so that connections
//! that sit idle can be parked or closed. hyper's header read timeout starts only with
//! a request's first byte, so a client that connects and sends nothing, or
//! leaves a keep-alive connection idle, would otherwise hold it forever.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// When a connection's bytes last moved, shared with its watchdog.
#[derive(Clone)]
pub struct Activity(Arc<Moments>);

struct Moments {
    opened: Instant,
    /// Milliseconds after `opened` of the last read; `u64::MAX` until the
    /// first byte is read.
    read_ms: AtomicU64,
    /// Milliseconds after `opened` of the last write, `u64::MAX` until then.
    written_ms: AtomicU64,
    /// Whether the last bytes that moved were written.
    wrote_last: AtomicBool,
}

impl Activity {
    pub fn new() -> Activity {
        Activity(Arc::new(Moments {
            opened: Instant::now(),
            read_ms: AtomicU64::new(u64::MAX),
            written_ms: AtomicU64::new(u64::MAX),
            wrote_last: AtomicBool::new(false),
        }))
    }

    fn touch(&self, wrote: bool) {
        let moments = &*self.0;
        let now = moments.opened.elapsed().as_millis() as u64;
        let at = if wrote {
            &moments.written_ms
        } else {
            &moments.read_ms
        };
        at.store(now, Ordering::Relaxed);
        moments.wrote_last.store(wrote, Ordering::Relaxed);
    }

    /// How long since bytes last moved, and whether the client ever sent any.
    pub fn idle(&self) -> (Duration, bool) {
        let moments = &*self.0;
        let read = moments.read_ms.load(Ordering::Relaxed);
        let written = moments.written_ms.load(Ordering::Relaxed);
        let last = match (read, written) {
            (u64::MAX, u64::MAX) => return (moments.opened.elapsed(), false),
            (u64::MAX, at) | (at, u64::MAX) => at,
            (read, written) => read.max(written),
        };
        (
            moments
                .opened
                .elapsed()
                .saturating_sub(Duration::from_millis(last)),
            read != u64::MAX,
        )
    }

    /// Whether nothing was read since the last write: the client's requests
    /// have been answered, at least in part.
    pub fn answered_last(&self) -> bool {
        self.0.wrote_last.load(Ordering::Relaxed)
    }
}

pin_project! {
    pub struct Tracked<T> {
        #[pin]
        io: T,
        activity: Activity,
    }
}

impl<T> Tracked<T> {
    pub fn new(io: T, activity: Activity) -> Tracked<T> {
        Tracked { io, activity }
    }

    pub fn into_inner(self) -> T {
        self.io
    }
}

impl<T: AsyncRead> AsyncRead for Tracked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.io.poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch(false);
        }
        result
    }
}

impl<T: AsyncWrite> AsyncWrite for Tracked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.io.poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch(true);
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.io.poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch(true);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}
