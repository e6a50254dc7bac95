//! The accept loops on pre-bound listeners, the tower stack around the
//! request pipeline, and the process's life: signals, graceful shutdown (stop
//! accepting, let in-flight requests finish within a bounded grace period),
//! and the bound on connections. Connections that send nothing are closed
//! after the header timeout, idle keep-alive ones after a minute.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use socket2::{Domain, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::app::App;
use crate::body::BoxError;
use crate::config::Config;
use crate::error::ApiError;
use crate::pipeline::{self, ConnectionSlot, Listener};
use crate::routes::X_REQUEST_ID;

mod activity;
use activity::{Activity, Tracked};

/// How long in-flight requests may run on after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// A client must finish sending its request head within this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A keep-alive connection with no traffic for this long is closed.
const KEEP_ALIVE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections waiting to be accepted once `--max-connections` are open.
const LISTEN_BACKLOG: i32 = 4096;
/// The largest request head accepted; larger ones are answered 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The listeners a gateway serves, bound before it starts.
pub struct Listeners {
    pub public: TcpListener,
    /// `--admin-listen`: `/metrics` and `/health…` only.
    pub admin: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(public: TcpListener) -> Listeners {
        Listeners {
            public,
            admin: None,
        }
    }
}

/// Binds the configured listeners. The public one takes IPv4 and IPv6 when
/// bound to `[::]`.
pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
    let public = bind_one(config.listen)?;
    let admin = config.admin_listen.map(bind_one).transpose()?;
    Ok(Listeners { public, admin })
}

fn bind_one(address: SocketAddr) -> anyhow::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)
        .with_context(|| format!("cannot listen on {address}"))?;
    if address.is_ipv6() {
        // Dual-stack: IPv4 clients arrive as ::ffff:a.b.c.d and are recorded
        // as their IPv4 address.
        socket
            .set_only_v6(false)
            .with_context(|| format!("cannot listen on {address} for IPv4 too"))?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket
        .bind(&address.into())
        .with_context(|| format!("cannot listen on {address}"))?;
    socket
        .listen(LISTEN_BACKLOG)
        .with_context(|| format!("cannot listen on {address}"))?;
    Ok(TcpListener::from_std(socket.into())?)
}

/// Runs the gateway until SIGTERM or SIGINT, then drains: what
/// `tollgate serve` does once the configuration is valid.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    for warning in config.browser_warnings() {
        tracing::warn!("{warning}");
    }
    let listeners = bind(&config).await?;
    let app = App::build(config).await?;
    tracing::info!(
        listen = %listeners.public.local_addr()?,
        admin_listen = ?listeners.admin.as_ref().map(TcpListener::local_addr).transpose()?,
        database = app.store.backend().name(),
        active_kid = %app.keys.current().signing().kid,
        "tollgate is serving"
    );
    reload_keys_on_hangup(app.clone())?;
    run(listeners, app.clone(), shutdown_signal()).await?;
    app.store.close().await;
    Ok(())
}

/// SIGHUP re-reads the signing keys at once (they are also polled).
fn reload_keys_on_hangup(app: Arc<App>) -> anyhow::Result<()> {
    let mut hangup = signal(SignalKind::hangup()).context("cannot install a SIGHUP handler")?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match app.keys.reload().await {
                Ok(()) => tracing::info!(
                    active_kid = %app.keys.current().signing().kid,
                    "SIGHUP: reloaded the signing keys"
                ),
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "SIGHUP: cannot reload the signing keys")
                }
            }
        }
    });
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let mut terminate = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        _ = interrupt.recv() => tracing::info!("SIGINT received"),
    }
}

/// Serves `app` on `listeners` until `shutdown` completes, then drains.
pub async fn run(
    listeners: Listeners,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    let builder = Arc::new(builder);
    // Every connection (and tunnel) holds a receiver: `send` asks them to
    // finish, and `closed` completes once the last one has.
    let on_drain = app.draining.subscribe();
    let connections = Arc::new(Semaphore::new(app.config.max_connections));
    let mut accept_loops = JoinSet::new();
    let mut listeners_by_kind = vec![(listeners.public, Listener::Public)];
    listeners_by_kind.extend(listeners.admin.map(|admin| (admin, Listener::Admin)));
    for (listener, kind) in listeners_by_kind {
        accept_loops.spawn(accept_loop(
            listener,
            kind,
            builder.clone(),
            app.clone(),
            connections.clone(),
            on_drain.clone(),
        ));
    }
    shutdown.await;

    // Dropping the accept loops closes the listeners.
    accept_loops.shutdown().await;
    drop(on_drain);
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    app.draining.send_replace(true);
    tokio::select! {
        () = app.draining.closed() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!(
            grace_s = SHUTDOWN_GRACE.as_secs(),
            "shutdown grace period ran out; dropping the remaining connections"
        ),
    }
    Ok(())
}

