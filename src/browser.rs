//! The browser rules: CORS for the configured origins, and CSRF protection
//! for requests that authenticate by cookie.
//!
//! An upstream's own `Access-Control-*` headers never reach the browser (the
//! proxy drops them): the allow list here is the only one.
//!
//! tower-http's `CorsLayer` is not used because the contract differs from it
//! in ways clients rely on: a preflight answers 204, origins outside the list
//! get no CORS header at all (not even `Access-Control-Allow-Credentials`),
//! and a non-preflight `OPTIONS` still reaches its route.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, HOST, ORIGIN, REFERER, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::auth::cookies::{ACCESS_COOKIE, REFRESH_COOKIE, find_cookie};
use crate::auth::{CredentialSource, presented_token};
use crate::body::{Body, no_content};
use crate::config::CorsOrigin;
use crate::error::ApiError;

const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
const ALWAYS_ALLOWED_HEADERS: &str = "Authorization, Content-Type, X-Request-Id";
const PREFLIGHT_MAX_AGE: &str = "600";

pub struct BrowserRules {
    origins: Vec<CorsOrigin>,
}

impl BrowserRules {
    pub fn new(origins: Vec<CorsOrigin>) -> BrowserRules {
        BrowserRules { origins }
    }

    /// The request's `Origin` if it is one of the allowed origins.
    fn allowed_origin(&self, origin: Option<&HeaderValue>) -> Option<&CorsOrigin> {
        let origin = origin?;
        self.origins.iter().find(|allowed| {
            allowed
                .header_value()
                .as_bytes()
                .eq_ignore_ascii_case(origin.as_bytes())
        })
    }

    /// The answer to a CORS preflight, or `None` if the request is not one.
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<Response<Body>> {
        if method != Method::OPTIONS
            || !headers.contains_key(ORIGIN)
            || !headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
        {
            return None;
        }
        let mut response = no_content(StatusCode::NO_CONTENT);
        let out = response.headers_mut();
        out.insert(
            VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        let Some(origin) = self.allowed_origin(headers.get(ORIGIN)) else {
            return Some(response);
        };
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.header_value().clone());
        out.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        out.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOWED_METHODS),
        );
        // The origin is trusted: it may send whatever headers the upstream
        // API needs, on top of the ones the gateway itself reads.
        let allowed_headers = match headers
            .get(ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|v| v.to_str().ok())
        {
            Some(requested) if !requested.trim().is_empty() => {
                HeaderValue::from_str(&format!("{ALWAYS_ALLOWED_HEADERS}, {requested}"))
                    .unwrap_or(HeaderValue::from_static(ALWAYS_ALLOWED_HEADERS))
            }
            _ => HeaderValue::from_static(ALWAYS_ALLOWED_HEADERS),
        };
        out.insert(ACCESS_CONTROL_ALLOW_HEADERS, allowed_headers);
        out.insert(
            ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(PREFLIGHT_MAX_AGE),
        );
        Some(response)
    }

    /// Sets the CORS headers of a response to a request from `origin`. (The
    /// proxy has already removed an upstream's own `Access-Control-*`
    /// headers: the gateway is the only CORS authority.)
    pub fn apply_cors(&self, origin: Option<&HeaderValue>, response: &mut Response<Body>) {
        if self.origins.is_empty() {
            return;
        }
        let headers = response.headers_mut();
        headers.append(VARY, HeaderValue::from_static("Origin"));
        if let Some(origin) = self.allowed_origin(origin) {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.header_value().clone());
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    /// Refuses a state-changing request that authenticates by cookie unless
    /// it comes from an allowed origin or the gateway's own. A request with a
    /// bearer token cannot be forged cross-site and is exempt.
    pub fn check_csrf(&self, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
        let state_changing = matches!(
            *method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        );
        if !state_changing || has_bearer(headers) || !has_session_cookie(headers) {
            return Ok(());
        }
        let source = match headers.get(ORIGIN) {
            Some(origin) => origin.to_str().ok().map(str::to_string),
            None => headers
                .get(REFERER)
                .and_then(|referer| referer.to_str().ok())
                .and_then(origin_of_url),
        };
        match source {
            Some(source) if self.is_trusted_origin(&source, headers) => Ok(()),
            _ => Err(ApiError::CsrfRejected),
        }
    }

    fn is_trusted_origin(&self, origin: &str, headers: &HeaderMap) -> bool {
        let origin = origin.to_ascii_lowercase();
        if self
            .origins
            .iter()
            .any(|allowed| allowed.as_str() == origin)
        {
            return true;
        }
        // The gateway's own origin: same host and port as the request was
        // sent to. The scheme is not compared, since TLS may end in front.
        let host = headers.get(HOST).and_then(|host| host.to_str().ok());
        match (origin.split_once("://"), host) {
            (Some((_, origin_host)), Some(host)) => origin_host.eq_ignore_ascii_case(host),
            _ => false,
        }
    }
}

