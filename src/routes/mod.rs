//! The route table: the gateway's own routes, one file per group, and
//! everything else for the upstream. Owned paths are never proxied: an
//! unknown one is 404, a wrong method 405.

mod auth;
mod debug;
mod health;
mod wellknown;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, ORIGIN};
use http::{HeaderValue, Method, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use crate::app::App;
use crate::auth::presented_token;
use crate::auth::tokens::AccessClaims;
use crate::body::Body;
use crate::client::{PeerAddr, is_trusted_proxy};
use crate::domain::now_ms;
use crate::error::ApiError;
use crate::paths;
use crate::proxy::Forwarding;

pub type Request = http::Request<Incoming>;

/// Marks a response to an authenticated request, for its log line.
#[derive(Clone)]
pub struct AuthenticatedUser(pub Arc<AccessClaims>);

/// Bodies of the gateway's own routes are small JSON documents...
const MAX_JSON_BODY: usize = 64 * 1024;
/// ...that arrive whole within this.
const JSON_BODY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Route {
    Register,
    Login,
    Refresh,
    Logout,
    LogoutAll,
    Me,
    Sessions,
    Session(String),
    Password,
    Jwks,
    OpenIdConfiguration,
    Health,
    HealthDetailed,
    Metrics,
    DebugSession,
    /// Under a path the gateway owns, but no such route.
    UnknownOwned,
    /// Everything else goes to the upstream.
    Upstream,
}

impl Route {
    fn resolve(path: &str) -> Route {
        match path {
            "/api/auth/register" => Route::Register,
            "/api/auth/login" => Route::Login,
            "/api/auth/refresh" => Route::Refresh,
            "/api/auth/logout" => Route::Logout,
            "/api/auth/logout-all" => Route::LogoutAll,
            "/api/auth/me" => Route::Me,
            "/api/auth/sessions" => Route::Sessions,
            "/api/auth/password" => Route::Password,
            "/.well-known/jwks.json" => Route::Jwks,
            "/.well-known/openid-configuration" => Route::OpenIdConfiguration,
            "/health" => Route::Health,
            "/health/detailed" => Route::HealthDetailed,
            "/metrics" => Route::Metrics,
            "/api/debug/session" => Route::DebugSession,
            _ => match path.strip_prefix("/api/auth/sessions/") {
                Some(id) if !id.is_empty() && !id.contains('/') => Route::Session(id.to_string()),
                _ if is_owned(path) => Route::UnknownOwned,
                _ => Route::Upstream,
            },
        }
    }

    /// The methods a route answers; GET routes answer HEAD too.
    fn methods(&self) -> &'static [Method] {
        const POST: &[Method] = &[Method::POST];
        const GET: &[Method] = &[Method::GET, Method::HEAD];
        const DELETE: &[Method] = &[Method::DELETE];
        match self {
            Route::Register
            | Route::Login
            | Route::Refresh
            | Route::Logout
            | Route::LogoutAll
            | Route::Password => POST,
            Route::Me
            | Route::Sessions
            | Route::Jwks
            | Route::OpenIdConfiguration
            | Route::Health
            | Route::HealthDetailed
            | Route::Metrics
            | Route::DebugSession => GET,
            Route::Session(_) => DELETE,
            Route::UnknownOwned | Route::Upstream => &[],
        }
    }
}

/// The metrics label of a request path.
pub fn route_class(path: &str) -> &'static str {
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if under("/api/auth") {
        "auth"
    } else if under("/.well-known") {
        "wellknown"
    } else if under("/health") {
        "health"
    } else if under("/metrics") {
        "metrics"
    } else if under("/api/debug") {
        "debug"
    } else {
        "proxy"
    }
}

/// The path prefixes the gateway keeps for itself.
fn is_owned(path: &str) -> bool {
    route_class(path) != "proxy"
}

/// Answers one request.
pub async fn handle(
    app: &Arc<App>,
    request: Request,
    request_id: Option<&HeaderValue>,
) -> Response<Body> {
    let origin = request.headers().get(ORIGIN).cloned();
    let mut response = match respond(app, request).await {
        Ok(response) => response,
        Err(error) => {
            if let Some(reason) = error.auth_failure_reason() {
                tracing::info!(
                    reason,
                    status = error.status().as_u16(),
                    request_id = request_id.and_then(|id| id.to_str().ok()).unwrap_or(""),
                    "auth failure"
                );
                app.metrics.auth_failure(reason);
            }
            error.into_response()
        }
    };
    app.browser.apply_cors(origin.as_ref(), &mut response);
    response
}

