//! One client connection, from its first byte to its close.
//!
//! HTTP/2 (a client that opens with the preface) is served by hyper until it
//! ends. HTTP/1 is served in episodes: hyper serves requests until the
//! connection has been idle for [`PARK_AFTER`], then hands the socket back
//! (with any bytes it read but did not parse), and the connection is
//! *parked*: it holds the socket and nothing else, no hyper state and none
//! of its two 8 KiB buffers, until the client sends again. Ten thousand
//! idle keep-alive connections then cost ten thousand sockets, not 200 MB.
//!
//! A WebSocket handshake ends an episode too: once its 101 is out, the
//! tunnel the handshake left in the connection's [`TunnelHandoff`] runs on
//! the socket.
//!
//! Idle connections are closed: one that never sends a request after
//! [`HEADER_READ_TIMEOUT`], one idle between requests after the keep-alive
//! timeout. A draining gateway closes parked connections at once and lets
//! busy ones finish their request.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::activity::{Activity, Tracked};
use crate::proxy::websocket::TunnelHandoff;

/// A client must finish sending its request head within this.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// An HTTP/1 connection idle this long is parked.
const PARK_AFTER: Duration = Duration::from_secs(2);
/// The largest request head accepted; larger ones are answered 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The protocol settings every connection of a worker shares.
pub struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Protocols {
    pub fn new() -> Protocols {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            // Both: the buffer bound alone lets a larger head through when
            // it arrives whole in one read.
            .max_header_size(MAX_HEAD_BYTES)
            .max_buf_size(MAX_HEAD_BYTES);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2.timer(TokioTimer::new());
        Protocols { http1, http2 }
    }
}

/// The hyper service a connection's requests go to.
pub trait Service:
    hyper::service::Service<
        http::Request<hyper::body::Incoming>,
        Response = http::Response<super::ResponseBody>,
        Error = std::convert::Infallible,
        Future: Send + Unpin + 'static,
    > + Send
    + Unpin
    + 'static
{
}

impl<S> Service for S where
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<super::ResponseBody>,
            Error = std::convert::Infallible,
            Future: Send + Unpin + 'static,
        > + Send
        + Unpin
        + 'static
{
}

/// A client connection and what watches over it.
pub struct ClientConnection<'a> {
    pub protocols: &'a Protocols,
    pub stream: TcpStream,
    pub activity: Activity,
    pub on_drain: watch::Receiver<bool>,
    pub handoff: TunnelHandoff,
    /// How long a connection may sit idle between requests.
    pub idle_timeout: Duration,
}

/// How an HTTP/1 episode ended.
enum Episode<S> {
    /// Idle: the socket and the bytes read ahead come back.
    Parked(Bytes, TcpStream, S),
    /// A WebSocket handshake was answered: the tunnel takes the socket.
    Upgraded(Bytes, TcpStream),
    Closed,
}

type Http1Io = TokioIo<Prefixed<Tracked<TcpStream>>>;

impl ClientConnection<'_> {
    /// Serves the connection until it closes.
    pub async fn serve(self, service: impl Service) {
        match self.opens_with_http2_preface().await {
            // Boxed: the HTTP/2 state is large, and a parked HTTP/1
            // connection's task would otherwise keep room for it.
            Ok(true) => Box::pin(self.serve_http2(service)).await,
            Ok(false) => self.serve_http1(service).await,
            // Silent past the header timeout, or gone.
            Err(_) => {}
        }
    }

    /// Whether the client speaks HTTP/2 with prior knowledge: its first
    /// bytes are the preface's (peeked, so nothing is consumed).
    async fn opens_with_http2_preface(&self) -> io::Result<bool> {
        const PREFACE: &[u8] = b"PRI ";
        let peek = async {
            let mut head = [0u8; PREFACE.len()];
            loop {
                let n = self.stream.peek(&mut head).await?;
                if n == 0 || head[..n] != PREFACE[..n] {
                    return Ok(false);
                }
                if n == PREFACE.len() {
                    return Ok(true);
                }
                // Only the start of it so far.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(HEADER_READ_TIMEOUT, peek)
            .await
            .map_err(|_| io::ErrorKind::TimedOut)?
    }

    async fn serve_http2(mut self, service: impl Service) {
        let io = TokioIo::new(Tracked::new(self.stream, self.activity.clone()));
        let connection = self.protocols.http2.serve_connection(io, service);
        let mut connection = std::pin::pin!(connection);
        let mut watchdog = Watchdog::new(self.idle_timeout);
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                    return;
                }
                _ = self.on_drain.changed(), if !watchdog.closing => {
                    watchdog.closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = watchdog.sleep.as_mut() => match watchdog.check(&self.activity, false) {
                    Verdict::Drop => return,
                    Verdict::Close | Verdict::Park => connection.as_mut().graceful_shutdown(),
                    Verdict::Wait => {}
                },
            }
        }
    }

    async fn serve_http1<S: Service>(mut self, service: S) {
        let mut service = service;
        let mut read_ahead = Bytes::new();
        let mut stream = self.stream;
        loop {
            let io = TokioIo::new(Prefixed::new(
                read_ahead,
                Tracked::new(stream, self.activity.clone()),
            ));
            let connection = self.protocols.http1.serve_connection(io, service);
            // Boxed: a parked connection's task keeps no room for hyper.
            let episode = Box::pin(http1_episode(
                connection,
                &self.activity,
                &mut self.on_drain,
                &self.handoff,
                self.idle_timeout,
            ))
            .await;
            match episode {
                Episode::Parked(bytes, parked, back) => {
                    (read_ahead, stream, service) = (bytes, parked, back);
                }
                Episode::Upgraded(bytes, upgraded) => {
                    match self.handoff.take() {
                        Some(tunnel) => tunnel(Box::new(Prefixed::new(bytes, upgraded))).await,
                        None => tracing::debug!("a 101 without a tunnel; closing"),
                    }
                    return;
                }
                Episode::Closed => return,
            }
            if read_ahead.is_empty()
                && !park(
                    &stream,
                    &self.activity,
                    &mut self.on_drain,
                    self.idle_timeout,
                )
                .await
            {
                return;
            }
        }
    }
}

