//! The header rules as a property of the running gateway: arbitrary bytes in
//! `Cookie`, `Host`, `X-Forwarded-*`, `Authorization` and `X-Auth-*`, sent
//! raw over TCP so that bytes that are not UTF-8 really go on the wire, never
//! get a 5xx, and never let the gateway's cookies or a client's identity
//! headers reach the upstream. (The rules alone, with many more cases, are
//! in `tests/properties.rs`.)

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::helpers::{Backend, Deployment, TestApp, Tokens};
use crate::upstream::{EchoUpstream, Received};

/// Stands for the signed-up user's access token; replaced when sent.
const ACCESS: &[u8] = b"@ACCESS@";
/// Stands for the user's refresh token, sent to proxied paths only (a
/// refresh route would spend it).
const REFRESH: &[u8] = b"@REFRESH@";

/// Bytes a header value may hold on the wire: tab, space, visible ASCII and
/// every byte from 0x80 up.
fn wire_byte() -> impl Strategy<Value = u8> {
    prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff]
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => Just(ACCESS.to_vec()),
        2 => Just(REFRESH.to_vec()),
        2 => Just(b"tollgate_access=".to_vec()),
        2 => Just(b"tollgate_refresh=".to_vec()),
        1 => Just(b"tollgate_".to_vec()),
        3 => Just(b"; ".to_vec()),
        1 => Just(b";".to_vec()),
        1 => Just(b",".to_vec()),
        1 => Just(b"=".to_vec()),
        1 => Just(b" ".to_vec()),
        1 => Just(b"\t".to_vec()),
        1 => Just("\u{a0}".as_bytes().to_vec()),
        1 => Just("\u{2003}".as_bytes().to_vec()),
        1 => Just(b"\xff\xfe".to_vec()),
        2 => Just(b"Bearer ".to_vec()),
        1 => Just(b"bearer\t".to_vec()),
        1 => Just(b"Basic ".to_vec()),
        1 => Just(b"127.0.0.1".to_vec()),
        1 => Just(b"[::1]:8080".to_vec()),
        1 => Just(b"https".to_vec()),
        1 => Just(b"example.com".to_vec()),
        1 => "[a-zA-Z0-9._-]{1,8}".prop_map(String::into_bytes),
        2 => prop::collection::vec(wire_byte(), 1..6),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("Cookie".to_string()),
        1 => Just("Host".to_string()),
        3 => Just("Authorization".to_string()),
        1 => Just("X-Forwarded-For".to_string()),
        1 => Just("X-Forwarded-Host".to_string()),
        1 => Just("X-Forwarded-Proto".to_string()),
        2 => "[xX][-_][aA][uU][tT][hH][-_](User[-_]Id|username|ROLES|session[-_]id|[a-z]{0,4})",
    ]
}

/// One request: which gateway, which method and path, and its headers.
#[derive(Debug, Clone)]
struct Case {
    trusting: bool,
    route: (&'static str, &'static str),
    /// Whether the `Host` line comes first, as clients send it; fuzzed
    /// `Host` lines come on top.
    host: bool,
    headers: Vec<(String, Vec<u8>)>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<bool>(),
        prop_oneof![
            4 => Just(("GET", "/api/tickets")),
            3 => Just(("GET", "/public/page")),
            1 => Just(("POST", "/api/tickets")),
            1 => Just(("GET", "/api/auth/verify")),
            1 => Just(("GET", "/api/auth/me")),
            1 => Just(("POST", "/api/auth/refresh")),
        ],
        prop::bool::weighted(0.9),
        prop::collection::vec((header_name(), header_value()), 0..8),
    )
        .prop_map(|(trusting, route, host, headers)| Case {
            trusting,
            route,
            host,
            headers,
        })
}

