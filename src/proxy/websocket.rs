//! WebSocket tunnels. An `Upgrade: websocket` request is authenticated like
//! any other, forwarded on a connection of its own, and once the upstream
//! answers 101 the two connections are relayed both ways, with back-pressure
//! (a side is read only as fast as the other takes what was read).
//!
//! The relay keeps track of where the WebSocket frames begin and end in each
//! direction (their headers say how long they are), so that it can close the
//! tunnel cleanly: when the session the tunnel was opened with is revoked,
//! or ends (its refresh lifetime, or its idle timeout), it waits for the
//! frames in flight to finish and sends the client a close frame (1008,
//! `session revoked` or `session ended`) and the upstream one (1001), and
//! on a shutdown 1001 to both. An idle tunnel holds no buffer and costs
//! nothing but its two sockets and one timer.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, Method};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::domain::SessionId;
use crate::revocation::Revocations;
use crate::store::{SessionFate, Store};
use crate::time::UnixMillis;

/// How long a closing tunnel waits for the frames in flight to finish.
const CLOSING_GRACE: Duration = Duration::from_secs(2);
/// How long a tunnel waits before asking again when its session's end
/// cannot be read (the database is unreachable).
const SESSION_RECHECK: Duration = Duration::from_secs(30);

/// Whether a request asks to become a WebSocket (RFC 6455 4.1).
pub fn is_websocket_upgrade(method: &Method, headers: &HeaderMap) -> bool {
    let has_token = |name, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .as_bytes()
                .split(|&b| b == b',')
                .any(|part| part.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    method == Method::GET && has_token(UPGRADE, "websocket") && has_token(CONNECTION, "upgrade")
}

/// What a tunnel watches to know when to close.
pub struct Watched {
    pub revocations: Arc<Revocations>,
    pub store: Store,
    pub idle_timeout: Option<Duration>,
    /// Becomes `true` when the gateway shuts down.
    pub draining: tokio::sync::watch::Receiver<bool>,
    /// The session the tunnel was opened with; `None` on a public route
    /// without a valid token.
    pub session: Option<SessionId>,
}

/// Why a tunnel was closed by the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closing {
    Revoked,
    Ended,
    Draining,
}

impl Closing {
    /// The close frame's code and reason for the client.
    fn to_client(self) -> (u16, &'static str) {
        match self {
            Closing::Revoked => (1008, "session revoked"),
            Closing::Ended => (1008, "session ended"),
            Closing::Draining => (1001, "going away"),
        }
    }
}

/// A client connection, handed to its tunnel once the 101 is out.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientStream for T {}

