//! Forwarding to the upstream API over a pooled keep-alive client, streaming
//! bodies both ways.
//!
//! Header rules, in order: hop-by-hop headers and every header named in
//! `Connection` are dropped; client-sent `X-Auth-*` headers (any spelling)
//! and the gateway's own cookies are removed; then the identity headers, the
//! bearer token and the `X-Forwarded-*` headers are set. The upstream gets
//! exactly the normalised path that was authorised.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use http::header::{
    AUTHORIZATION, CONNECTION, CONTENT_LENGTH, COOKIE, EXPECT, FORWARDED, HOST, PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri};
use http_body::Body as _;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus_client::metrics::histogram::Histogram;
use tower_http::timeout::{TimeoutBody, TimeoutError};

use crate::auth::tokens::AccessClaims;
use crate::auth::{Identity, is_bearer_scheme};
use crate::body::Body;
use crate::error::ApiError;

/// Hop-by-hop headers (RFC 9110 7.6.1) and the ones a proxy must not pass on.
const HOP_BY_HOP: [HeaderName; 8] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    UPGRADE,
];

/// The longest a client may pause while sending a proxied body.
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(15);

const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_AUTH_USER_ID: HeaderName = HeaderName::from_static("x-auth-user-id");
const X_AUTH_USERNAME: HeaderName = HeaderName::from_static("x-auth-username");
const X_AUTH_ROLES: HeaderName = HeaderName::from_static("x-auth-roles");
const X_AUTH_SESSION_ID: HeaderName = HeaderName::from_static("x-auth-session-id");

/// The identity headers (and bearer token) of one verified token, built once
/// and cloned into every request that carries it.
#[derive(Debug)]
pub struct IdentityHeaders {
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl IdentityHeaders {
    pub fn new(token: &str, claims: &AccessClaims) -> IdentityHeaders {
        let values = [
            (AUTHORIZATION, format!("Bearer {token}")),
            (X_AUTH_USER_ID, claims.sub.clone()),
            (X_AUTH_USERNAME, claims.preferred_username.clone()),
            (X_AUTH_ROLES, claims.roles.join(",")),
            (X_AUTH_SESSION_ID, claims.sid.clone()),
        ];
        let headers = values
            .into_iter()
            .filter_map(|(name, value)| {
                HeaderValue::from_str(&value)
                    .ok()
                    .map(|value| (name, value))
            })
            .collect();
        IdentityHeaders { headers }
    }

    fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Where requests go.
#[derive(Clone, Debug)]
struct Upstream {
    scheme: Scheme,
    authority: Authority,
    /// A path the upstream URL had, put in front of every forwarded path.
    base_path: String,
}

pub struct Proxy {
    client: Client<HttpConnector, Body>,
    latency: Histogram,
    upstream: Option<Upstream>,
    timeout: Duration,
    max_body: u64,
}

/// Facts about the request that the header rules need.
pub struct Forwarding<'a> {
    /// The normalised path that was authorised.
    pub path: &'a str,
    pub identity: Option<&'a Identity>,
    /// The socket peer, appended to `X-Forwarded-For`.
    pub peer: IpAddr,
    /// Whether the peer is a trusted proxy whose `X-Forwarded-Proto`/`-Host` stand.
    pub peer_is_trusted: bool,
}

impl Proxy {
    /// `latency` observes how long the upstream takes to answer.
    pub fn new(
        upstream: Option<&Uri>,
        timeout: Duration,
        max_body: u64,
        latency: Histogram,
    ) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        let upstream = upstream.map(|uri| Upstream {
            scheme: uri.scheme().cloned().unwrap_or(Scheme::HTTP),
            authority: uri
                .authority()
                .cloned()
                .expect("the upstream URL was validated"),
            base_path: uri.path().trim_end_matches('/').to_string(),
        });
        Proxy {
            client,
            latency,
            upstream,
            timeout,
            max_body,
        }
    }

    pub fn is_configured(&self) -> bool {
        self.upstream.is_some()
    }

