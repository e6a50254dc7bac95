//! The route table of contract section 11: several upstreams, the longest
//! prefix on whole segments of the normalised path, and each route option
//! (`public`, `strip`, `role=`), with `--public-paths` on every route.

use std::ffi::OsStr;

use http::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{Backend, Deployment, TestApp};
use crate::on_both_backends;
use crate::process::Process;
use crate::test_ca::TestCa;
use crate::upstream::EchoUpstream;

/// How many requests each upstream has received.
fn hits(upstreams: &[&EchoUpstream]) -> Vec<usize> {
    upstreams.iter().map(|upstream| upstream.hits()).collect()
}

/// A URL on which nothing listens.
fn closed_url() -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", closed.local_addr().unwrap())
}

async fn the_longest_prefix_wins_on_whole_segments_of_the_normalised_path(backend: Backend) {
    let (root, api, v2) = (
        EchoUpstream::start().await,
        EchoUpstream::start().await,
        EchoUpstream::start().await,
    );
    let app = TestApp::spawn_with(
        backend,
        &[
            "--upstream",
            &root.url(),
            "--route",
            &format!("/api={}", api.url()),
            "--route",
            &format!("/api/v2={}", v2.url()),
        ],
    )
    .await;
    let token = app.signed_up("alice").await.access;
    for (path, which, forwarded) in [
        ("/tickets", 0, "/tickets"),
        ("/apix", 0, "/apix"),
        ("/api", 1, "/api"),
        ("/api/tickets", 1, "/api/tickets"),
        ("/api/v2x", 1, "/api/v2x"),
        ("/api/v2", 2, "/api/v2"),
        ("/api/v2/tickets", 2, "/api/v2/tickets"),
        ("/api/./v2/tickets", 2, "/api/v2/tickets"),
        ("/api/v1/../v2/tickets", 2, "/api/v2/tickets"),
        ("/api/v2/../tickets", 1, "/api/tickets"),
    ] {
        let upstreams = [&root, &api, &v2];
        let mut expected = hits(&upstreams);
        expected[which] += 1;
        let response = app.get_with_token(path, &token).await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{path}: {}",
            response.text()
        );
        assert_eq!(hits(&upstreams), expected, "{path}");
        assert_eq!(upstreams[which].last().path, forwarded, "{path}");
    }
}

async fn a_public_route_takes_an_optional_token_and_ignores_an_invalid_one(backend: Backend) {
    let (web, api) = (EchoUpstream::start().await, EchoUpstream::start().await);
    let app = TestApp::spawn_with(
        backend,
        &[
            "--route",
            &format!("/={} public", web.url()),
            "--route",
            &format!("/api={}", api.url()),
        ],
    )
    .await;
    let alice = app.signed_up("alice").await;

    let anonymous = app.get("/index.html").await;
    assert_eq!(anonymous.status, StatusCode::OK, "{}", anonymous.text());
    let received = web.last();
    assert_eq!(received.header("x-auth-user-id"), None);
    assert_eq!(received.header("authorization"), None);

    // A valid token, by bearer or by cookie, still tells the upstream who
    // is asking.
    let cookie = format!("tollgate_access={}", alice.access);
    for headers in [
        vec![("authorization", format!("Bearer {}", alice.access))],
        vec![("cookie", cookie)],
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let response = app.send(Method::GET, "/app.js", &headers, None).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        let received = web.last();
        assert_eq!(received.header("x-auth-user-id"), Some(&*alice.user_id));
        assert_eq!(
            received.header("authorization"),
            Some(&*format!("Bearer {}", alice.access))
        );
    }

    // An invalid one (garbage, or the token of a session that was logged
    // out) is ignored: never a 401, never passed on.
    let revoked = app.signed_up("bob").await.access;
    assert_eq!(app.logout(&revoked).await.status, StatusCode::NO_CONTENT);
    for invalid in [
        ("authorization", "Bearer not-a-token".to_string()),
        ("authorization", format!("Bearer {revoked}")),
        ("cookie", "tollgate_access=not-a-token".to_string()),
        ("cookie", format!("tollgate_access={revoked}")),
    ] {
        let response = app
            .send(Method::GET, "/", &[(invalid.0, &invalid.1)], None)
            .await;
        assert_eq!(response.status, StatusCode::OK, "{invalid:?}");
        let received = web.last();
        assert_eq!(received.header("x-auth-user-id"), None, "{invalid:?}");
        assert_eq!(received.header("authorization"), None, "{invalid:?}");
    }

    // The route beside it still needs a token.
    app.get("/api/tickets")
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(api.hits(), 0);
    let response = app.get_with_token("/api/tickets", &alice.access).await;
    assert_eq!(response.status, StatusCode::OK);
}

