//! The route table: the gateway's own routes, one file per group, and
//! everything else for the upstream. Owned paths are never proxied: an
//! unknown one is 404, a wrong method 405.

mod auth;
mod health;
mod wellknown;

use std::sync::Arc;

use bytes::Bytes;
use http::header::ALLOW;
use http::{HeaderValue, Method, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use crate::app::App;
use crate::body::Body;
use crate::error::ApiError;

pub type Request = http::Request<Incoming>;

/// Bodies of the gateway's own routes are small JSON documents.
const MAX_JSON_BODY: usize = 64 * 1024;

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
            | Route::HealthDetailed => GET,
            Route::Session(_) => DELETE,
            Route::UnknownOwned | Route::Upstream => &[],
        }
    }
}

/// The path prefixes the gateway keeps for itself.
pub fn is_owned(path: &str) -> bool {
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    under("/api/auth")
        || under("/.well-known")
        || under("/metrics")
        || under("/api/debug")
        || path.starts_with("/health")
}

/// Answers one request.
pub async fn handle(app: &Arc<App>, request: Request) -> Response<Body> {
    let route = Route::resolve(request.uri().path());
    let result = match route {
        Route::UnknownOwned => Err(ApiError::NotFound),
        Route::Upstream => Err(ApiError::UpstreamNotConfigured),
        ref route if !route.methods().contains(request.method()) => {
            return method_not_allowed(route.methods());
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
    };
    result.unwrap_or_else(ApiError::into_response)
}

fn method_not_allowed(allowed: &[Method]) -> Response<Body> {
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

/// Reads a small body whole; 413 past the limit.
async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    match Limited::new(body, MAX_JSON_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge)
        }
        Err(error) => Err(ApiError::InvalidRequest(format!(
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
