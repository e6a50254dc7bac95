//! `/.well-known/…`: the public keys and OpenID discovery, for upstreams that
//! validate tokens themselves.

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use serde::Serialize;

use super::Request;
use crate::app::App;
use crate::body::{Body, full, json};
use crate::pipeline::RequestContext;

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