/// Waits, holding nothing, for the client to send again; `false` when the
/// connection should close instead (idle too long, draining, gone).
async fn park(
    stream: &TcpStream,
    activity: &Activity,
    on_drain: &mut watch::Receiver<bool>,
    idle_timeout: Duration,
) -> bool {
    if *on_drain.borrow_and_update() {
        return false;
    }
    let (idle, _) = activity.idle();
    let wait = idle_timeout.saturating_sub(idle);
    tokio::select! {
        readable = tokio::time::timeout(wait, stream.readable()) => {
            matches!(readable, Ok(Ok(())))
        }
        _ = on_drain.changed() => false,
    }
}

/// Serves HTTP/1 requests until the connection is idle long enough to park,
/// upgrades, or closes.
async fn http1_episode<S: Service>(
    connection: http1::Connection<Http1Io, S>,
    activity: &Activity,
    on_drain: &mut watch::Receiver<bool>,
    handoff: &TunnelHandoff,
    idle_timeout: Duration,
) -> Episode<S> {
    let mut connection = connection;
    let mut watchdog = Watchdog::new(idle_timeout);
    let mut parking = false;
    let finished = loop {
        tokio::select! {
            result = std::future::poll_fn(|cx| connection.poll_without_shutdown(cx)) => break result,
            _ = on_drain.changed(), if !watchdog.closing => {
                watchdog.closing = true;
                Pin::new(&mut connection).graceful_shutdown();
            }
            () = watchdog.sleep.as_mut() => match watchdog.check(activity, !parking) {
                Verdict::Drop => return Episode::Closed,
                Verdict::Close => Pin::new(&mut connection).graceful_shutdown(),
                Verdict::Park => {
                    // Idle: hyper stops at once, without answering
                    // `Connection: close`, and hands the socket back.
                    parking = true;
                    Pin::new(&mut connection).graceful_shutdown();
                }
                Verdict::Wait => {}
            },
        }
    };
    if let Err(error) = finished {
        tracing::debug!(%error, "connection ended with an error");
        return Episode::Closed;
    }
    let parts = connection.into_parts();
    let (unread, tracked) = parts.io.into_inner().into_parts();
    let mut read_ahead = BytesMut::from(unread);
    read_ahead.extend_from_slice(&parts.read_buf);
    let mut stream = tracked.into_inner();
    if handoff.has_tunnel() {
        return Episode::Upgraded(read_ahead.freeze(), stream);
    }
    if parking && !watchdog.closing {
        return Episode::Parked(read_ahead.freeze(), stream, parts.service);
    }
    // Ended by the client, by `Connection: close`, or by draining.
    let _ = stream.shutdown().await;
    Episode::Closed
}

/// What the watchdog of a connection decided.
enum Verdict {
    /// Still nothing moving after being asked to finish: a client that
    /// stopped reading.
    Drop,
    /// Idle past its limit: finish and close.
    Close,
    /// Idle long enough to park (HTTP/1).
    Park,
    Wait,
}

/// One timer per connection, re-armed to the moment it next has something
/// to decide, rather than a tick that wakes every idle connection.
struct Watchdog {
    sleep: Pin<Box<tokio::time::Sleep>>,
    idle_timeout: Duration,
    closing: bool,
}

impl Watchdog {
    fn new(idle_timeout: Duration) -> Watchdog {
        Watchdog {
            sleep: Box::pin(tokio::time::sleep(PARK_AFTER.min(HEADER_READ_TIMEOUT))),
            idle_timeout,
            closing: false,
        }
    }

    fn check(&mut self, activity: &Activity, may_park: bool) -> Verdict {
        let (idle, spoke) = activity.idle();
        let limit = if spoke {
            self.idle_timeout
        } else {
            HEADER_READ_TIMEOUT
        };
        if idle >= limit * 2 {
            return Verdict::Drop;
        }
        let verdict = if idle >= limit && !self.closing {
            self.closing = true;
            Verdict::Close
        } else if may_park && !self.closing && idle >= PARK_AFTER && activity.answered_last() {
            Verdict::Park
        } else {
            Verdict::Wait
        };
        let next = if idle >= limit {
            limit * 2
        } else if may_park && idle < PARK_AFTER {
            PARK_AFTER
        } else {
            limit
        };
        let wait = next.saturating_sub(idle).max(Duration::from_millis(10));
        self.sleep
            .as_mut()
            .reset(tokio::time::Instant::now() + wait);
        verdict
    }
}

/// An I/O whose first bytes were already read: they are read again first.
pub struct Prefixed<T> {
    prefix: Bytes,
    io: T,
}

impl<T> Prefixed<T> {
    pub fn new(prefix: Bytes, io: T) -> Prefixed<T> {
        Prefixed { prefix, io }
    }

    /// The prefix bytes not yet read, and the I/O.
    pub fn into_parts(self) -> (Bytes, T) {
        (self.prefix, self.io)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
