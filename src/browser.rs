//! The browser rules: CORS for the configured origins, CSRF protection for
//! requests that authenticate by cookie, and login CSRF for the auth routes.
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
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Uri};

use crate::body::{Body, no_content};
use crate::client_addr::ClientInfo;
use crate::config::CorsOrigin;
use crate::error::ApiError;

const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
const ALWAYS_ALLOWED_HEADERS: &str = "Authorization, Content-Type, X-Request-Id";
const PREFLIGHT_MAX_AGE: &str = "600";

pub struct BrowserRules {
    origins: Vec<CorsOrigin>,
    /// `--public-url`'s origin, which overrides what requests say.
    public_origin: Option<String>,
}

impl BrowserRules {
    pub fn new(origins: Vec<CorsOrigin>, public_origin: Option<String>) -> BrowserRules {
        BrowserRules {
            origins,
            public_origin,
        }
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

    /// Refuses a request authenticated by a cookie unless its `Origin` (or,
    /// lacking that, its `Referer`) is an allowed origin or the gateway's
    /// own. A request with neither header is refused: a browser sends one
    /// with every state-changing request.
    pub fn check_cookie_origin(&self, request: &RequestFacts<'_>) -> Result<(), ApiError> {
        match claimed_origin(request.headers) {
            Some(origin) if self.is_trusted_origin(&origin, request) => Ok(()),
            _ => Err(ApiError::CsrfRejected),
        }
    }

    /// Login CSRF: refuses a request that names a foreign origin, with or
    /// without cookies, so that a cross-site form cannot log a victim into
    /// the attacker's account. Requests naming no origin (curl, servers)
    /// pass.
    pub fn check_not_cross_origin(&self, request: &RequestFacts<'_>) -> Result<(), ApiError> {
        match claimed_origin(request.headers) {
            Some(origin) if !self.is_trusted_origin(&origin, request) => {
                Err(ApiError::CsrfRejected)
            }
            _ => Ok(()),
        }
    }

    fn is_trusted_origin(&self, origin: &str, request: &RequestFacts<'_>) -> bool {
        let origin = origin.to_ascii_lowercase();
        self.origins
            .iter()
            .any(|allowed| allowed.as_str() == origin)
            || self
                .own_origin(request)
                .is_some_and(|own| own.eq_ignore_ascii_case(&origin))
    }

    /// The gateway's own origin as the client reached it: `--public-url`
    /// when set; otherwise the scheme and host a trusted proxy forwarded
    /// (`X-Forwarded-Proto`, `X-Forwarded-Host`), else the listener's scheme
    /// (plain HTTP) and the host the request was sent to (`Host`, or
    /// HTTP/2's `:authority`).
    pub fn own_origin(&self, request: &RequestFacts<'_>) -> Option<String> {
        if let Some(public) = &self.public_origin {
            return Some(public.clone());
        }
        let forwarded = |name: &HeaderName| {
            request
                .client
                .peer_is_trusted
                .then(|| request.headers.get(name))
                .flatten()
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.split(',').next())
                .map(str::trim)
                .filter(|value| !value.is_empty())
        };
        let scheme = forwarded(&X_FORWARDED_PROTO)
            .filter(|proto| matches!(*proto, "http" | "https"))
            .unwrap_or("http");
        let host = forwarded(&X_FORWARDED_HOST)
            .or_else(|| request.uri.authority().map(|authority| authority.as_str()))
            .or_else(|| request.headers.get(HOST).and_then(|h| h.to_str().ok()))?;
        Some(format!("{scheme}://{host}"))
    }
}

/// What the browser rules read of a request.
pub struct RequestFacts<'a> {
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub client: &'a ClientInfo,
}

/// The origin a request claims: its `Origin`, else the origin of its
/// `Referer`. `Origin: null` claims no trusted origin.
fn claimed_origin(headers: &HeaderMap) -> Option<String> {
    match headers.get(ORIGIN) {
        Some(origin) => origin.to_str().ok().map(str::to_string),
        None => headers
            .get(REFERER)
            .and_then(|referer| referer.to_str().ok())
            .and_then(origin_of_url),
    }
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
        BrowserRules::new(vec![parse_origin("https://app.example.com").unwrap()], None)
    }

    const CLIENT: ClientInfo = ClientInfo {
        peer: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        peer_is_trusted: false,
        address: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    };

    fn check(rules: &BrowserRules, uri: &str, pairs: &[(&'static str, &'static str)]) -> bool {
        let uri: Uri = uri.parse().unwrap();
        let headers = headers(pairs);
        rules
            .check_cookie_origin(&RequestFacts {
                uri: &uri,
                headers: &headers,
                client: &CLIENT,
            })
            .is_ok()
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
        let allowed = out[ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap();
        assert!(allowed.contains("Authorization") && allowed.contains("x-custom"));
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
    fn cookie_requests_need_an_allowed_origin() {
        let rules = rules();
        let at = "/api/x";
        assert!(!check(&rules, at, &[]));
        assert!(!check(&rules, at, &[("origin", "https://evil.example")]));
        assert!(!check(&rules, at, &[("referer", "https://evil.example/x")]));
        assert!(check(&rules, at, &[("origin", "https://app.example.com")]));
        assert!(check(
            &rules,
            at,
            &[("referer", "https://app.example.com/page")]
        ));
        assert!(!check(&rules, at, &[("origin", "null")]));
    }

    #[test]
    fn the_gateways_own_origin_is_scheme_and_host() {
        let rules = rules();
        let host = ("host", "gw.local:8080");
        assert!(check(
            &rules,
            "/x",
            &[("origin", "http://gw.local:8080"), host]
        ));
        assert!(
            !check(&rules, "/x", &[("origin", "https://gw.local:8080"), host]),
            "the listener speaks plain HTTP and no trusted proxy said otherwise"
        );
        assert!(
            check(
                &rules,
                "http://gw.local:8080/x",
                &[("origin", "http://gw.local:8080")]
            ),
            "HTTP/2's :authority"
        );
        let behind_proxy = BrowserRules::new(Vec::new(), Some("https://auth.example.com".into()));
        assert!(check(
            &behind_proxy,
            "/x",
            &[
                ("origin", "https://auth.example.com"),
                ("host", "10.0.0.5:8080")
            ]
        ));
    }

    #[test]
    fn login_csrf_refuses_only_foreign_origins() {
        let rules = rules();
        let uri: Uri = "/api/auth/login".parse().unwrap();
        let refuses = |pairs: &[(&'static str, &'static str)]| {
            let headers = headers(pairs);
            rules
                .check_not_cross_origin(&RequestFacts {
                    uri: &uri,
                    headers: &headers,
                    client: &CLIENT,
                })
                .is_err()
        };
        assert!(refuses(&[("origin", "https://evil.example")]));
        assert!(refuses(&[("referer", "https://evil.example/form")]));
        assert!(!refuses(&[]), "curl and servers send no origin");
        assert!(!refuses(&[("origin", "https://app.example.com")]));
    }
}
