//! The accept loops on pre-bound listeners, the tower stack around the
//! request pipeline, and the process's life: signals, graceful shutdown (stop
//! accepting, let in-flight requests finish within a bounded grace period),
//! and the bound on connections. Each connection is served by `connection`:
//! HTTP/1 or HTTP/2, parked while idle, closed when idle too long.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper_util::service::TowerToHyperService;
use socket2::{Domain, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::app::App;
use crate::body::BoxError;
use crate::config::Config;
use crate::error::ApiError;
use crate::pipeline;
use crate::proxy::websocket::TunnelHandoff;
use crate::request::Listener;
use crate::routes::X_REQUEST_ID;
use crate::runtime;

mod activity;
mod connection;
use activity::Activity;
use connection::{ClientConnection, Protocols};

/// How long in-flight requests may run on after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// A keep-alive connection with no traffic for this long is closed.
const KEEP_ALIVE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections waiting to be accepted once `--max-connections` are open.
const LISTEN_BACKLOG: i32 = 4096;

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
    let shutdown = shutdown_signal()?;
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
    run(listeners, app.clone(), shutdown).await?;
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
/// Completes on SIGTERM or SIGINT. The handlers are installed at once, not
/// when first polled: the workers may answer before the control plane polls
/// it, and a SIGTERM meanwhile must drain, not kill.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    let mut terminate =
        signal(SignalKind::terminate()).context("cannot install a SIGTERM handler")?;
    let mut interrupt =
        signal(SignalKind::interrupt()).context("cannot install a SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
        }
    })
}

/// Serves `app` on `listeners` until `shutdown` completes, then drains.
///
/// The public listener is shared by the data-plane workers (see `runtime`),
/// each accepting on its own thread; the admin listener, rarely asked, is
/// served on the control plane this runs on.
pub async fn run(
    listeners: Listeners,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let acceptor = Acceptor {
        protocols: Arc::new(Protocols::new()),
        app: app.clone(),
        // Every connection (and tunnel) holds a receiver: `send` asks them
        // to finish, and `closed` completes once the last one has.
        on_drain: app.draining.subscribe(),
        connections: Arc::new(Semaphore::new(app.config.max_connections)),
    };
    let (stage, on_stage) = watch::channel(Stage::Serving);
    let public = listeners.public.into_std()?;
    let mut workers = Vec::new();
    for index in 0..runtime::worker_count() {
        let listener = public
            .try_clone()
            .context("cannot share the listener with a worker")?;
        workers.push(spawn_worker(
            index,
            listener,
            acceptor.clone(),
            on_stage.clone(),
        )?);
    }
    drop(public);
    let admin = listeners
        .admin
        .map(|admin| tokio::spawn(acceptor.clone().accept_loop(admin, Listener::Admin)));
    drop(acceptor);
    shutdown.await;

    // The workers stop accepting and close their copies of the listener.
    stage.send_replace(Stage::Draining);
    if let Some(admin) = admin {
        admin.abort();
        let _ = admin.await;
    }
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    app.draining.send_replace(true);
    tokio::select! {
        () = app.draining.closed() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!(
            grace_s = SHUTDOWN_GRACE.as_secs(),
            "shutdown grace period ran out; dropping the remaining connections"
        ),
    }
    stage.send_replace(Stage::Exit);
    let joined = tokio::task::spawn_blocking(move || {
        for worker in workers {
            let _ = worker.join();
        }
    });
    let _ = joined.await;
    Ok(())
}

/// Where the data-plane workers are in the gateway's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Serving,
    /// No more accepting; connections finish.
    Draining,
    /// Whatever is left is dropped with the worker's runtime.
    Exit,
}

/// Starts data-plane worker `index`: a thread with a single-threaded
/// runtime, accepting on its copy of the public listener until the gateway
/// drains, and running until it exits.
fn spawn_worker(
    index: usize,
    listener: std::net::TcpListener,
    acceptor: Acceptor,
    mut stage: watch::Receiver<Stage>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let worker = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a worker runtime")?;
    let thread = std::thread::Builder::new()
        .name(format!("tollgate-worker-{index}"))
        .spawn(move || {
            runtime::become_worker(index);
            worker.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => tokio::select! {
                        () = acceptor.accept_loop(listener, Listener::Public) => {}
                        _ = stage.wait_for(|stage| *stage != Stage::Serving) => {}
                    },
                    Err(error) => tracing::error!(%error, "a worker cannot accept connections"),
                }
                let _ = stage.wait_for(|stage| *stage == Stage::Exit).await;
            });
        })
        .context("cannot start a worker thread")?;
    Ok(thread)
}

/// What an accept loop needs to serve the connections it accepts.
#[derive(Clone)]
struct Acceptor {
    protocols: Arc<Protocols>,
    app: Arc<App>,
    on_drain: watch::Receiver<bool>,
    /// `--max-connections`, across the workers.
    connections: Arc<Semaphore>,
}

impl Acceptor {
    /// Accepts connections while fewer than `--max-connections` are open;
    /// the rest wait in the listen queue.
    async fn accept_loop(self, listener: TcpListener, kind: Listener) {
        loop {
            let permit = self
                .connections
                .clone()
                .acquire_owned()
                .await
                .expect("the connection semaphore is never closed");
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off, keep
                    // serving.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve_connection(
                self.protocols.clone(),
                stream,
                peer,
                kind,
                self.app.clone(),
                self.on_drain.clone(),
                permit,
            ));
        }
    }
}

/// Serves one accepted connection until it closes (see `connection`).
async fn serve_connection(
    protocols: Arc<Protocols>,
    stream: TcpStream,
    peer: SocketAddr,
    kind: Listener,
    app: Arc<App>,
    on_drain: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
) {
    // Held until the connection (or the tunnel it became) closes.
    let _permit = permit;
    let handoff = TunnelHandoff::default();
    let connection = ClientConnection {
        protocols: &protocols,
        stream,
        activity: Activity::new(),
        on_drain,
        handoff: handoff.clone(),
        // An idle connection may be waiting on a slow upstream: allow for
        // that.
        idle_timeout: KEEP_ALIVE_IDLE_TIMEOUT.max(app.config.upstream_timeout * 2),
    };
    let service = TowerToHyperService::new(service(app, kind, peer, handoff));
    connection.serve(service).await;
}

/// What the tower stack answers with: the pipeline's body, as the panic
/// catcher wraps it.
pub(crate) type ResponseBody = tower_http::body::UnsyncBoxBody<Bytes, BoxError>;

/// The tower stack for one connection, outermost first.
fn service(
    app: Arc<App>,
    kind: Listener,
    peer: SocketAddr,
    handoff: TunnelHandoff,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<ResponseBody>,
    Error = Infallible,
    Future = impl Send + Unpin,
> + Clone
+ Send
+ Unpin {
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
            request.extensions_mut().insert(handoff.clone());
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