/// `value` with every `from` replaced by `to`.
fn replace(value: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut rest = value;
    while !rest.is_empty() {
        if rest.starts_with(from) {
            out.extend_from_slice(to);
            rest = &rest[from.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

fn request_bytes(case: &Case, tokens: &Tokens) -> Vec<u8> {
    let (method, path) = case.route;
    let refresh: &[u8] = if path.starts_with("/api/auth/") {
        b"not-the-refresh-token"
    } else {
        tokens.refresh.as_bytes()
    };
    let mut request = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    if case.host {
        request.extend_from_slice(b"Host: gateway.example\r\n");
    }
    for (name, value) in &case.headers {
        let value = replace(value, ACCESS, tokens.access.as_bytes());
        let value = replace(&value, REFRESH, refresh);
        request.extend_from_slice(name.as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(&value);
        request.extend_from_slice(b"\r\n");
    }
    if method == "POST" {
        request.extend_from_slice(b"Content-Length: 0\r\n");
    }
    request.extend_from_slice(b"Connection: close\r\n\r\n");
    request
}

/// The identity headers the gateway sends for `tokens`' user.
fn expected_identity(tokens: &Tokens) -> [(&'static str, String); 4] {
    [
        ("x-auth-user-id", tokens.user_id.clone()),
        ("x-auth-username", "alice".to_string()),
        ("x-auth-roles", String::new()),
        ("x-auth-session-id", tokens.session_id()),
    ]
}

/// What the upstream may receive, whatever the client sent.
fn check_received(received: &Received, case: &Case, tokens: &Tokens) -> Result<(), TestCaseError> {
    for value in received.headers.get_all("cookie") {
        let cookies = String::from_utf8_lossy(value.as_bytes()).into_owned();
        for pair in cookies.split(';') {
            prop_assert!(
                !pair.trim().starts_with("tollgate_"),
                "a gateway cookie reached the upstream: {:?}",
                value
            );
        }
    }
    let expected = expected_identity(tokens);
    let mut identity_names = Vec::new();
    for (name, value) in &received.headers {
        if !name.as_str().replace('_', "-").starts_with("x-auth-") {
            continue;
        }
        identity_names.push(name.as_str());
        let gateways = expected.iter().find(|(expected, _)| name == expected);
        prop_assert!(
            gateways.is_some_and(|(_, expected)| value.as_bytes() == expected.as_bytes()),
            "a client's {}: {:?} reached the upstream",
            name,
            value
        );
    }
    let mut unique = identity_names.clone();
    unique.dedup();
    prop_assert_eq!(unique.len(), identity_names.len(), "{:?}", identity_names);
    let bearer = format!("Bearer {}", tokens.access);
    for value in received.headers.get_all("authorization") {
        prop_assert!(
            !tollgate::auth::credentials::is_bearer_scheme(value) || value == bearer.as_str(),
            "an unverified bearer reached the upstream: {:?}",
            value
        );
    }
    if case.route.1 == "/api/tickets" {
        prop_assert!(
            received.headers.contains_key("x-auth-user-id"),
            "a protected route was forwarded without an identity"
        );
    }
    if !case.trusting {
        prop_assert_eq!(received.header("x-forwarded-for"), Some("127.0.0.1"));
        prop_assert_eq!(received.header("x-forwarded-proto"), Some("http"));
    }
    Ok(())
}

#[test]
fn arbitrary_header_bytes_never_fail_the_gateway_or_reach_the_upstream() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let upstream = runtime.block_on(EchoUpstream::start());
    let url = upstream.url();
    let (gateway, trusting, tokens) = runtime.block_on(async {
        let deployment = Deployment::new(Backend::Sqlite).await;
        let flags = ["--upstream", url.as_str(), "--public-paths", "/public"];
        let gateway = deployment.spawn(&flags).await;
        let trusting = deployment
            .spawn(&[&flags[..], &["--trusted-proxies", "127.0.0.0/8"]].concat())
            .await;
        let tokens = gateway.signed_up("alice").await;
        (gateway, trusting, tokens)
    });
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&case(), |case| {
        let app: &TestApp = if case.trusting { &trusting } else { &gateway };
        let request = request_bytes(&case, &tokens);
        let hits = upstream.hits();
        let answer = runtime.block_on(app.raw(&request));
        let status = answer
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse::<u16>().ok());
        prop_assert!(status.is_some(), "no answer: {:?}", answer);
        let status = status.unwrap();
        prop_assert!(status < 500, "{}", answer);
        if upstream.hits() > hits {
            check_received(&upstream.last(), &case, &tokens)?;
        }
        Ok(())
    });
    drop((gateway, trusting));
    if let Err(error) = result {
        panic!("{error}");
    }
}