async fn strip_removes_the_prefix_before_forwarding(backend: Backend) {
    let (stripped, kept, based) = (
        EchoUpstream::start().await,
        EchoUpstream::start().await,
        EchoUpstream::start().await,
    );
    let app = TestApp::spawn_with(
        backend,
        &[
            "--route",
            &format!("/app={} strip", stripped.url()),
            "--route",
            &format!("/keep={}", kept.url()),
            "--route",
            &format!("/based={}/base strip", based.url()),
        ],
    )
    .await;
    let token = app.signed_up("alice").await.access;
    for (path, upstream, forwarded, query) in [
        ("/app/x", &stripped, "/x", None),
        ("/app/x/y?q=1&r=%2F", &stripped, "/x/y", Some("q=1&r=%2F")),
        ("/app", &stripped, "/", None),
        ("/app/", &stripped, "/", None),
        ("/app?q=1", &stripped, "/", Some("q=1")),
        ("/app/a/../b", &stripped, "/b", None),
        ("/keep/x", &kept, "/keep/x", None),
        ("/based/x", &based, "/base/x", None),
    ] {
        let response = app.get_with_token(path, &token).await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{path}: {}",
            response.text()
        );
        let received = upstream.last();
        assert_eq!(received.path, forwarded, "{path}");
        assert_eq!(received.query.as_deref(), query, "{path}");
    }
}

async fn a_role_route_refuses_tokens_without_the_role(backend: Backend) {
    let (admin, other) = (EchoUpstream::start().await, EchoUpstream::start().await);
    let app = TestApp::spawn_with(
        backend,
        &[
            "--upstream",
            &other.url(),
            "--route",
            &format!("/admin={} role=admin", admin.url()),
        ],
    )
    .await;
    let alice = app.signed_up("alice").await;
    let boss = app.signed_up_with_roles("boss", &["staff", "admin"]).await;

    app.get_with_token("/admin/users", &alice.access)
        .await
        .assert_error(StatusCode::FORBIDDEN, "insufficient_role");
    let cookie = format!("tollgate_access={}", alice.access);
    app.send(Method::GET, "/admin", &[("cookie", &cookie)], None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "insufficient_role");
    app.get("/admin/users")
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(admin.hits(), 0, "refused requests never reach the upstream");

    let response = app.get_with_token("/admin/users", &boss.access).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(admin.last().header("x-auth-roles"), Some("staff,admin"));
    // The role is the route's, not the gateway's.
    let response = app.get_with_token("/tickets", &alice.access).await;
    assert_eq!(response.status, StatusCode::OK);
}

async fn public_paths_apply_to_every_route(backend: Backend) {
    let (a, b, root) = (
        EchoUpstream::start().await,
        EchoUpstream::start().await,
        EchoUpstream::start().await,
    );
    let app = TestApp::spawn_with(
        backend,
        &[
            "--upstream",
            &root.url(),
            "--route",
            &format!("/a={}", a.url()),
            "--route",
            &format!("/b={} role=staff", b.url()),
            "--public-paths",
            "/a/open,/b/open,/open",
        ],
    )
    .await;
    for (path, upstream) in [("/a/open/x", &a), ("/b/open", &b), ("/open/x", &root)] {
        let before = upstream.hits();
        let response = app.get(path).await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{path}: {}",
            response.text()
        );
        assert_eq!(upstream.hits(), before + 1, "{path}");
    }
    for path in ["/a/closed", "/b/closed", "/b/opened", "/closed"] {
        app.get(path)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // A public path needs neither a token nor the route's role: a caller
    // with a token but without the role gets what an anonymous one gets,
    // and the upstream learns who it is.
    let alice = app.signed_up("alice").await;
    let response = app.get_with_token("/b/open/docs", &alice.access).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(b.last().header("x-auth-user-id"), Some(&*alice.user_id));
    app.get_with_token("/b/closed", &alice.access)
        .await
        .assert_error(StatusCode::FORBIDDEN, "insufficient_role");
}

