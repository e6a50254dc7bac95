//! The header rules of a forwarded request, applied in the order that makes
//! them safe: first what the client asked to be dropped (hop-by-hop headers
//! and every header named in `Connection`), so that it cannot name the
//! headers added after; then everything only the gateway may say (client
//! `X-Auth-*` in any spelling, the gateway's cookies, URL and method
//! overrides, forwarding headers from untrusted peers); then the identity,
//! the bearer token, the `X-Forwarded-*` headers and the trace context.

use http::header::{
    AUTHORIZATION, CONNECTION, COOKIE, EXPECT, FORWARDED, HOST, PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::auth::Identity;
use crate::auth::credentials::is_bearer_scheme;
use crate::client_addr::ClientInfo;
use crate::otel::{TRACEPARENT, TRACESTATE, TraceHeaders};

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

/// Headers that make some upstream frameworks serve another URL or method
/// than the one that was authorised.
const OVERRIDES: [HeaderName; 5] = [
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the rules need to know about the request beyond its headers.
pub struct Forwarded<'a> {
    pub identity: Option<&'a Identity>,
    pub client: &'a ClientInfo,
    /// The host the client addressed: its `Host`, or HTTP/2's `:authority`.
    pub client_host: Option<HeaderValue>,
    /// Kept for a WebSocket handshake: `Upgrade: websocket` and the
    /// `Connection: upgrade` that goes with it.
    pub upgrade: Option<HeaderValue>,
    /// The gateway's W3C trace context, when spans are exported.
    pub trace: Option<&'a TraceHeaders>,
}

/// Applies the rules to the headers of a request about to be forwarded.
pub fn prepare_request(headers: &mut HeaderMap, forwarded: &Forwarded<'_>) {
    // The request's id, which `Connection` may name but must not remove.
    let request_id = headers.get(X_REQUEST_ID).cloned();
    remove_hop_by_hop(headers);
    headers.remove(TRANSFER_ENCODING);
    headers.remove(EXPECT);
    headers.remove(HOST);
    remove_identity_spoofs(headers);
    remove_gateway_cookies(headers);
    for name in &OVERRIDES {
        headers.remove(name);
    }
    if !forwarded.client.peer_is_trusted {
        // Only a trusted proxy may speak for the client, or name the trace
        // the request belongs to.
        for name in [
            FORWARDED,
            X_REAL_IP,
            X_FORWARDED_FOR,
            X_FORWARDED_PROTO,
            X_FORWARDED_HOST,
            TRACEPARENT,
            TRACESTATE,
        ] {
            headers.remove(name);
        }
    }

    match forwarded.identity {
        Some(identity) => identity.apply_for_upstream(headers),
        // A public request: a bearer token that did not verify is not passed
        // on for an upstream to mistake for a checked one.
        None => remove_bearer_tokens(headers),
    }

    // Several `X-Forwarded-For` lines are one list (RFC 9110 5.3), the one
    // the client address was read from; a list that is not text is dropped.
    let existing: Option<Vec<&str>> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .map(|value| value.to_str().ok().map(str::trim))
        .filter(|value| value.is_none_or(|value| !value.is_empty()))
        .collect();
    let forwarded_for = match existing {
        Some(hops) if !hops.is_empty() => format!("{}, {}", hops.join(", "), forwarded.client.peer),
        _ => forwarded.client.peer.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !headers.contains_key(X_FORWARDED_HOST)
        && let Some(host) = &forwarded.client_host
    {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
    if let Some(request_id) = request_id {
        headers.insert(X_REQUEST_ID, request_id);
    }
    if let Some(trace) = forwarded.trace {
        trace.apply(headers);
    }
    if let Some(upgrade) = &forwarded.upgrade {
        headers.insert(UPGRADE, upgrade.clone());
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Applies the rules to the headers of an upstream's answer: hop-by-hop
/// headers go, and so do its `Access-Control-*` headers, since CORS is the
/// gateway's to decide.
pub fn prepare_response(headers: &mut HeaderMap, upgraded: bool) {
    let upgrade = upgraded.then(|| headers.get(UPGRADE).cloned()).flatten();
    remove_hop_by_hop(headers);
    let cors: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in cors {
        headers.remove(name);
    }
    if let Some(upgrade) = upgrade {
        headers.insert(UPGRADE, upgrade);
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Drops hop-by-hop headers and every header `Connection` names.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
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

/// `x-auth-…` with `_` for any `-` (header names are lower-case here),
/// `x-auth-` itself included.
fn is_identity_header(name: &str) -> bool {
    let name = name.as_bytes();
    name.len() >= 7
        && name[..7]
            .iter()
            .zip(b"x-auth-")
            .all(|(&actual, &expected)| actual == expected || (expected == b'-' && actual == b'_'))
}

/// Removes the `tollgate_*` cookies from `Cookie`, whatever bytes the header
/// holds (a value that is not UTF-8 must not smuggle them through); the
/// other cookies stay, byte for byte. A name behind whitespace that is not
/// ASCII (a no-break space) is not one the gateway reads, but a lenient
/// upstream parser may trim it to `tollgate_…`: it goes too.
fn remove_gateway_cookies(headers: &mut HeaderMap) {
    let is_ours = |pair: &[u8]| {
        String::from_utf8_lossy(pair)
            .trim_start()
            .starts_with("tollgate_")
    };
    let any_ours = headers
        .get_all(COOKIE)
        .iter()
        .any(|value| value.as_bytes().split(|&b| b == b';').any(is_ours));
    if !any_ours {
        return;
    }
    let mut kept: Vec<u8> = Vec::new();
    for pair in headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
        .map(<[u8]>::trim_ascii)
        .filter(|pair| !pair.is_empty() && !is_ours(pair))
    {
        if !kept.is_empty() {
            kept.extend_from_slice(b"; ");
        }
        kept.extend_from_slice(pair);
    }
    headers.remove(COOKIE);
    if let Ok(value) = HeaderValue::from_bytes(&kept)
        && !kept.is_empty()
    {
        headers.insert(COOKIE, value);
    }
}

/// Withholds every bearer `Authorization`, in any spelling; other schemes stay.
fn remove_bearer_tokens(headers: &mut HeaderMap) {
    if !headers.get_all(AUTHORIZATION).iter().any(is_bearer_scheme) {
        return;
    }
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

    #[test]
    fn gateway_cookies_go_even_beside_bytes_that_are_not_utf8() {
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_bytes(b"a=\xff; tollgate_access=x; tollgate_refresh=y").unwrap(),
        );
        remove_gateway_cookies(&mut h);
        assert_eq!(h.get(COOKIE).unwrap().as_bytes(), b"a=\xff");
    }

    #[test]
    fn gateway_cookies_go_even_behind_whitespace_that_is_not_ascii() {
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_str(
                "a=1; \u{a0}tollgate_access=x;\u{2003}\ttollgate_refresh=y; b\u{a0}=2",
            )
            .unwrap(),
        );
        remove_gateway_cookies(&mut h);
        assert_eq!(h.get(COOKIE).unwrap(), "a=1; b\u{a0}=2");
    }
}
