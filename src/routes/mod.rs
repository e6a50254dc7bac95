//! The route table: the gateway's own routes, one file per group, and
//! everything else for the upstream. Owned paths are never proxied: an
//! unknown one is 404, a wrong method 405.

mod admin;
mod auth;
mod debug;
mod health;
mod reset;
mod verify;
mod wellknown;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::ALLOW;
use http::{HeaderName, HeaderValue, Method, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use crate::app::App;
use crate::audit;
use crate::body::Body;
use crate::error::ApiError;
use crate::paths;
use crate::request::RequestContext;
use crate::store::AuditOutcome;
use crate::throttle::ThrottleError;
use verify::VerifyTarget;

pub type Request = http::Request<Incoming>;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Bodies of the gateway's own routes are small JSON documents...
const MAX_JSON_BODY: usize = 64 * 1024;
/// ...that arrive whole within this.
const JSON_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The gateway's own routes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Register,
    Login,
    Refresh,
    Logout,
    LogoutAll,
    Me,
    Sessions,
    /// `/api/auth/sessions/{id}`, the id as it came: parsed by the handler.
    Session(String),
    Password,
    /// Forward-auth: `/api/auth/verify`, or a path below it.
    Verify(VerifyTarget),
    PasswordReset,
    PasswordResetConfirm,
    Jwks,
    OpenIdConfiguration,
    RevokedSessions,
    Health,
    HealthDetailed,
    Metrics,
    DebugSession,
    /// `/api/admin/users`.
    AdminUsers,
    /// `/api/admin/users/{id}/disable`, the id as it came: parsed by the
    /// handler (like the three below).
    AdminDisable(String),
    AdminEnable(String),
    /// `/api/admin/users/{id}/sessions`: GET lists, DELETE revokes.
    AdminSessions(String),
    AdminAudit,
    /// `/api/admin/mail/test`: one test mail (`tollgate probe --check-mail`).
    AdminTestMail,
    /// Under a path the gateway owns, but no such route: 404.
    UnknownOwned(&'static str),
}

impl Route {
    /// The route of a normalised path, if the gateway owns it.
    pub fn resolve(path: &str) -> Option<Route> {
        let route = match path {
            "/api/auth/register" => Route::Register,
            "/api/auth/login" => Route::Login,
            "/api/auth/refresh" => Route::Refresh,
            "/api/auth/logout" => Route::Logout,
            "/api/auth/logout-all" => Route::LogoutAll,
            "/api/auth/me" => Route::Me,
            "/api/auth/sessions" => Route::Sessions,
            "/api/auth/password" => Route::Password,
            "/api/auth/verify" => Route::Verify(VerifyTarget::Fixed),
            "/api/auth/password-reset" => Route::PasswordReset,
            "/api/auth/password-reset/confirm" => Route::PasswordResetConfirm,
            "/.well-known/jwks.json" => Route::Jwks,
            "/.well-known/openid-configuration" => Route::OpenIdConfiguration,
            "/.well-known/revoked-sessions" => Route::RevokedSessions,
            "/health" => Route::Health,
            "/health/detailed" => Route::HealthDetailed,
            "/metrics" => Route::Metrics,
            "/api/debug/session" => Route::DebugSession,
            "/api/admin/users" => Route::AdminUsers,
            "/api/admin/audit" => Route::AdminAudit,
            "/api/admin/mail/test" => Route::AdminTestMail,
            _ if !paths::is_owned(path) => return None,
            _ if paths::is_under(path, "/api/auth/verify") => {
                Route::Verify(VerifyTarget::OriginalPath)
            }
            _ => match path.strip_prefix("/api/auth/sessions/") {
                Some(id) if !id.is_empty() && !id.contains('/') => Route::Session(id.to_string()),
                _ => Route::admin_user(path).unwrap_or(Route::UnknownOwned(owned_label(path))),
            },
        };
        Some(route)
    }

    /// `/api/admin/users/{id}/{action}`.
    fn admin_user(path: &str) -> Option<Route> {
        let (id, action) = path.strip_prefix("/api/admin/users/")?.split_once('/')?;
        if id.is_empty() {
            return None;
        }
        let id = id.to_string();
        match action {
            "disable" => Some(Route::AdminDisable(id)),
            "enable" => Some(Route::AdminEnable(id)),
            "sessions" => Some(Route::AdminSessions(id)),
            _ => None,
        }
    }

    /// The metrics label: the group of owned paths the route belongs to.
    pub fn label(&self) -> &'static str {
        match self {
            Route::Register
            | Route::Login
            | Route::Refresh
            | Route::Logout
            | Route::LogoutAll
            | Route::Me
            | Route::Sessions
            | Route::Session(_)
            | Route::Password
            | Route::PasswordReset
            | Route::PasswordResetConfirm => "auth",
            // Its own group: an ingress asks on every request it serves.
            Route::Verify(_) => "verify",
            Route::Jwks | Route::OpenIdConfiguration | Route::RevokedSessions => "wellknown",
            Route::Health | Route::HealthDetailed => "health",
            Route::Metrics => "metrics",
            Route::DebugSession => "debug",
            Route::AdminUsers
            | Route::AdminDisable(_)
            | Route::AdminEnable(_)
            | Route::AdminSessions(_)
            | Route::AdminAudit
            | Route::AdminTestMail => "admin",
            Route::UnknownOwned(label) => label,
        }
    }

    /// Whether the route is answered on the control plane, beside the
    /// database (see `runtime`). The few that read only memory, asked often
    /// (the forward-auth check, the JWKS, the feed, health, metrics), are
    /// answered on the worker they arrived on; any other, a new one
    /// included, goes to the control plane.
    pub fn runs_on_control_plane(&self) -> bool {
        !matches!(
            self,
            Route::Verify(_)
                | Route::Jwks
                | Route::OpenIdConfiguration
                | Route::RevokedSessions
                | Route::Health
                | Route::Metrics
                | Route::UnknownOwned(_)
        )
    }

    /// Served on `--admin-listen` (and only there, when it is set).
    pub fn is_admin(&self) -> bool {
        matches!(self, Route::HealthDetailed | Route::Metrics)
    }

    /// The methods a route answers; GET routes answer HEAD too.
    fn methods(&self) -> &'static [Method] {
        const POST: &[Method] = &[Method::POST];
        const GET: &[Method] = &[Method::GET, Method::HEAD];
        const DELETE: &[Method] = &[Method::DELETE];
        const GET_DELETE: &[Method] = &[Method::GET, Method::HEAD, Method::DELETE];
        // Envoy asks with the original request's method.
        const ANY: &[Method] = &[
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ];
        match self {
            Route::Register
            | Route::Login
            | Route::Refresh
            | Route::Logout
            | Route::LogoutAll
            | Route::Password
            | Route::PasswordReset
            | Route::PasswordResetConfirm
            | Route::AdminDisable(_)
            | Route::AdminEnable(_)
            | Route::AdminTestMail => POST,
            Route::Me
            | Route::Sessions
            | Route::Jwks
            | Route::OpenIdConfiguration
            | Route::RevokedSessions
            | Route::Health
            | Route::HealthDetailed
            | Route::Metrics
            | Route::DebugSession
            | Route::AdminUsers
            | Route::AdminAudit => GET,
            Route::AdminSessions(_) => GET_DELETE,
            Route::Session(_) => DELETE,
            Route::Verify(_) => ANY,
            Route::UnknownOwned(_) => &[],
        }
    }
}