async fn a_path_no_route_claims_is_not_found(backend: Backend) {
    let api = EchoUpstream::start().await;
    let app = TestApp::spawn_with(backend, &["--route", &format!("/api={}", api.url())]).await;
    let token = app.signed_up("alice").await.access;
    for path in ["/", "/other", "/apix", "/ap"] {
        app.get_with_token(path, &token)
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
        // Before any token is looked at.
        app.get(path)
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    assert_eq!(api.hits(), 0);
    let response = app.get_with_token("/api/x", &token).await;
    assert_eq!(response.status, StatusCode::OK);
}

async fn owned_paths_are_never_routed(backend: Backend) {
    let (root, api) = (EchoUpstream::start().await, EchoUpstream::start().await);
    let app = TestApp::spawn_with(
        backend,
        &[
            "--route",
            &format!("/={} public", root.url()),
            "--route",
            &format!("/api={} public", api.url()),
        ],
    )
    .await;
    for path in [
        "/api/auth/nope",
        "/api/auth",
        "/api/admin/nope",
        "/.well-known/nope",
        "/health/nope",
        "/metrics/nope",
        "/api/debug/session",
        "/api/x/../auth/nope",
    ] {
        app.get(path)
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    assert_eq!(app.get("/health").await.json(), json!({ "status": "ok" }));
    assert_eq!(hits(&[&root, &api]), [0, 0]);
    // Owned prefixes cover whole segments: these are the routes'.
    for (path, upstream) in [
        ("/api/authority", &api),
        ("/api/administration", &api),
        ("/healthcare", &root),
        ("/.well-knownx", &root),
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status, StatusCode::OK, "{path}");
        assert_eq!(upstream.last().path, path);
    }
}

async fn each_route_reports_its_own_health(backend: Backend) {
    let root = EchoUpstream::start().await;
    let down = closed_url();
    let app = TestApp::spawn_with(
        backend,
        &[
            "--upstream",
            &root.url(),
            "--route",
            &format!("/reports={down}"),
        ],
    )
    .await;
    let response = app.get("/health/detailed").await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        response.json()["upstream"],
        json!({
            "configured": true,
            "ok": false,
            "routes": [
                { "prefix": "/reports", "ok": false },
                { "prefix": "/", "ok": true },
            ],
        })
    );
    // One route's upstream being down does not touch the other's.
    let token = app.signed_up("alice").await.access;
    app.get_with_token("/reports/x", &token)
        .await
        .assert_error(StatusCode::BAD_GATEWAY, "bad_gateway");
    let response = app.get_with_token("/x", &token).await;
    assert_eq!(response.status, StatusCode::OK);
}

on_both_backends!(
    the_longest_prefix_wins_on_whole_segments_of_the_normalised_path,
    a_public_route_takes_an_optional_token_and_ignores_an_invalid_one,
    strip_removes_the_prefix_before_forwarding,
    a_role_route_refuses_tokens_without_the_role,
    public_paths_apply_to_every_route,
    a_path_no_route_claims_is_not_found,
    owned_paths_are_never_routed,
    each_route_reports_its_own_health,
);

/// `TOLLGATE_ROUTES` holds several routes separated by `;`, options and all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tollgate_routes_takes_routes_separated_by_semicolons() {
    let (web, api) = (EchoUpstream::start().await, EchoUpstream::start().await);
    let deployment = Deployment::new(Backend::Sqlite).await;
    let routes = format!("/={} public; /api={} strip;", web.url(), api.url());
    let gateway = Process::start_with_env(
        &deployment,
        &[],
        &[("TOLLGATE_ROUTES", OsStr::new(&routes))],
    )
    .await;
    let response = gateway.get("/index.html").await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(web.last().path, "/index.html");
    gateway
        .get("/api/tickets")
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let token = gateway.signed_up("alice").await.access;
    let response = gateway.get_with_token("/api/tickets", &token).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(api.last().path, "/tickets");
}

/// An `https://` upstream is verified against the platform's roots, which
/// honour `SSL_CERT_FILE`: one signed by the CA named there is reached, one
/// signed by another CA or for another name is a 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_are_reached_with_a_verified_certificate() {
    let trusted = TestCa::new("tollgate test CA");
    let stranger = TestCa::new("someone else's CA");
    let good = EchoUpstream::start_tls(trusted.server_config(&["127.0.0.1"])).await;
    let untrusted = EchoUpstream::start_tls(stranger.server_config(&["127.0.0.1"])).await;
    let misnamed = EchoUpstream::start_tls(trusted.server_config(&["api.example.com"])).await;
    let deployment = Deployment::new(Backend::Sqlite).await;
    let gateway = Process::start_with_env(
        &deployment,
        &[
            "--route",
            &format!("/good={}/v1", good.https_url()),
            "--route",
            &format!("/untrusted={}", untrusted.https_url()),
            "--route",
            &format!("/misnamed={}", misnamed.https_url()),
        ],
        &[("SSL_CERT_FILE", trusted.pem_file().as_os_str())],
    )
    .await;
    let token = gateway.signed_up("alice").await.access;

    let response = gateway.get_with_token("/good/tickets?q=1", &token).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let received = good.last();
    assert_eq!(received.path, "/v1/good/tickets");
    assert_eq!(received.query.as_deref(), Some("q=1"));
    assert_eq!(received.header("x-auth-username"), Some("alice"));
    assert_eq!(received.header("x-forwarded-proto"), Some("http"));

    for path in ["/untrusted/tickets", "/misnamed/tickets"] {
        gateway
            .get_with_token(path, &token)
            .await
            .assert_error(StatusCode::BAD_GATEWAY, "bad_gateway");
    }
    assert_eq!(hits(&[&untrusted, &misnamed]), [0, 0]);
    let logs = gateway.logs();
    assert!(
        logs.contains("UnknownIssuer") || logs.contains("unknown issuer"),
        "the 502's cause is logged: {logs}"
    );
}