fn has_bearer(headers: &HeaderMap) -> bool {
    presented_token(headers)
        .is_some_and(|token| token.source == CredentialSource::Bearer && !token.token.is_empty())
}

fn has_session_cookie(headers: &HeaderMap) -> bool {
    find_cookie(headers, ACCESS_COOKIE).is_some() || find_cookie(headers, REFRESH_COOKIE).is_some()
}

/// `scheme://host[:port]` of a URL.
fn origin_of_url(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?;
    // An origin has no user information.
    let host_port = authority.as_str().rsplit('@').next()?;
    Some(format!("{scheme}://{host_port}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_origin;
    use crate::test_support::headers;

    fn rules() -> BrowserRules {
        BrowserRules::new(vec![parse_origin("https://app.example.com").unwrap()])
    }

    #[test]
    fn preflight_from_an_allowed_origin_is_204_with_credentials() {
        let request = headers(&[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "x-custom"),
        ]);
        let response = rules().preflight(&Method::OPTIONS, &request).unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let out = response.headers();
        assert_eq!(out[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(out[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert!(
            out[ACCESS_CONTROL_ALLOW_HEADERS]
                .to_str()
                .unwrap()
                .contains("Authorization")
        );
        assert!(
            out[ACCESS_CONTROL_ALLOW_HEADERS]
                .to_str()
                .unwrap()
                .contains("x-custom")
        );
    }

    #[test]
    fn other_origins_get_no_cors_headers() {
        let request = headers(&[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
        ]);
        let response = rules().preflight(&Method::OPTIONS, &request).unwrap();
        assert!(!response.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        assert!(
            !response
                .headers()
                .contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS)
        );
    }

    #[test]
    fn plain_options_is_not_a_preflight() {
        assert!(
            rules()
                .preflight(
                    &Method::OPTIONS,
                    &headers(&[("origin", "https://app.example.com")])
                )
                .is_none()
        );
    }

    #[test]
    fn cookie_posts_need_an_allowed_origin() {
        let rules = rules();
        let cookie = ("cookie", "tollgate_access=t");
        assert!(
            rules
                .check_csrf(&Method::POST, &headers(&[cookie]))
                .is_err()
        );
        assert!(
            rules
                .check_csrf(
                    &Method::POST,
                    &headers(&[cookie, ("origin", "https://evil.example")])
                )
                .is_err()
        );
        assert!(
            rules
                .check_csrf(
                    &Method::POST,
                    &headers(&[cookie, ("referer", "https://evil.example/x")])
                )
                .is_err()
        );
        assert!(
            rules
                .check_csrf(
                    &Method::POST,
                    &headers(&[cookie, ("origin", "https://app.example.com")])
                )
                .is_ok()
        );
        assert!(
            rules
                .check_csrf(
                    &Method::DELETE,
                    &headers(&[cookie, ("referer", "https://app.example.com/page")])
                )
                .is_ok()
        );
        assert!(
            rules
                .check_csrf(&Method::POST, &headers(&[cookie, ("origin", "null")]))
                .is_err()
        );
    }

    #[test]
    fn the_gateways_own_origin_is_trusted() {
        let request = headers(&[
            ("cookie", "tollgate_access=t"),
            ("origin", "http://gw.local:8080"),
            ("host", "gw.local:8080"),
        ]);
        assert!(rules().check_csrf(&Method::POST, &request).is_ok());
    }

    #[test]
    fn bearer_requests_and_safe_methods_are_exempt() {
        let rules = rules();
        let cookie = ("cookie", "tollgate_access=t");
        assert!(
            rules
                .check_csrf(
                    &Method::POST,
                    &headers(&[cookie, ("authorization", "Bearer x")])
                )
                .is_ok()
        );
        assert!(rules.check_csrf(&Method::GET, &headers(&[cookie])).is_ok());
        assert!(rules.check_csrf(&Method::POST, &headers(&[])).is_ok());
    }
}
