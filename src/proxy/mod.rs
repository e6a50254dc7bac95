//! Forwarding to the upstreams: the route table (longest prefix on whole
//! segments of the normalised path), each route's pool of keep-alive
//! connections ([`upstream`]), and streaming both ways under the size and
//! time limits. The header rules live in [`headers`].

pub mod headers;
mod upstream;
pub mod websocket;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{CONTENT_LENGTH, HOST};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, Uri};
use http_body::Body as _;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use prometheus_client::metrics::histogram::Histogram;
use tower_http::timeout::{TimeoutBody, TimeoutError};

use crate::auth::Identity;
use crate::body::Body;
use crate::client_addr::ClientInfo;
use crate::config::RouteConfig;
use crate::domain::Role;
use crate::error::ApiError;
use crate::otel::TraceHeaders;
use headers::Forwarded;
use upstream::{Upstream, describe};

/// The longest a client may pause while sending a proxied body.
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// One upstream route: where matching requests go, and how.
pub struct UpstreamRoute {
    /// `/` or a path without a trailing slash.
    pub prefix: String,
    pub public: bool,
    pub strip: bool,
    pub role: Option<Role>,
    upstream: Arc<Upstream>,
    /// What the upstream is told it is: its own authority.
    host: HeaderValue,
    /// The path the upstream URL had, put in front of every forwarded path.
    base_path: String,
}

impl std::fmt::Debug for UpstreamRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamRoute")
            .field("prefix", &self.prefix)
            .field(
                "upstream",
                &format_args!(
                    "{}://{}{}",
                    self.upstream.scheme(),
                    self.upstream.authority(),
                    self.base_path
                ),
            )
            .finish_non_exhaustive()
    }
}

pub struct Proxy {
    /// Longest prefix first.
    routes: Vec<Arc<UpstreamRoute>>,
    latency: Histogram,
    timeout: Duration,
    max_body: u64,
}

/// What the forwarding needs to know about an authorised request.
pub struct Forwarding<'a> {
    pub route: &'a UpstreamRoute,
    /// The normalised path that was authorised.
    pub path: &'a str,
    pub identity: Option<&'a Identity>,
    pub client: &'a ClientInfo,
    /// The gateway's trace context for the upstream, when spans are exported.
    pub trace: Option<TraceHeaders>,
}

impl Proxy {
    /// `latency` observes how long upstreams take to answer; each route
    /// keeps at most `max_connections` connections to its upstream.
    pub fn new(
        routes: &[RouteConfig],
        timeout: Duration,
        max_body: u64,
        max_connections: usize,
        latency: Histogram,
    ) -> anyhow::Result<Proxy> {
        let tls = crate::tls::client_config()?;
        let routes = routes
            .iter()
            .map(|route| {
                let uri = route.upstream.uri();
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_keepalive(Some(Duration::from_secs(60)));
                connector.set_connect_timeout(Some(timeout));
                connector.enforce_http(false);
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config((*tls).clone())
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(connector);
                let upstream = Upstream::new(uri, connector, max_connections);
                Arc::new(UpstreamRoute {
                    prefix: route.prefix.clone(),
                    public: route.public,
                    strip: route.strip,
                    role: route.role.clone(),
                    host: HeaderValue::from_str(upstream.authority().as_str())
                        .expect("an authority is a header value"),
                    upstream,
                    base_path: uri.path().trim_end_matches('/').to_string(),
                })
            })
            .collect();
        Ok(Proxy {
            routes,
            latency,
            timeout,
            max_body,
        })
    }

    /// Starts closing each route's idle connections once they expire.
    pub fn spawn_sweepers(&self) {
        for route in &self.routes {
            route.upstream.spawn_sweeper();
        }
    }

    pub fn is_configured(&self) -> bool {
        !self.routes.is_empty()
    }

    /// The route with the longest prefix that `path` (normalised) is under.
    pub fn route_for(&self, path: &str) -> Option<Arc<UpstreamRoute>> {
        self.routes
            .iter()
            .find(|route| crate::paths::is_under(path, &route.prefix))
            .cloned()
    }

    pub fn routes(&self) -> &[Arc<UpstreamRoute>] {
        &self.routes
    }

    /// Forwards `request` and streams the upstream's answer back.
    pub async fn forward(
        &self,
        request: Request<Incoming>,
        forwarding: Forwarding<'_>,
    ) -> Result<Response<Body>, ApiError> {
        let route = forwarding.route;
        let (mut parts, body) = request.into_parts();

        let declared_length = content_length(&parts.headers)?;
        if declared_length.is_some_and(|length| length > self.max_body) {
            return Err(ApiError::PayloadTooLarge);
        }
        route.prepare(&mut parts, &forwarding, None)?;

        // Counted while streaming: a chunked body over the limit fails the
        // upstream request as soon as it crosses it. A client that stops
        // sending fails it too, instead of holding it open. (Most requests
        // have no body: they skip the timer.)
        let body: Body = if body.is_end_stream() {
            body.map_err(Into::into).boxed_unsync()
        } else {
            TimeoutBody::new(
                BODY_IDLE_TIMEOUT,
                Limited::new(body, self.max_body as usize),
            )
            .boxed_unsync()
        };
        let upstream_request = Request::from_parts(parts, body);

        let started = Instant::now();
        let response =
            match tokio::time::timeout(self.timeout, route.upstream.send(upstream_request)).await {
                Err(_) => return Err(ApiError::GatewayTimeout),
                Ok(Err(error)) if caused_by::<LengthLimitError>(&error) => {
                    return Err(ApiError::PayloadTooLarge);
                }
                Ok(Err(error)) if caused_by::<TimeoutError>(&error) => {
                    return Err(ApiError::RequestTimeout);
                }
                Ok(Err(error)) => return Err(ApiError::BadGateway(describe(&error))),
                Ok(Ok(response)) => response,
            };
        self.latency.observe(started.elapsed().as_secs_f64());

        let (mut parts, body) = response.into_parts();
        headers::prepare_response(&mut parts.headers, false);
        // An upstream that stalls mid-body is cut off after the same timeout
        // rather than holding the client forever.
        Ok(Response::from_parts(
            parts,
            TimeoutBody::new(self.timeout, body).boxed_unsync(),
        ))
    }
}