/// The metrics label of a path under an owned prefix.
fn owned_label(path: &str) -> &'static str {
    let under = |prefix| paths::is_under(path, prefix);
    if under("/api/auth") {
        "auth"
    } else if under("/api/admin") {
        "admin"
    } else if under("/.well-known") {
        "wellknown"
    } else if under("/health") {
        "health"
    } else if under("/metrics") {
        "metrics"
    } else {
        "debug"
    }
}

/// Answers a request to one of the gateway's own routes.
pub async fn answer(
    app: &Arc<App>,
    ctx: &RequestContext,
    route: Route,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    match route {
        Route::UnknownOwned(_) => return Err(ApiError::NotFound),
        Route::DebugSession if !app.config.debug_endpoints => return Err(ApiError::NotFound),
        ref route if !route.methods().contains(request.method()) => {
            return Ok(method_not_allowed(route.methods()));
        }
        _ => {}
    }
    // Login CSRF: a cross-site form must not act on the auth routes, cookies
    // or not.
    if request.method() == Method::POST && route.label() == "auth" {
        app.browser
            .check_not_cross_origin(&ctx.facts(request.uri(), request.headers()))?;
    }
    match route {
        Route::Register => auth::register(app, ctx, request).await,
        Route::Login => auth::login(app, ctx, request).await,
        Route::Refresh => auth::refresh(app, ctx, request).await,
        Route::Logout => auth::logout(app, ctx, request).await,
        Route::LogoutAll => auth::logout_all(app, ctx, request).await,
        Route::Me => auth::me(app, ctx, request).await,
        Route::Sessions => auth::sessions(app, ctx, request).await,
        Route::Session(id) => auth::delete_session(app, ctx, request, id).await,
        Route::Password => auth::change_password(app, ctx, request).await,
        Route::Verify(target) => Ok(verify::verify(app, ctx, request, target).await),
        Route::PasswordReset => reset::request(app, ctx, request).await,
        Route::PasswordResetConfirm => reset::confirm(app, ctx, request).await,
        Route::Jwks => Ok(wellknown::jwks(app)),
        Route::OpenIdConfiguration => Ok(wellknown::openid_configuration(app, ctx, &request)),
        Route::RevokedSessions => wellknown::revoked_sessions(app, &request),
        Route::Health => Ok(health::health()),
        Route::HealthDetailed => Ok(health::detailed(app).await),
        Route::Metrics => Ok(health::metrics(app)),
        Route::DebugSession => Ok(debug::session(app, &request).await),
        Route::AdminUsers => admin::users(app, ctx, request).await,
        Route::AdminDisable(id) => admin::set_disabled(app, ctx, request, id, true).await,
        Route::AdminEnable(id) => admin::set_disabled(app, ctx, request, id, false).await,
        Route::AdminSessions(id) => admin::sessions(app, ctx, request, id).await,
        Route::AdminAudit => admin::audit(app, ctx, request).await,
        Route::AdminTestMail => admin::test_mail(app, ctx, request).await,
        Route::UnknownOwned(_) => Err(ApiError::NotFound),
    }
}

/// Where an audited event of this request came from.
fn audit_origin(ctx: &RequestContext) -> audit::Origin {
    audit::Origin {
        ip: Some(ctx.client.address.to_string()),
        request_id: Some(ctx.request_id.clone()),
    }
}

/// The answer to a request the login throttle turned away; a spent budget
/// (not a database failure) is audited as `throttled`.
async fn throttled(
    app: &App,
    origin: &audit::Origin,
    event: audit::Event,
    error: ThrottleError,
) -> ApiError {
    if error.is_limited() {
        app.audit
            .record(origin, event.outcome(AuditOutcome::Throttled))
            .await;
    }
    error.into()
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
