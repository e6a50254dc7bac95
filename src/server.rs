//! The accept loop on a pre-bound listener, the tower stack around the route
//! table, and graceful shutdown: stop accepting, let in-flight requests
//! finish within a bounded grace period. Connections that send nothing are
//! closed after the header timeout, idle keep-alive ones after a minute.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceBuilder;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};

use crate::app::App;
use crate::body::Body;
use crate::client::PeerAddr;
use crate::error::ApiError;
use crate::routes::{self, AuthenticatedUser};

mod activity;
use activity::{Activity, Tracked};

/// How long in-flight requests may run on after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// A client must finish sending its request head within this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A keep-alive connection with no traffic for this long is closed.
const KEEP_ALIVE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often each connection checks whether it sits idle.
const IDLE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// The largest request head accepted; larger ones are answered 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;

const X_REQUEST_ID: &str = "x-request-id";

/// Serves `app` on `listener` until `shutdown` completes, then drains.
pub async fn run(
    listener: TcpListener,
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
    // Every connection holds a receiver: `send` asks them to finish, and
    // `closed` completes once the last one has.
    let (draining, on_drain) = watch::channel(false);
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(builder.clone(), stream, peer, app.clone(), on_drain.clone()));
            }
            () = &mut shutdown => break,
        }
    }

    drop(listener);
    drop(on_drain);
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    let _ = draining.send(true);
    tokio::select! {
        () = draining.closed() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!(
            grace_s = SHUTDOWN_GRACE.as_secs(),
            "shutdown grace period ran out; dropping the remaining connections"
        ),
    }
    Ok(())
}

/// Serves one connection until it ends, the server drains, or it sits idle:
/// then it finishes its in-flight request and closes.
async fn serve_connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
    peer: SocketAddr,
    app: Arc<App>,
    mut on_drain: watch::Receiver<bool>,
) {
    // An idle connection may be waiting on a slow upstream: allow for that.
    let idle_timeout =
        KEEP_ALIVE_IDLE_TIMEOUT.max(app.config.upstream_timeout + IDLE_CHECK_INTERVAL * 10);
    let activity = Activity::new();
    let io = TokioIo::new(Tracked::new(stream, activity.clone()));
    let service = TowerToHyperService::new(service(app, peer));
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let mut watchdog = tokio::time::interval(IDLE_CHECK_INTERVAL);
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
            _ = watchdog.tick() => {
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
            }
        }
    }
}

/// The tower stack for one connection, outermost first.
fn service(
    app: Arc<App>,
    peer: SocketAddr,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send {
    ServiceBuilder::new()
        // A client's request id is kept only if it is sane to log and echo.
        .map_request(drop_insane_request_id)
        // Every request gets an id, the client's or a new UUID...
        .layer(SetRequestIdLayer::x_request_id(RandomRequestId))
        // ...and every response carries it back.
        .layer(PropagateRequestIdLayer::x_request_id())
        .service_fn(move |mut request: Request<Incoming>| {
            let app = app.clone();
            async move {
                request.extensions_mut().insert(PeerAddr(peer));
                // A bug answers 500 JSON instead of dropping the connection.
                let response = AssertUnwindSafe(logged(&app, request))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| {
                        ApiError::Internal(anyhow::anyhow!("a request handler panicked"))
                            .into_response()
                    });
                Ok::<_, Infallible>(response)
            }
        })
}

/// Request ids: random UUIDs from the thread's generator, which, unlike
/// `MakeRequestUuid`, costs no system call per request.
#[derive(Clone, Copy)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let uuid = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        let mut text = uuid::Uuid::encode_buffer();
        let text = uuid.hyphenated().encode_lower(&mut text);
        Some(RequestId::new(
            HeaderValue::from_str(text).expect("a UUID is a header value"),
        ))
    }
}

/// Answers a request, counts it and logs one line for it, with the user's id
/// once a credential checked out.
async fn logged(app: &Arc<App>, request: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let method = request.method().clone();
    // The path only: a query string may carry anything.
    let uri = request.uri().clone();
    let request_id = request.headers().get(X_REQUEST_ID).cloned();
    let response = routes::handle(app, request, request_id.as_ref()).await;
    let status = response.status().as_u16();
    app.metrics.request(routes::route_class(uri.path()), status);
    tracing::info!(
        %method,
        path = uri.path(),
        status,
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        request_id = request_id.as_ref().and_then(|id| id.to_str().ok()).unwrap_or(""),
        user_id = response
            .extensions()
            .get::<AuthenticatedUser>()
            .map_or("", |user| user.0.sub.as_str()),
        "request"
    );
    response
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