impl Proxy {
    /// Forwards a WebSocket handshake on a connection of its own and, once
    /// the upstream switches protocols, leaves the tunnel in `handoff`: the
    /// client connection relays the two until either side closes or
    /// `watched` says the tunnel must close.
    pub async fn open_tunnel(
        &self,
        request: Request<Incoming>,
        forwarding: Forwarding<'_>,
        watched: websocket::Watched,
        handoff: websocket::TunnelHandoff,
    ) -> Result<Response<Body>, ApiError> {
        let route = forwarding.route;
        let (mut parts, _) = request.into_parts();
        let upgrade = parts.headers.get(http::header::UPGRADE).cloned();
        route.prepare(&mut parts, &forwarding, upgrade)?;
        let handshake = Request::from_parts(parts, empty_body());

        let exchange = async {
            let mut sender = route.upstream.connect_for_upgrade().await?;
            sender
                .send_request(handshake)
                .await
                .map_err(upstream::UpstreamError::Request)
        };
        let mut response = match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => return Err(ApiError::GatewayTimeout),
            Ok(Err(error)) => return Err(ApiError::BadGateway(describe(&error))),
            Ok(Ok(response)) => response,
        };
        if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            // The upstream refused the upgrade: its answer is the answer.
            let (mut parts, body) = response.into_parts();
            headers::prepare_response(&mut parts.headers, false);
            return Ok(Response::from_parts(
                parts,
                TimeoutBody::new(self.timeout, body).boxed_unsync(),
            ));
        }
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        handoff.leave(Box::new(move |client| {
            Box::pin(async move {
                match upstream_upgrade.await {
                    Ok(upstream) => websocket::relay(client, upstream, watched).await,
                    Err(error) => {
                        tracing::debug!(%error, "the upstream's WebSocket upgrade did not complete");
                    }
                }
            })
        }));
        let (mut parts, _) = response.into_parts();
        headers::prepare_response(&mut parts.headers, true);
        Ok(Response::from_parts(parts, empty_body()))
    }
}

fn empty_body() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

impl UpstreamRoute {
    /// Turns the client's request head into the upstream's: its target
    /// (origin-form), the header rules, and the upstream's own `Host`.
    fn prepare(
        &self,
        parts: &mut http::request::Parts,
        forwarding: &Forwarding<'_>,
        upgrade: Option<HeaderValue>,
    ) -> Result<(), ApiError> {
        let client_host = parts
            .uri
            .authority()
            .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok())
            .or_else(|| parts.headers.get(HOST).cloned());
        parts.uri = self.upstream_uri(&parts.uri, forwarding.path)?;
        headers::prepare_request(
            &mut parts.headers,
            &Forwarded {
                identity: forwarding.identity,
                client: forwarding.client,
                client_host,
                upgrade,
                trace: forwarding.trace.as_ref(),
            },
        );
        parts.headers.insert(HOST, self.host.clone());
        parts.version = http::Version::HTTP_11;
        Ok(())
    }

    /// Whether the upstream accepts a connection within a second.
    pub async fn reachable(&self) -> bool {
        let authority = self.upstream.authority();
        let default_port = if *self.upstream.scheme() == Scheme::HTTPS {
            443
        } else {
            80
        };
        let address = (
            authority.host(),
            authority.port_u16().unwrap_or(default_port),
        );
        let connect = tokio::net::TcpStream::connect(address);
        matches!(
            tokio::time::timeout(Duration::from_secs(1), connect).await,
            Ok(Ok(_))
        )
    }

    /// The request target for the upstream (origin-form): `path` (the
    /// normalised one, without the route's prefix when it strips it) under
    /// the upstream's base path, and the original query.
    fn upstream_uri(&self, original: &Uri, path: &str) -> Result<Uri, ApiError> {
        let path = match self.strip {
            true if self.prefix != "/" => match &path[self.prefix.len()..] {
                "" => "/",
                rest => rest,
            },
            _ => path,
        };
        let path_and_query = match (original.path_and_query(), original.query()) {
            // Already normal, nothing to prefix: reuse it as it is.
            (Some(unchanged), _) if self.base_path.is_empty() && unchanged.path() == path => {
                unchanged.clone()
            }
            (_, Some(query)) => {
                PathAndQuery::try_from(format!("{}{}?{}", self.base_path, path, query))
                    .map_err(|_| unforwardable())?
            }
            (_, None) => PathAndQuery::try_from(format!("{}{}", self.base_path, path))
                .map_err(|_| unforwardable())?,
        };
        Ok(Uri::from(path_and_query))
    }
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    match headers.get(CONTENT_LENGTH) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|value| value.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| ApiError::InvalidRequest("malformed Content-Length".into())),
    }
}

fn unforwardable() -> ApiError {
    ApiError::InvalidRequest("the request target cannot be forwarded".into())
}

fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error.is::<E>() {
            return true;
        }
        source = error.source();
    }
    false
}