/// What a tunnel runs, given the client connection.
pub type Tunnel =
    Box<dyn FnOnce(Box<dyn ClientStream>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Where a WebSocket handshake leaves its tunnel: the client connection
/// (see `server`) runs it on its socket once the 101 has gone out, after it
/// has dropped every buffer of its own.
#[derive(Clone, Default)]
pub struct TunnelHandoff(Arc<Mutex<Option<Tunnel>>>);

impl TunnelHandoff {
    pub fn leave(&self, tunnel: Tunnel) {
        *self.0.lock().expect("not poisoned") = Some(tunnel);
    }

    pub fn has_tunnel(&self) -> bool {
        self.0.lock().expect("not poisoned").is_some()
    }

    pub fn take(&self) -> Option<Tunnel> {
        self.0.lock().expect("not poisoned").take()
    }
}

/// Relays between the client and the upstream until either side closes or
/// the gateway closes the tunnel.
pub async fn relay(client: Box<dyn ClientStream>, upstream: Upgraded, watched: Watched) {
    let mut client = client;
    let mut upstream = TokioIo::new(upstream);
    let mut to_upstream = Direction::default();
    let mut to_client = Direction::default();
    let (mut up_done, mut down_done) = (false, false);

    let closing = {
        let closing = watch_for_closing(&watched);
        let mut closing = pin!(closing);
        let relayed = std::future::poll_fn(|cx| {
            if let Poll::Ready(closing) = closing.as_mut().poll(cx) {
                return Poll::Ready(Some(closing));
            }
            // Each side's end is passed on (a half-close stays a
            // half-close); the tunnel ends when both sides have ended, or
            // at the first error.
            if !up_done {
                match to_upstream.poll_relay(cx, &mut client, &mut upstream, false) {
                    Poll::Ready(Ok(())) => up_done = true,
                    Poll::Ready(Err(_)) => return Poll::Ready(None),
                    Poll::Pending => {}
                }
            }
            if !down_done {
                match to_client.poll_relay(cx, &mut upstream, &mut client, false) {
                    Poll::Ready(Ok(())) => down_done = true,
                    Poll::Ready(Err(_)) => return Poll::Ready(None),
                    Poll::Pending => {}
                }
            }
            if up_done && down_done {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        });
        relayed.await
    };
    let Some(closing) = closing else { return };
    tracing::info!(reason = ?closing, "closing a WebSocket tunnel");

    // Let the frames in flight finish, then say goodbye on each side that
    // stands between two frames.
    let finished = std::future::poll_fn(|cx| {
        let up = to_upstream.poll_relay(cx, &mut client, &mut upstream, true);
        let down = to_client.poll_relay(cx, &mut upstream, &mut client, true);
        if up.is_ready() && down.is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    let _ = tokio::time::timeout(CLOSING_GRACE, finished).await;
    let (code, reason) = closing.to_client();
    if to_client.is_between_frames() {
        let _ = client.write_all(&close_frame(code, reason, None)).await;
    }
    if to_upstream.is_between_frames() {
        let mask: [u8; 4] = rand::random();
        let _ = upstream
            .write_all(&close_frame(1001, "going away", Some(mask)))
            .await;
    }
    let _ = tokio::time::timeout(CLOSING_GRACE, async {
        let _ = client.shutdown().await;
        let _ = upstream.shutdown().await;
    })
    .await;
}

/// Completes when the tunnel must close, saying why.
async fn watch_for_closing(watched: &Watched) -> Closing {
    let mut draining = watched.draining.clone();
    let draining = async move {
        let _ = draining.wait_for(|draining| *draining).await;
    };
    let Some(session) = &watched.session else {
        draining.await;
        return Closing::Draining;
    };
    let revocation = watched.revocations.watch(session);
    tokio::select! {
        () = revocation.revoked() => Closing::Revoked,
        closing = session_end(&watched.store, session, watched.idle_timeout) => closing,
        () = draining => Closing::Draining,
    }
}

/// Completes when the session ends by time (or turns out revoked): one
/// database read at the start and one at each deadline, none in between.
async fn session_end(store: &Store, session: &SessionId, idle: Option<Duration>) -> Closing {
    loop {
        // The tunnel lives on a data-plane worker; the database does not.
        let fate = store.control().run({
            let (store, session) = (store.clone(), session.clone());
            async move { store.session_fate(&session, idle).await }
        });
        match fate.await {
            Ok(SessionFate::Revoked) => return Closing::Revoked,
            Ok(SessionFate::Ended) => return Closing::Ended,
            Ok(SessionFate::EndsAt(end)) => {
                let wait = end.since(UnixMillis::now());
                if wait.is_zero() {
                    return Closing::Ended;
                }
                tokio::time::sleep(wait).await;
            }
            Err(error) => {
                tracing::debug!(%error, "cannot read when a tunnel's session ends; asking again later");
                tokio::time::sleep(SESSION_RECHECK).await;
            }
        }
    }
}

/// A close frame (RFC 6455 5.5.1); masked when it goes to the upstream,
/// since it then comes from us as a client.
fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    let mut frame = vec![0x88, payload.len() as u8];
    if let Some(mask) = mask {
        frame[1] |= 0x80;
        frame.extend_from_slice(&mask);
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
    }
    frame.extend_from_slice(&payload);
    frame
}

/// One direction of the relay.
#[derive(Default)]
struct Direction {
    /// Read but not yet written; empty (and unallocated) while idle.
    pending: Vec<u8>,
    written: usize,
    frames: FrameBoundary,
    eof: bool,
}

/// Bytes read at a time; held on the stack, copied only when the other
/// side cannot take them all at once.
const CHUNK: usize = 8 * 1024;

impl Direction {
    fn is_between_frames(&self) -> bool {
        self.pending.len() == self.written && self.frames.is_between_frames()
    }

    /// Moves bytes from `from` to `to`. Ready when `from` ended (after
    /// shutting `to` down), or, when `closing`, once the direction stands
    /// between two frames with nothing left to write.
    fn poll_relay<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        closing: bool,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            while self.written < self.pending.len() {
                let n = ready!(Pin::new(&mut *to).poll_write(cx, &self.pending[self.written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.frames
                    .advance(&self.pending[self.written..self.written + n]);
                self.written += n;
            }
            if !self.pending.is_empty() {
                // Written out: give the buffer back while the tunnel idles.
                self.pending = Vec::new();
                self.written = 0;
            }
            if self.eof {
                return Pin::new(&mut *to).poll_shutdown(cx);
            }
            if closing && self.frames.is_between_frames() {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; CHUNK];
            let mut buffer = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut *from).poll_read(cx, &mut buffer))?;
            let read = buffer.filled();
            if read.is_empty() {
                self.eof = true;
                continue;
            }
            // Most reads go straight out in one write.
            match Pin::new(&mut *to).poll_write(cx, read) {
                Poll::Ready(Ok(n)) if n == read.len() => self.frames.advance(read),
                Poll::Ready(Ok(n)) => {
                    self.frames.advance(&read[..n]);
                    self.pending = read[n..].to_vec();
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => self.pending = read.to_vec(),
            }
        }
    }
}

/// Where a stream of WebSocket frames stands: inside a frame's header,
/// inside its payload, or between two frames.
#[derive(Default)]
struct FrameBoundary {
    header: [u8; 14],
    header_len: usize,
    payload_left: u64,
}

impl FrameBoundary {
    fn is_between_frames(&self) -> bool {
        self.header_len == 0 && self.payload_left == 0
    }

    fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = (bytes.len() as u64).min(self.payload_left);
                self.payload_left -= n;
                bytes = &bytes[n as usize..];
                continue;
            }
            self.header[self.header_len] = bytes[0];
            self.header_len += 1;
            bytes = &bytes[1..];
            if let Some(payload) = payload_length(&self.header[..self.header_len]) {
                self.payload_left = payload;
                self.header_len = 0;
            }
        }
    }
}

