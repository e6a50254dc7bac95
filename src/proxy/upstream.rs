//! Connections to one upstream: a bounded pool of HTTP/1.1 keep-alive
//! connections (TLS for `https://` upstreams), each driven by a task of its
//! own on the runtime that opened it: its home. A data-plane worker takes its
//! own idle connections first, so a proxied request stays on one thread.
//!
//! A request checks a connection out, and its response body hands it back
//! when the body ends, so a connection is never shared by two requests and
//! never waited on while another response streams. At most
//! `max_connections` are open, idle or busy; requests beyond that wait for
//! one to come back. Idle connections are closed after [`IDLE_TIMEOUT`].
//!
//! An upstream may close a keep-alive connection just as a request is sent
//! on it. Such a request is retried once, on a fresh connection, when none
//! of it was written or when it is idempotent and has no body: never a
//! non-idempotent request whose bytes reached the upstream.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::oneshot;
use tower::Service;

use crate::body::{Body, BoxError};
use crate::runtime;

/// An idle connection is closed after this long unused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often idle connections are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

type Sender = SendRequest<Body>;

/// The connections to one upstream.
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    connector: HttpsConnector<HttpConnector>,
    max_connections: usize,
    pool: Mutex<PoolState>,
}

struct PoolState {
    /// By home (the worker's index; the last for any other thread), most
    /// recently used last: the warmest connection goes out first.
    idle: Vec<Vec<Idle>>,
    /// Connections open or being opened, idle ones included.
    open: usize,
    /// Requests waiting for a connection, oldest first.
    waiters: VecDeque<oneshot::Sender<Grant>>,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

impl Idle {
    fn is_usable(&self) -> bool {
        self.since.elapsed() < IDLE_TIMEOUT && !self.sender.is_closed()
    }
}

/// A connection and the home whose runtime drives it.
struct Conn {
    sender: Sender,
    home: usize,
}

/// What a waiting request is given: a connection, or room to open one.
enum Grant {
    Connection(Conn),
    Room,
}

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to the upstream: {0}")]
    Connect(BoxError),
    #[error("{0}")]
    Request(#[source] hyper::Error),
}

impl Upstream {
    pub fn new(
        uri: &Uri,
        connector: HttpsConnector<HttpConnector>,
        max_connections: usize,
    ) -> Arc<Upstream> {
        Arc::new(Upstream {
            scheme: uri.scheme().cloned().unwrap_or(Scheme::HTTP),
            authority: uri
                .authority()
                .cloned()
                .expect("upstream URLs are validated"),
            connector,
            max_connections: max_connections.max(1),
            pool: Mutex::new(PoolState {
                idle: (0..=runtime::worker_count()).map(|_| Vec::new()).collect(),
                open: 0,
                waiters: VecDeque::new(),
            }),
        })
    }

    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Closes idle connections past [`IDLE_TIMEOUT`] every few seconds, for
    /// as long as the upstream exists.
    pub fn spawn_sweeper(self: &Arc<Self>) {
        let upstream = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(SWEEP_INTERVAL);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(upstream) = upstream.upgrade() else {
                    return;
                };
                upstream.close_expired();
            }
        });
    }

    /// Sends `request` (origin-form URI, `Host` set) and returns the
    /// response, whose body gives the connection back when it ends.
    pub async fn send(
        self: &Arc<Self>,
        request: Request<Body>,
    ) -> Result<Response<Body>, UpstreamError> {
        let mut conn = self.checkout().await?;
        if conn.sender.ready().await.is_err() {
            // Closed while it sat idle: its room serves a fresh one.
            conn = self.connect_reserved().await?;
        }
        // The connection may be closing under us: keep what a retry needs,
        // when a retry is allowed after the bytes went out.
        let replay = is_replayable(&request).then(|| Replay::of(&request));
        let mut failed = match conn.sender.try_send_request(request).await {
            Ok(response) => return Ok(self.attach(response, conn)),
            Err(failed) => failed,
        };
        let request = match (failed.take_message(), replay) {
            // Never written: any request may go again.
            (Some(request), _) => request,
            (None, Some(replay)) => replay.into_request(),
            (None, None) => {
                self.forget();
                return Err(UpstreamError::Request(failed.into_error()));
            }
        };
        tracing::debug!(error = %failed.error(), "upstream connection failed under a request; retrying once on a fresh one");
        let mut conn = self.connect_reserved().await?;
        match conn.sender.try_send_request(request).await {
            Ok(response) => Ok(self.attach(response, conn)),
            Err(failed) => {
                self.forget();
                Err(UpstreamError::Request(failed.into_error()))
            }
        }
    }

    /// Opens a connection for an upgrade (WebSocket): the request's own,
    /// never pooled, and outside the pool's bound (tunnels are bounded by
    /// the client connections they come from).
    pub async fn connect_for_upgrade(&self) -> Result<Sender, UpstreamError> {
        Ok(self.connect(true).await?.sender)
    }

    /// One of this home's idle connections, or a new one when there is room,
    /// or another home's idle one, or the next one to come back.
    async fn checkout(self: &Arc<Self>) -> Result<Conn, UpstreamError> {
        let home = home();
        let waiter = {
            let mut pool = self.lock();
            if let Some(conn) = pool.take_idle(home) {
                return Ok(conn);
            }
            if pool.open >= self.max_connections {
                // Full: another home's idle connection rather than a wait
                // (and the unusable ones met on the way make room).
                if let Some(conn) = (0..pool.idle.len()).find_map(|other| pool.take_idle(other)) {
                    return Ok(conn);
                }
            }
            if pool.open < self.max_connections {
                pool.open += 1;
                None
            } else {
                let (grant, waiter) = oneshot::channel();
                pool.waiters.push_back(grant);
                Some(waiter)
            }
        };
        match waiter {
            None => self.connect_reserved().await,
            Some(waiter) => match waiter.await {
                Ok(Grant::Connection(conn)) => Ok(conn),
                Ok(Grant::Room) => self.connect_reserved().await,
                Err(_) => unreachable!("grants are sent, never dropped, while the pool lives"),
            },
        }
    }

    /// Opens a connection in room already counted in `open`; gives the room
    /// back if it cannot.
    async fn connect_reserved(&self) -> Result<Conn, UpstreamError> {
        let connected = self.connect(false).await;
        if connected.is_err() {
            self.forget();
        }
        connected
    }

    async fn connect(&self, upgrades: bool) -> Result<Conn, UpstreamError> {
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query("/")
            .build()
            .expect("scheme and authority make a URI");
        let stream = self
            .connector
            .clone()
            .call(uri)
            .await
            .map_err(UpstreamError::Connect)?;
        let (sender, connection) = http1::Builder::new()
            .handshake(stream)
            .await
            .map_err(|error| UpstreamError::Connect(error.into()))?;
        tokio::spawn(async move {
            let ended = if upgrades {
                connection.with_upgrades().await
            } else {
                connection.await
            };
            if let Err(error) = ended {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
        Ok(Conn {
            sender,
            home: home(),
        })
    }

    /// A connection is gone: its room goes to the first waiter, if any.
    fn forget(&self) {
        let mut pool = self.lock();
        while let Some(waiter) = pool.waiters.pop_front() {
            if waiter.send(Grant::Room).is_ok() {
                return;
            }
        }
        pool.open -= 1;
    }

    /// A connection whose response ended cleanly: to the first waiter, or
    /// idle at its home.
    fn give_back(&self, mut conn: Conn) {
        if conn.sender.is_closed() {
            return self.forget();
        }
        let mut pool = self.lock();
        while let Some(waiter) = pool.waiters.pop_front() {
            match waiter.send(Grant::Connection(conn)) {
                Ok(()) => return,
                Err(Grant::Connection(returned)) => conn = returned,
                Err(Grant::Room) => unreachable!("a connection was sent"),
            }
        }
        pool.idle[conn.home].push(Idle {
            sender: conn.sender,
            since: Instant::now(),
        });
    }

    fn close_expired(&self) {
        let mut pool = self.lock();
        let mut closed = 0;
        for idle in &mut pool.idle {
            let before = idle.len();
            idle.retain(Idle::is_usable);
            closed += before - idle.len();
        }
        pool.open -= closed;
    }

    fn attach(self: &Arc<Self>, response: Response<Incoming>, conn: Conn) -> Response<Body> {
        response.map(|body| {
            let returned = Returned {
                upstream: Arc::downgrade(self),
                conn: Some(conn),
            };
            if body.is_end_stream() {
                // Nothing more will come: the connection is free now.
                returned.finish();
                Body::new(EmptyBody)
            } else {
                Body::new(PooledBody {
                    body,
                    returned: Some(returned),
                })
            }
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.pool.lock().expect("the pool lock is never poisoned")
    }
}

impl PoolState {
    /// The warmest usable idle connection of `home`; the unusable ones met
    /// on the way are closed.
    fn take_idle(&mut self, home: usize) -> Option<Conn> {
        while let Some(idle) = self.idle[home].pop() {
            if idle.is_usable() {
                return Some(Conn {
                    sender: idle.sender,
                    home,
                });
            }
            self.open -= 1;
        }
        None
    }
}

/// The home of connections opened on this thread: its worker's index, or
/// the last one.
fn home() -> usize {
    runtime::current_worker().unwrap_or_else(runtime::worker_count)
}

/// The connection of a response, handed back when its body ended cleanly
/// and closed (forgotten) when it did not.
struct Returned {
    upstream: Weak<Upstream>,
    conn: Option<Conn>,
}

impl Returned {
    fn finish(mut self) {
        if let (Some(upstream), Some(conn)) = (self.upstream.upgrade(), self.conn.take()) {
            upstream.give_back(conn);
        }
    }
}

impl Drop for Returned {
    fn drop(&mut self) {
        if self.conn.take().is_some()
            && let Some(upstream) = self.upstream.upgrade()
        {
            // The body did not end: hyper closes a connection whose
            // response was abandoned.
            upstream.forget();
        }
    }
}

/// The upstream's response body; gives the connection back at its end.
struct PooledBody {
    body: Incoming,
    returned: Option<Returned>,
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(returned) = self.returned.take() {
                    returned.finish();
                }
            }
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => {
                if let Some(returned) = self.returned.take() {
                    returned.finish();
                }
            }
            _ => {}
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

struct EmptyBody;

impl http_body::Body for EmptyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        true
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(0)
    }
}

/// Safe to send twice: idempotent (RFC 9110 9.2.2) and without a body.
fn is_replayable(request: &Request<Body>) -> bool {
    matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    ) && request.body().is_end_stream()
}

/// What it takes to send a bodiless request again.
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Replay {
    fn of(request: &Request<Body>) -> Replay {
        Replay {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
        }
    }

    fn into_request(self) -> Request<Body> {
        let mut request = Request::new(Body::new(EmptyBody));
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers;
        request
    }
}

/// The error and its causes on one line, for the log.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
