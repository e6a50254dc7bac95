//! `/.well-known/…`: the public keys, OpenID discovery and the revocation
//! feed, for upstreams that validate tokens themselves.

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use serde::Serialize;

use super::Request;
use crate::app::App;
use crate::body::{Body, full, json};
use crate::error::ApiError;
use crate::request::RequestContext;
use crate::revocation::FeedCursor;

/// Verifiers may cache the key set this long; a rotation publishes the next
/// key well before it signs, so caching never hides a signing key.
const JWKS_MAX_AGE: &str = "public, max-age=300";

pub fn jwks(app: &App) -> Response<Body> {
    let mut response = Response::new(full(app.keys.current().jwks_json()));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(JWKS_MAX_AGE));
    response
}

#[derive(Serialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
    id_token_signing_alg_values_supported: Vec<&'static str>,
    token_endpoint_auth_methods_supported: [&'static str; 1],
}

pub fn openid_configuration(app: &App, ctx: &RequestContext, request: &Request) -> Response<Body> {
    let configured = configured_base_url(app);
    let cacheable = configured.is_some();
    let base = configured
        .or_else(|| {
            app.browser
                .own_origin(&ctx.facts(request.uri(), request.headers()))
        })
        .unwrap_or_else(|| "http://localhost".to_string());
    let mut response = json(
        StatusCode::OK,
        &Discovery {
            issuer: app.config.issuer.clone(),
            jwks_uri: format!("{base}/.well-known/jwks.json"),
            id_token_signing_alg_values_supported: app.keys.current().algorithms(),
            token_endpoint_auth_methods_supported: ["none"],
        },
    );
    // A base URL taken from the request's Host must not be cached for others.
    let cache = if cacheable { JWKS_MAX_AGE } else { "no-store" };
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

/// An upstream polling every 2 s and a cache keeping an answer this long
/// still refuse a revoked session's tokens within the 5 s the gateway's own
/// instances keep (one poll of the database, one of the feed, this).
const FEED_MAX_AGE: &str = "public, max-age=1";

#[derive(Serialize)]
struct Feed {
    revoked: Vec<RevokedSession>,
    cursor: String,
}

#[derive(Serialize)]
struct RevokedSession {
    sid: String,
    revoked_at: String,
}

/// `/.well-known/revoked-sessions[?since=CURSOR]`, from what this instance
/// already polls: never a database call.
pub fn revoked_sessions(app: &App, request: &Request) -> Result<Response<Body>, ApiError> {
    let since = since_cursor(request.uri().query())?;
    let page = app.revocations.feed(since);
    let mut response = json(
        StatusCode::OK,
        &Feed {
            revoked: page
                .revoked
                .into_iter()
                .map(|(session, at)| RevokedSession {
                    sid: session.as_str().to_string(),
                    revoked_at: at.rfc3339(),
                })
                .collect(),
            cursor: page.cursor.encode(),
        },
    );
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static(FEED_MAX_AGE));
    Ok(response)
}

/// `since=CURSOR`, the only parameter; any other is refused so that a typo
/// does not silently read the whole window.
fn since_cursor(query: Option<&str>) -> Result<Option<FeedCursor>, ApiError> {
    let mut since = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "since" if since.is_none() => {
                since = Some(
                    FeedCursor::parse(&value)
                        .map_err(|error| ApiError::InvalidRequest(error.to_string()))?,
                );
            }
            _ => {
                return Err(ApiError::InvalidRequest(format!(
                    "unexpected query parameter `{name}` (the feed takes one since=CURSOR)"
                )));
            }
        }
    }
    Ok(since)
}

/// Where clients reach the gateway, when the configuration says:
/// `--public-url`, else the issuer if it is a URL.
fn configured_base_url(app: &App) -> Option<String> {
    if let Some(public_url) = &app.config.public_url {
        return Some(public_url.as_str().to_string());
    }
    let issuer = app.config.issuer.trim_end_matches('/');
    if issuer.starts_with("https://") || issuer.starts_with("http://") {
        return Some(issuer.to_string());
    }
    None
}