/// A frame's payload length, once `header` holds all of the frame's header
/// (RFC 6455 5.2); `None` while more header bytes are to come.
fn payload_length(header: &[u8]) -> Option<u64> {
    if header.len() < 2 {
        return None;
    }
    let masked = header[1] & 0x80 != 0;
    let mask_len = if masked { 4 } else { 0 };
    let (length_len, short) = match header[1] & 0x7f {
        126 => (2, None),
        127 => (8, None),
        length => (0, Some(u64::from(length))),
    };
    if header.len() < 2 + length_len + mask_len {
        return None;
    }
    Some(short.unwrap_or_else(|| {
        header[2..2 + length_len]
            .iter()
            .fold(0u64, |length, &byte| length << 8 | u64::from(byte))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_boundaries_are_found_across_reads() {
        let mut frames = FrameBoundary::default();
        // A 5-byte unmasked text frame, a 300-byte masked one, a close frame.
        let mut stream = vec![0x81, 5];
        stream.extend_from_slice(b"hello");
        stream.extend_from_slice(&[0x82, 0x80 | 126, 0x01, 0x2c, 1, 2, 3, 4]);
        stream.extend_from_slice(&[7u8; 300]);
        stream.extend_from_slice(&close_frame(1000, "bye", None));
        let mut boundaries = Vec::new();
        for (i, byte) in stream.iter().enumerate() {
            frames.advance(std::slice::from_ref(byte));
            if frames.is_between_frames() {
                boundaries.push(i + 1);
            }
        }
        assert_eq!(boundaries, [7, 7 + 308, stream.len()]);
    }

    #[test]
    fn close_frames_carry_the_code_and_reason() {
        assert_eq!(
            close_frame(1008, "session revoked", None)[..4],
            [0x88, 17, 0x03, 0xf0]
        );
        let masked = close_frame(1001, "going away", Some([1, 2, 3, 4]));
        assert_eq!(masked[..2], [0x88, 0x80 | 12]);
        let payload: Vec<u8> = masked[6..]
            .iter()
            .enumerate()
            .map(|(i, byte)| byte ^ [1, 2, 3, 4][i % 4])
            .collect();
        assert_eq!(payload[..2], 1001u16.to_be_bytes());
        assert_eq!(&payload[2..], b"going away");
    }

    #[test]
    fn only_websocket_upgrades_are_tunnelled() {
        use crate::test_support::headers;
        let upgrade = headers(&[
            ("upgrade", "WebSocket"),
            ("connection", "keep-alive, Upgrade"),
        ]);
        assert!(is_websocket_upgrade(&Method::GET, &upgrade));
        assert!(!is_websocket_upgrade(&Method::POST, &upgrade));
        let h2c = headers(&[("upgrade", "h2c"), ("connection", "upgrade")]);
        assert!(!is_websocket_upgrade(&Method::GET, &h2c));
    }
}