    /// Whether the upstream accepts a connection within a second; `None`
    /// without an upstream.
    pub async fn upstream_reachable(&self) -> Option<bool> {
        let upstream = self.upstream.as_ref()?;
        let address = (
            upstream.authority.host(),
            upstream.authority.port_u16().unwrap_or(80),
        );
        let connect = tokio::net::TcpStream::connect(address);
        Some(matches!(
            tokio::time::timeout(Duration::from_secs(1), connect).await,
            Ok(Ok(_))
        ))
    }

    /// Forwards `request` and streams the upstream's answer back.
    pub async fn forward(
        &self,
        request: Request<Incoming>,
        forwarding: Forwarding<'_>,
    ) -> Result<Response<Body>, ApiError> {
        let upstream = self
            .upstream
            .as_ref()
            .ok_or(ApiError::UpstreamNotConfigured)?;
        let (mut parts, body) = request.into_parts();

        let declared_length = content_length(&parts.headers)?;
        if declared_length.is_some_and(|length| length > self.max_body) {
            return Err(ApiError::PayloadTooLarge);
        }

        parts.uri = upstream_uri(upstream, &parts.uri, forwarding.path)?;
        let original_host = parts.headers.get(HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        prepare_headers(&mut parts.headers, &forwarding, original_host);
        parts.version = http::Version::HTTP_11;

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
            match tokio::time::timeout(self.timeout, self.client.request(upstream_request)).await {
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
        remove_hop_by_hop(&mut parts.headers);
        remove_cors_headers(&mut parts.headers);
        // An upstream that stalls mid-body is cut off after the same timeout
        // rather than holding the client forever.
        Ok(Response::from_parts(
            parts,
            TimeoutBody::new(self.timeout, body).boxed_unsync(),
        ))
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

/// The upstream's URI for `path` (the normalised one) and the original query.
fn upstream_uri(upstream: &Upstream, original: &Uri, path: &str) -> Result<Uri, ApiError> {
    let path_and_query = match (original.path_and_query(), original.query()) {
        // Already normal, nothing to prefix: reuse it as it is.
        (Some(unchanged), _) if upstream.base_path.is_empty() && unchanged.path() == path => {
            unchanged.clone()
        }
        (_, Some(query)) => {
            PathAndQuery::try_from(format!("{}{}?{}", upstream.base_path, path, query))
                .map_err(|_| unforwardable())?
        }
        (_, None) => PathAndQuery::try_from(format!("{}{}", upstream.base_path, path))
            .map_err(|_| unforwardable())?,
    };
    Uri::builder()
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| unforwardable())
}

fn unforwardable() -> ApiError {
    ApiError::InvalidRequest("the request target cannot be forwarded".into())
}

/// Applies the header rules, in the order that makes them safe.
fn prepare_headers(
    headers: &mut HeaderMap,
    forwarding: &Forwarding<'_>,
    original_host: Option<HeaderValue>,
) {
    // The request's id, which `Connection` may name but must not remove.
    let request_id = headers.get(X_REQUEST_ID).cloned();
    // First what the client asked to be dropped, so it cannot name the
    // headers added below.
    remove_hop_by_hop(headers);
    headers.remove(TRANSFER_ENCODING);
    headers.remove(EXPECT);
    headers.remove(HOST);
    remove_identity_spoofs(headers);
    remove_gateway_cookies(headers);
    if !forwarding.peer_is_trusted {
        // Only a trusted proxy may speak for the client's address.
        headers.remove(FORWARDED);
        headers.remove(X_REAL_IP);
    }

    match forwarding.identity {
        Some(identity) => identity.upstream_headers.apply(headers),
        // A public request: a bearer token that did not verify is not passed
        // on for an upstream to mistake for a checked one.
        None => {
            if headers.get_all(AUTHORIZATION).iter().any(is_bearer_scheme) {
                let kept: Vec<HeaderValue> = headers
                    .get_all(AUTHORIZATION)
                    .iter()
                    .filter(|value| !is_bearer_scheme(value))
                    .cloned()
                    .collect();
                headers.remove(AUTHORIZATION);
                for value in kept {
                    headers.append(AUTHORIZATION, value);
                }
            }
        }
    }

    let forwarded_for = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.trim().is_empty() => format!("{existing}, {}", forwarding.peer),
        _ => forwarding.peer.to_string(),
    };
    insert_text(headers, X_FORWARDED_FOR, &forwarded_for);
    if !(forwarding.peer_is_trusted && headers.contains_key(X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !(forwarding.peer_is_trusted && headers.contains_key(X_FORWARDED_HOST)) {
        match original_host {
            Some(host) => headers.insert(X_FORWARDED_HOST, host),
            None => headers.remove(X_FORWARDED_HOST),
        };
    }
    if let Some(request_id) = request_id {
        headers.insert(X_REQUEST_ID, request_id);
    }
}

fn insert_text(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// Drops hop-by-hop headers and every header `Connection` names.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// An upstream's `Access-Control-*` headers: CORS is the gateway's to decide.
fn remove_cors_headers(headers: &mut HeaderMap) {
    let cors: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in cors {
        headers.remove(name);
    }
}

/// `X-Auth-*` in any spelling, `X_Auth_User_Id` included: only the gateway
/// speaks for the user.
fn remove_identity_spoofs(headers: &mut HeaderMap) {
    let spoofs: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_identity_header(name.as_str()))
        .cloned()
        .collect();
    for name in spoofs {
        headers.remove(name);
    }
}

/// `x-auth-…` with `_` for any `-` (header names are lower-case here).
fn is_identity_header(name: &str) -> bool {
    let name = name.as_bytes();
    name.len() > 7
        && name[..7]
            .iter()
            .zip(b"x-auth-")
            .all(|(&actual, &expected)| actual == expected || (expected == b'-' && actual == b'_'))
}

/// Removes the `tollgate_*` cookies from `Cookie`; other cookies stay.
fn remove_gateway_cookies(headers: &mut HeaderMap) {
    let is_ours = |pair: &str| pair.trim_start().starts_with("tollgate_");
    let any_ours = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| std::str::from_utf8(value.as_bytes()).ok())
        .any(|value| value.split(';').any(is_ours));
    if !any_ours {
        return;
    }
    let kept: Vec<&str> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| std::str::from_utf8(value.as_bytes()).ok())
        .flat_map(|value| value.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && !is_ours(pair))
        .collect();
    let kept = kept.join("; ");
    headers.remove(COOKIE);
    if !kept.is_empty() {
        insert_text(headers, COOKIE, &kept);
    }
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

/// The error and its causes on one line, for the log.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    #[test]
    fn identity_spoofs_are_removed_in_every_spelling() {
        let mut h = headers(&[
            ("x-auth-user-id", "1"),
            ("x_auth_user_id", "2"),
            ("X-AUTH-ROLES", "admin"),
            ("x-auth_username", "eve"),
            ("x-authority", "kept"),
            ("x-other", "kept"),
        ]);
        remove_identity_spoofs(&mut h);
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["x-authority", "x-other"]);
    }

    #[test]
    fn connection_named_headers_go_before_identity_is_added() {
        let mut h = headers(&[
            ("connection", "keep-alive, X-Auth-User-Id, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("x-kept", "1"),
        ]);
        remove_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn only_the_gateways_cookies_are_removed() {
        let mut h = headers(&[
            ("cookie", "a=1; tollgate_access=x; tollgate_refresh=y"),
            ("cookie", "b=2"),
        ]);
        remove_gateway_cookies(&mut h);
        assert_eq!(h.get_all(COOKIE).iter().collect::<Vec<_>>(), ["a=1; b=2"]);
        let mut only_ours = headers(&[("cookie", "tollgate_access=x")]);
        remove_gateway_cookies(&mut only_ours);
        assert!(!only_ours.contains_key(COOKIE));
    }
}
