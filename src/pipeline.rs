//! The request pipeline: the gateway's central decision, in the order it is
//! taken for every request.
//!
//! 1. Who is asking: the client info (peer, client address, whether the peer
//!    is a trusted proxy), computed once; a private peer that names a client
//!    without being trusted is warned about, once per peer.
//! 2. One span for the request (request id, method, route, client address,
//!    and the user id once known): every line below carries them.
//! 3. CORS preflights are answered; a request without exactly one `Host`
//!    (HTTP/1.1) or with several is refused.
//! 4. The path is normalised (`paths`), and every decision after this is
//!    taken on the normalised path: which route, which public prefix.
//! 5. The gateway's own routes answer from `routes`, after the login-CSRF
//!    rule for `POST /api/auth/…`. Every other path goes to the upstream
//!    route with the longest matching prefix, once its access token checks
//!    out (or the route or path is public), its role is held, and a cookie
//!    credential passes the `Origin` rule.
//! 6. Failures become the contract's error JSON; CORS headers are added;
//!    the request is counted and logged in one line.

use std::sync::Arc;
use std::time::Instant;

use http::header::{HOST, ORIGIN, UPGRADE};
use http::{HeaderMap, Method, Response, Version};
use tracing::{Instrument, field};

use crate::app::App;
use crate::auth::{CredentialSource, credentials};
use crate::body::Body;
use crate::client_addr::ClientInfo;
use crate::error::ApiError;
use crate::otel::{self, TraceHeaders};
use crate::paths;
use crate::proxy::websocket::{self, TunnelHandoff};
use crate::proxy::{Forwarding, UpstreamRoute};
use crate::request::{Listener, RequestContext, changes_state, error_response, note_user};
use crate::routes::{self, Request, Route};
use crate::time::UnixSeconds;

