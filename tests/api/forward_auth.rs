//! Forward-auth (contract section 11): `/api/auth/verify` answers an
//! ingress whether a request may pass, from the token alone; and real nginx
//! (`auth_request`) and Caddy (`forward_auth`) in front of an upstream, with
//! the gateway as their verifier, configured as the README shows.

use http::{Method, StatusCode};

use crate::helpers::{Backend, GatewayClient, TestApp, TestResponse, Tokens};
use crate::ingress::{Caddy, Nginx};
use crate::on_both_backends;
use crate::upstream::EchoUpstream;

const VERIFY: &str = "/api/auth/verify";

/// Asserts a 200 carrying `tokens`' identity and nothing else.
#[track_caller]
fn assert_allowed(response: &TestResponse, tokens: &Tokens, username: &str, roles: &str) {
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(response.header("x-auth-user-id"), Some(&*tokens.user_id));
    assert_eq!(response.header("x-auth-username"), Some(username));
    assert_eq!(response.header("x-auth-roles"), Some(roles));
    assert_eq!(
        response.header("x-auth-session-id"),
        Some(&*tokens.session_id())
    );
    assert_eq!(response.header("x-auth-reason"), None);
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert!(response.body.is_empty(), "{}", response.text());
}

/// Asserts a refusal with the contract's error and `X-Auth-Reason`.
#[track_caller]
fn assert_refused(response: &TestResponse, status: StatusCode, code: &str, reason: &str) {
    response.assert_error(status, code);
    assert_eq!(response.header("x-auth-reason"), Some(reason));
    assert_eq!(response.header("x-auth-user-id"), None);
}

fn bearer(tokens: &Tokens) -> String {
    format!("Bearer {}", tokens.access)
}

fn cookie(tokens: &Tokens) -> String {
    format!("tollgate_access={}", tokens.access)
}

async fn a_valid_token_gets_200_with_the_identity_and_no_body(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.signed_up("alice").await;
    let boss = app.signed_up_with_roles("boss", &["staff", "admin"]).await;

    assert_allowed(
        &app.get_with_token(VERIFY, &alice.access).await,
        &alice,
        "alice",
        "",
    );
    let response = app
        .send(Method::GET, VERIFY, &[("cookie", &cookie(&alice))], None)
        .await;
    assert_allowed(&response, &alice, "alice", "");
    let response = app
        .send(
            Method::HEAD,
            VERIFY,
            &[("authorization", &bearer(&boss))],
            None,
        )
        .await;
    assert_allowed(&response, &boss, "boss", "staff,admin");
}

async fn a_refusal_is_the_proxys_401_with_a_reason(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.signed_up("alice").await;

    let response = app.get(VERIFY).await;
    assert_refused(
        &response,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "unauthorized",
    );
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer realm=\"tollgate\"")
    );

    let (signed, signature) = alice.access.rsplit_once('.').unwrap();
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{signed}.{flipped}{}", &signature[1..]);
    for (headers, reason) in [
        (
            vec![("authorization", "Bearer not-a-token".to_string())],
            "malformed",
        ),
        (
            vec![("authorization", "Bearer two words".to_string())],
            "malformed",
        ),
        (
            vec![("cookie", "tollgate_access=junk".to_string())],
            "malformed",
        ),
        (
            vec![("authorization", format!("Bearer {tampered}"))],
            "bad_signature",
        ),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let response = app.send(Method::GET, VERIFY, &headers, None).await;
        assert_refused(&response, StatusCode::UNAUTHORIZED, "invalid_token", reason);
        let challenge = response.header("www-authenticate").unwrap();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    }

    // A logout is refused here at once, as by the proxy.
    assert_allowed(
        &app.get_with_token(VERIFY, &alice.access).await,
        &alice,
        "alice",
        "",
    );
    assert_eq!(
        app.logout(&alice.access).await.status,
        StatusCode::NO_CONTENT
    );
    let response = app.get_with_token(VERIFY, &alice.access).await;
    assert_refused(
        &response,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "revoked",
    );
    assert_eq!(response.reason(), "revoked");
}