async fn respond(app: &Arc<App>, request: Request) -> Result<Response<Body>, ApiError> {
    if let Some(preflight) = app.browser.preflight(request.method(), request.headers()) {
        return Ok(preflight);
    }
    let uri = request.uri().clone();
    let path = paths::normalize(uri.path())
        .map_err(|error| ApiError::InvalidRequest(error.to_string()))?;
    app.browser
        .check_csrf(request.method(), request.headers())?;

    let route = Route::resolve(&path);
    match route {
        Route::UnknownOwned => Err(ApiError::NotFound),
        Route::DebugSession if !app.config.debug_endpoints => Err(ApiError::NotFound),
        Route::Upstream => forward(app, request, &path).await,
        ref route if !route.methods().contains(request.method()) => {
            Ok(method_not_allowed(route.methods()))
        }
        Route::Register => auth::register(app, request).await,
        Route::Login => auth::login(app, request).await,
        Route::Refresh => auth::refresh(app, request).await,
        Route::Logout => auth::logout(app, request).await,
        Route::LogoutAll => auth::logout_all(app, request).await,
        Route::Me => auth::me(app, request).await,
        Route::Sessions => auth::sessions(app, request).await,
        Route::Session(id) => auth::delete_session(app, request, id).await,
        Route::Password => auth::change_password(app, request).await,
        Route::Jwks => Ok(wellknown::jwks(app)),
        Route::OpenIdConfiguration => Ok(wellknown::openid_configuration(app, &request)),
        Route::Health => Ok(health::health()),
        Route::HealthDetailed => Ok(health::detailed(app).await),
        Route::Metrics => Ok(health::metrics(app)),
        Route::DebugSession => Ok(debug::session(app, &request).await),
    }
}

/// Authenticates a request for the upstream (optionally, on a public path)
/// and forwards it.
async fn forward(app: &Arc<App>, request: Request, path: &str) -> Result<Response<Body>, ApiError> {
    if !app.proxy.is_configured() {
        return Err(ApiError::UpstreamNotConfigured);
    }
    let public = app
        .config
        .public_paths
        .iter()
        .any(|prefix| paths::is_under(path, prefix));
    let identity = match presented_token(request.headers()) {
        None if public => None,
        None => return Err(ApiError::Unauthorized),
        Some(presented) => match app.authenticator.verify(presented, now_ms() / 1000).await {
            Ok(identity) => Some(identity),
            Err(_) if public => None,
            Err(reason) => return Err(ApiError::InvalidToken(reason)),
        },
    };
    let peer = PeerAddr::ip_of(request.extensions());
    let peer_is_trusted = is_trusted_proxy(peer, &app.config.trusted_proxies);
    let mut response = app
        .proxy
        .forward(
            request,
            Forwarding {
                path,
                identity: identity.as_ref(),
                peer,
                peer_is_trusted,
            },
        )
        .await?;
    if let Some(identity) = identity {
        response
            .extensions_mut()
            .insert(AuthenticatedUser(identity.claims));
    }
    Ok(response)
}

fn method_not_allowed(allowed: &[Method]) -> Response<Body> {
    // OPTIONS that is not a preflight also lands here for the gateway's routes.
    let mut response = ApiError::MethodNotAllowed.into_response();
    let allow = allowed
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    response.headers_mut().insert(
        ALLOW,
        HeaderValue::from_str(&allow).expect("method names are ASCII"),
    );
    response
}

/// Reads a small body whole: 413 past the size limit, 408 past the time
/// limit, so a client trickling its body cannot hold a request open.
async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    let collect = Limited::new(body, MAX_JSON_BODY).collect();
    match tokio::time::timeout(JSON_BODY_TIMEOUT, collect).await {
        Err(_) => Err(ApiError::RequestTimeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge)
        }
        Ok(Err(error)) => Err(ApiError::InvalidRequest(format!(
            "cannot read the body: {error}"
        ))),
    }
}

/// Parses a JSON body; errors name the offending field.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let detail = if inner.is_eof() && bytes.iter().all(u8::is_ascii_whitespace) {
            "the body must be a JSON object".to_string()
        } else if inner.is_syntax() || inner.is_eof() {
            // Wherever the parser stopped, the path there is no field's fault.
            format!("the body is not valid JSON: {inner}")
        } else if path == "." {
            // Valid JSON of the wrong shape, e.g. a missing field, which the
            // error names.
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        };
        ApiError::InvalidRequest(detail)
    })
}

/// A body that may be empty (meaning `{}`).
fn parse_optional_json<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse_json(bytes)
    }
}