/// Accepts connections while fewer than `--max-connections` are open; the
/// rest wait in the listen queue.
async fn accept_loop(
    listener: TcpListener,
    kind: Listener,
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: Arc<App>,
    connections: Arc<Semaphore>,
    on_drain: watch::Receiver<bool>,
) {
    loop {
        let permit = connections
            .clone()
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed");
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(
            builder.clone(),
            stream,
            peer,
            kind,
            app.clone(),
            on_drain.clone(),
            permit,
        ));
    }
}

/// Serves one connection until it ends, the server drains, or it sits idle:
/// then it finishes its in-flight request and closes.
async fn serve_connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
    peer: SocketAddr,
    kind: Listener,
    app: Arc<App>,
    mut on_drain: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
) {
    let slot = ConnectionSlot(Arc::new(permit));
    // An idle connection may be waiting on a slow upstream: allow for that.
    let idle_timeout = KEEP_ALIVE_IDLE_TIMEOUT.max(app.config.upstream_timeout * 2);
    let activity = Activity::new();
    let io = TokioIo::new(Tracked::new(stream, activity.clone()));
    let service = TowerToHyperService::new(service(app, kind, peer, slot));
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    // One timer per connection, re-armed to the moment it would next count
    // as idle, rather than a tick that wakes every idle connection.
    let watchdog = tokio::time::sleep(HEADER_READ_TIMEOUT);
    tokio::pin!(watchdog);
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, %peer, "connection ended with an error");
                }
                return;
            }
            _ = on_drain.changed(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            () = &mut watchdog => {
                let (idle, spoke) = activity.idle();
                let limit = if spoke { idle_timeout } else { HEADER_READ_TIMEOUT };
                if idle >= limit * 2 {
                    // Still nothing moving after being asked to finish: a
                    // client that stopped reading. Drop the connection.
                    return;
                }
                if idle >= limit && !closing {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                let next = if idle >= limit { limit * 2 } else { limit };
                watchdog
                    .as_mut()
                    .reset(tokio::time::Instant::now() + (next - idle));
            }
        }
    }
}

/// What the tower stack answers with: the pipeline's body, as the panic
/// catcher wraps it.
type ResponseBody = tower_http::body::UnsyncBoxBody<Bytes, BoxError>;

/// The tower stack for one connection, outermost first.
fn service(
    app: Arc<App>,
    kind: Listener,
    peer: SocketAddr,
    slot: ConnectionSlot,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<ResponseBody>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send {
    ServiceBuilder::new()
        // A client's request id is kept only if it is sane to log and echo.
        .map_request(drop_insane_request_id)
        // Every request gets an id, the client's or a new UUID...
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        // ...and every response carries it back, a panic's 500 included.
        .layer(PropagateRequestIdLayer::x_request_id())
        // A bug answers 500 JSON instead of dropping the connection.
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal(anyhow::anyhow!("a request handler panicked")).into_response()
        }))
        .service_fn(move |mut request: Request<Incoming>| {
            let app = app.clone();
            request.extensions_mut().insert(slot.clone());
            // Boxed: hyper keeps room for one service future per connection,
            // idle or not, so it is kept to a pointer's size.
            Box::pin(async move {
                Ok::<_, Infallible>(pipeline::handle(&app, kind, peer, request).await)
            })
        })
}

fn drop_insane_request_id(mut request: Request<Incoming>) -> Request<Incoming> {
    let sane = |id: &HeaderValue| {
        let bytes = id.as_bytes();
        (1..=128).contains(&bytes.len())
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(b))
    };
    if request
        .headers()
        .get(X_REQUEST_ID)
        .is_some_and(|id| !sane(id))
    {
        request.headers_mut().remove(X_REQUEST_ID);
    }
    request
}