async fn a_role_is_checked_when_named(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.signed_up("alice").await;
    let boss = app.signed_up_with_roles("boss", &["team:ops"]).await;

    for path in [
        "/api/auth/verify?role=team:ops",
        "/api/auth/verify?role=team%3Aops",
    ] {
        assert_allowed(
            &app.get_with_token(path, &boss.access).await,
            &boss,
            "boss",
            "team:ops",
        );
        let response = app.get_with_token(path, &alice.access).await;
        assert_refused(
            &response,
            StatusCode::FORBIDDEN,
            "insufficient_role",
            "insufficient_role",
        );
    }
    // Without a token, the 401 comes first.
    let response = app.get("/api/auth/verify?role=team:ops").await;
    assert_refused(
        &response,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "unauthorized",
    );
    // A query that does not say one role plainly lets no one through.
    for path in [
        "/api/auth/verify?roles=team:ops",
        "/api/auth/verify?role=a&role=b",
        "/api/auth/verify?role=",
        "/api/auth/verify?role=a,b",
    ] {
        let response = app.get_with_token(path, &boss.access).await;
        assert_refused(
            &response,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "invalid_request",
        );
    }
}

async fn a_cookie_on_a_request_that_changes_state_needs_a_trusted_origin(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.signed_up("alice").await;
    let cookie = cookie(&alice);
    let own = app.url("");
    let foreign = "https://evil.example";

    // nginx, Traefik and Caddy ask with GET and name the original method.
    for method_header in ["x-forwarded-method", "x-original-method"] {
        let response = app
            .send(
                Method::GET,
                VERIFY,
                &[
                    ("cookie", &cookie),
                    (method_header, "POST"),
                    ("origin", foreign),
                ],
                None,
            )
            .await;
        assert_refused(
            &response,
            StatusCode::FORBIDDEN,
            "csrf_rejected",
            "csrf_rejected",
        );
        let response = app
            .send(
                Method::GET,
                VERIFY,
                &[
                    ("cookie", &cookie),
                    (method_header, "POST"),
                    ("origin", &own),
                ],
                None,
            )
            .await;
        assert_allowed(&response, &alice, "alice", "");
        let response = app
            .send(
                Method::GET,
                VERIFY,
                &[
                    ("cookie", &cookie),
                    (method_header, "GET"),
                    ("origin", foreign),
                ],
                None,
            )
            .await;
        assert_allowed(&response, &alice, "alice", "");
    }
    // A WebSocket handshake by cookie, too.
    let response = app
        .send(
            Method::GET,
            VERIFY,
            &[
                ("cookie", &cookie),
                ("upgrade", "websocket"),
                ("origin", foreign),
            ],
            None,
        )
        .await;
    assert_refused(
        &response,
        StatusCode::FORBIDDEN,
        "csrf_rejected",
        "csrf_rejected",
    );
    // A bearer token is exempt, as through the proxy.
    let response = app
        .send(
            Method::GET,
            VERIFY,
            &[
                ("authorization", &bearer(&alice)),
                ("x-forwarded-method", "DELETE"),
                ("origin", foreign),
            ],
            None,
        )
        .await;
    assert_allowed(&response, &alice, "alice", "");
}

/// Envoy's `ext_authz` asks with the original method, at the configured
/// prefix followed by the original path and query.
async fn envoys_original_method_and_path_are_answered(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.signed_up("alice").await;
    for method in [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ] {
        let response = app
            .send(
                method.clone(),
                "/api/auth/verify/api/tickets/7?page=2&role=nonsense",
                &[("authorization", &bearer(&alice))],
                None,
            )
            .await;
        assert_allowed(&response, &alice, "alice", "");
    }
    let response = app
        .send(
            Method::DELETE,
            "/api/auth/verify/api/tickets/7",
            &[
                ("cookie", &cookie(&alice)),
                ("origin", "https://evil.example"),
            ],
            None,
        )
        .await;
    assert_refused(
        &response,
        StatusCode::FORBIDDEN,
        "csrf_rejected",
        "csrf_rejected",
    );
    let response = app
        .send(Method::POST, "/api/auth/verify/api/tickets", &[], None)
        .await;
    assert_refused(
        &response,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "unauthorized",
    );
}

on_both_backends!(
    a_valid_token_gets_200_with_the_identity_and_no_body,
    a_refusal_is_the_proxys_401_with_a_reason,
    a_role_is_checked_when_named,
    a_cookie_on_a_request_that_changes_state_needs_a_trusted_origin,
    envoys_original_method_and_path_are_answered,
);

/// The fenced block of README.md whose first line is `marker`, with the
/// README's placeholder addresses replaced by the test's.
fn readme_snippet(marker: &str, replacements: &[(&str, String)]) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find(marker)
        .unwrap_or_else(|| panic!("README.md has no block starting with {marker:?}"));
    let block = &readme[start..];
    let mut snippet = block[..block.find("\n```").expect("a closed block")].to_string();
    for (placeholder, actual) in replacements {
        assert!(snippet.contains(placeholder), "{placeholder} in {snippet}");
        snippet = snippet.replace(placeholder, actual);
    }
    snippet
}