/// Answers one request, counts it and logs one line for it.
pub async fn handle(
    app: &Arc<App>,
    listener: Listener,
    peer: std::net::SocketAddr,
    request: Request,
) -> Response<Body> {
    let started = Instant::now();
    let ctx = RequestContext {
        client: app.client_addressing.client_info(peer, request.headers()),
        listener,
        request_id: request_id_of(request.headers()).to_string(),
    };
    let span = request_span(request.method(), request.headers(), &ctx.client);
    let exporting = app.config.otlp_endpoint.is_some();
    if exporting && ctx.client.peer_is_trusted {
        otel::continue_trace(&span, request.headers());
    }
    async move {
        app.client_addressing
            .warn_if_untrusted_proxy(&ctx.client, request.headers());
        // The path only: a query string may carry anything.
        let path = request.uri().path().to_string();
        let origin = request.headers().get(ORIGIN).cloned();
        let (route, outcome) = dispatch(app, &ctx, request).await;
        let mut response = outcome.unwrap_or_else(|error| error_response(app, error));
        app.browser.apply_cors(origin.as_ref(), &mut response);
        let status = response.status().as_u16();
        app.metrics.request(route, status);
        tracing::info!(
            path,
            status,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
        if exporting {
            otel::record_status(&tracing::Span::current(), status);
        }
        response
    }
    .instrument(span)
    .await
}

/// The request's span: every line logged while serving it carries these
/// fields (the method is the span's, not the access line's, so that a JSON
/// line never holds one key twice).
pub fn request_span(method: &Method, headers: &HeaderMap, client: &ClientInfo) -> tracing::Span {
    let request_id = request_id_of(headers);
    tracing::info_span!(
        otel::REQUEST_SPAN,
        request_id,
        %method,
        route = field::Empty,
        client = %client.address,
        user_id = field::Empty,
    )
}

/// The request's `X-Request-Id`: the client's, or the one the edge made.
fn request_id_of(headers: &HeaderMap) -> &str {
    headers
        .get(routes::X_REQUEST_ID)
        .and_then(|id| id.to_str().ok())
        .unwrap_or("")
}

/// Routes one request; the metrics label of where it went, and the answer.
async fn dispatch(
    app: &Arc<App>,
    ctx: &RequestContext,
    request: Request,
) -> (&'static str, Result<Response<Body>, ApiError>) {
    if let Some(preflight) = app.browser.preflight(request.method(), request.headers()) {
        return ("preflight", Ok(preflight));
    }
    if let Err(error) = check_host(&request) {
        return ("other", Err(error));
    }
    if request.method() == Method::CONNECT {
        // A tunnel to anywhere is not what a gateway to an API forwards.
        return ("other", Err(ApiError::MethodNotAllowed));
    }
    let path = match paths::normalize(request.uri().path()) {
        Ok(path) => path.into_owned(),
        Err(error) => return ("other", Err(ApiError::InvalidRequest(error.to_string()))),
    };
    if let Some(route) = Route::resolve(&path) {
        tracing::Span::current().record("route", route.label());
        let outcome = match ctx.listener {
            Listener::Admin if !route.is_admin() => Err(ApiError::NotFound),
            Listener::Public if route.is_admin() && app.config.admin_listen.is_some() => {
                Err(ApiError::NotFound)
            }
            _ if route.runs_on_control_plane() => {
                answer_on_control_plane(app, ctx, route.clone(), request).await
            }
            _ => routes::answer(app, ctx, route.clone(), request).await,
        };
        return (route.label(), outcome);
    }
    if ctx.listener == Listener::Admin {
        return ("other", Err(ApiError::NotFound));
    }
    if !app.proxy.is_configured() {
        return ("proxy", Err(ApiError::UpstreamNotConfigured));
    }
    let Some(upstream) = app.proxy.route_for(&path) else {
        return ("other", Err(ApiError::NotFound));
    };
    tracing::Span::current().record("route", "proxy");
    ("proxy", forward(app, ctx, request, &path, upstream).await)
}

/// Answers one of the gateway's own routes on the control plane, in the
/// request's span.
async fn answer_on_control_plane(
    app: &Arc<App>,
    ctx: &RequestContext,
    route: Route,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let control = app.store.control().clone();
    let (app, ctx) = (app.clone(), ctx.clone());
    let answer = async move { routes::answer(&app, &ctx, route, request).await }
        .instrument(tracing::Span::current());
    control.run(answer).await
}

/// HTTP/1.1 needs exactly one `Host` (RFC 9112 3.2), an absolute-form
/// target included; no request may carry several, which proxies and
/// upstreams could read differently.
fn check_host(request: &Request) -> Result<(), ApiError> {
    let hosts = request.headers().get_all(HOST).iter().count();
    let needs_one = request.version() == Version::HTTP_11;
    if hosts > 1 || (needs_one && hosts == 0) {
        return Err(ApiError::InvalidRequest(
            "an HTTP/1.1 request needs exactly one Host header".into(),
        ));
    }
    Ok(())
}

/// Authenticates a request for an upstream route and forwards it.
async fn forward(
    app: &Arc<App>,
    ctx: &RequestContext,
    request: Request,
    path: &str,
    route: Arc<UpstreamRoute>,
) -> Result<Response<Body>, ApiError> {
    let (mut parts, body) = request.into_parts();
    let public = route.public
        || app
            .config
            .public_paths
            .iter()
            .any(|prefix| paths::is_under(path, prefix));
    let identity = match credentials::presented_token(&parts.headers)
        .map_err(|_| ApiError::from(crate::auth::Rejection::MalformedAuthorization))?
    {
        None if public => None,
        None => return Err(ApiError::Unauthorized),
        Some(presented) => match app
            .authenticator
            .verify(presented, UnixSeconds::now())
            .await
        {
            Ok(identity) => Some(identity),
            // On a public route an invalid token is ignored, never a 401.
            Err(_) if public => None,
            Err(reason) => return Err(ApiError::InvalidToken(reason)),
        },
    };
    if let Some(identity) = &identity {
        note_user(identity);
        // A public path under a role route lets anyone through; a caller
        // with a token but without the role is not worse off than one
        // without a token.
        if let Some(role) = &route.role
            && !public
            && !identity.claims.roles.contains(role)
        {
            return Err(ApiError::InsufficientRole);
        }
        // A cookie that is used must come with a trusted Origin when the
        // request changes state, and on a WebSocket handshake (cross-site
        // WebSocket hijacking).
        let is_upgrade = parts.headers.contains_key(UPGRADE);
        if identity.source == CredentialSource::Cookie
            && (changes_state(&parts.method) || is_upgrade)
        {
            app.browser
                .check_cookie_origin(&ctx.facts(&parts.uri, &parts.headers))?;
        }
    }
    // Debug level: it costs nothing unless the spans are exported (or
    // RUST_LOG asks for it). The upstream's traceparent names it as parent.
    let upstream_span = tracing::debug_span!("upstream", upstream = %route.prefix);
    let exporting = app.config.otlp_endpoint.is_some();
    let forwarding = Forwarding {
        route: &route,
        path,
        identity: identity.as_ref(),
        client: &ctx.client,
        trace: exporting.then(|| upstream_span.in_scope(TraceHeaders::of_current_span)),
    };
    if websocket::is_websocket_upgrade(&parts.method, &parts.headers) {
        let watched = websocket::Watched {
            revocations: app.revocations.clone(),
            store: app.store.clone(),
            idle_timeout: app.config.session_idle_timeout,
            draining: app.draining.subscribe(),
            session: identity
                .as_ref()
                .map(|identity| identity.claims.sid.clone()),
        };
        // Over HTTP/2 there is no handoff: no `Upgrade` either (RFC 9113
        // 8.2.2), but a request may still say so.
        let Some(handoff) = parts.extensions.remove::<TunnelHandoff>() else {
            return Err(ApiError::InvalidRequest(
                "a WebSocket needs an HTTP/1.1 connection".into(),
            ));
        };
        let request = http::Request::from_parts(parts, body);
        return app
            .proxy
            .open_tunnel(request, forwarding, watched, handoff)
            .await;
    }
    app.proxy
        .forward(http::Request::from_parts(parts, body), forwarding)
        .instrument(upstream_span)
        .await
}