/// What an ingress in front of the echo upstream must do, with the gateway
/// as its verifier: let valid tokens through with the gateway's identity
/// (never the client's), refuse the rest before the upstream sees them.
async fn check_ingress(app: &TestApp, upstream: &EchoUpstream, ingress: &GatewayClient) {
    let alice = app.signed_up("alice").await;
    let boss = app.signed_up_with_roles("boss", &["admin"]).await;

    let response = ingress.get("/tickets").await;
    assert_eq!(
        response.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        response.text()
    );
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer realm=\"tollgate\"")
    );
    assert_eq!(response.header("x-auth-reason"), Some("unauthorized"));
    assert_eq!(
        upstream.hits(),
        0,
        "refused requests never reach the upstream"
    );

    // By bearer and by cookie; the client's own identity headers, in any
    // case, are replaced by the gateway's.
    let spoofs = [
        ("x-auth-user-id", "someone-else"),
        ("X-Auth-Roles", "admin"),
        ("x-auth-username", "root"),
        ("x-auth-session-id", "forged"),
    ];
    for credential in [
        ("authorization", bearer(&alice)),
        ("cookie", cookie(&alice)),
    ] {
        let mut headers = vec![(credential.0, credential.1.as_str())];
        headers.extend(spoofs);
        let response = ingress
            .send(Method::GET, "/tickets?page=2", &headers, None)
            .await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        let received = upstream.last();
        assert_eq!(received.path, "/tickets");
        assert_eq!(received.query.as_deref(), Some("page=2"));
        assert_eq!(received.header("x-auth-user-id"), Some(&*alice.user_id));
        assert_eq!(received.header("x-auth-username"), Some("alice"));
        assert_eq!(
            received.header("x-auth-session-id"),
            Some(&*alice.session_id())
        );
        assert!(
            received.header("x-auth-roles").unwrap_or("").is_empty(),
            "{:?}",
            received.header("x-auth-roles")
        );
    }

    // The role location.
    let response = ingress.get_with_token("/admin/users", &alice.access).await;
    assert_eq!(
        response.status,
        StatusCode::FORBIDDEN,
        "{}",
        response.text()
    );
    assert_eq!(response.header("x-auth-reason"), Some("insufficient_role"));
    let response = ingress
        .get_with_token("/admin/users?page=3", &boss.access)
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(upstream.last().header("x-auth-roles"), Some("admin"));

    // A cookie POST from another site is refused; from the site itself it
    // passes.
    let site = ingress.url("");
    for (origin, status) in [
        ("https://evil.example", StatusCode::FORBIDDEN),
        (site.as_str(), StatusCode::OK),
    ] {
        let before = upstream.hits();
        let response = ingress
            .send(
                Method::POST,
                "/tickets",
                &[("cookie", &cookie(&alice)), ("origin", origin)],
                Some(crate::helpers::Body::Raw("{}".into())),
            )
            .await;
        assert_eq!(response.status, status, "{origin}: {}", response.text());
        let reached = usize::from(status == StatusCode::OK);
        assert_eq!(upstream.hits(), before + reached, "{origin}");
    }

    // A logout is refused at once.
    assert_eq!(
        app.logout(&alice.access).await.status,
        StatusCode::NO_CONTENT
    );
    let response = ingress.get_with_token("/tickets", &alice.access).await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    assert_eq!(response.header("x-auth-reason"), Some("revoked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_asks_the_gateway() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let upstream = EchoUpstream::start().await;
    let nginx = Nginx::start(|listen| {
        readme_snippet(
            "# Forward-auth with nginx auth_request (tested)",
            &[
                ("listen 80;", format!("listen {listen};")),
                ("tollgate:8080", app.addr.to_string()),
                ("app:3000", upstream.addr.to_string()),
            ],
        )
    });
    check_ingress(&app, &upstream, &GatewayClient::new(nginx.addr)).await;
    assert!(
        !nginx.error_log().contains("[emerg]"),
        "{}",
        nginx.error_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth_asks_the_gateway() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let upstream = EchoUpstream::start().await;
    let caddy = Caddy::start(|listen| {
        readme_snippet(
            "# Forward-auth with Caddy forward_auth (tested)",
            &[
                ("example.com", format!("http://{listen}")),
                ("tollgate:8080", app.addr.to_string()),
                ("app:3000", upstream.addr.to_string()),
            ],
        )
    });
    let ingress = GatewayClient::new(caddy.addr);
    check_ingress(&app, &upstream, &ingress).await;
    // Caddy hands the gateway's refusal on as it is.
    let response = ingress.get("/tickets").await;
    response.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    drop(caddy);
}
