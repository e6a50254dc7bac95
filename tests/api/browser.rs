//! The browser rules as a browser meets them: login CSRF on the auth routes,
//! the credential a request actually uses, and the gateway's own origin over
//! HTTP/1.1 and HTTP/2 (its scheme included).

use bytes::Bytes;
use http::{Method, StatusCode, Version};
use http_body_util::{BodyExt, Full};

use crate::helpers::{Backend, Body, PASSWORD, TestApp, TestResponse, Tokens, h2_client};
use crate::on_both_backends;
use crate::upstream::EchoUpstream;

const EVIL: &str = "https://evil.example";
const FRONTEND: &str = "https://app.example.com";

/// What a cross-site `<form enctype="text/plain">` posts: a field named
/// `{"username":"…","password":"…","x":"` with the value `"}` makes a JSON
/// body, sent without a preflight.
fn form_body(username: &str) -> Body {
    Body::Raw(format!(
        r#"{{"username":"{username}","password":"{PASSWORD}","x":"="}}"#
    ))
}

async fn post_form(
    app: &TestApp,
    path: &str,
    username: &str,
    from: &[(&str, &str)],
) -> TestResponse {
    let mut headers = vec![("content-type", "text/plain")];
    headers.extend_from_slice(from);
    app.send(Method::POST, path, &headers, Some(form_body(username)))
        .await
}

#[track_caller]
fn assert_refused_without_cookies(response: &TestResponse) {
    response.assert_error(StatusCode::FORBIDDEN, "csrf_rejected");
    assert!(
        response.set_cookies().is_empty(),
        "a refused request sets no cookie: {:?}",
        response.set_cookies()
    );
}

async fn a_cross_site_form_cannot_log_a_victim_in(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--cors-origins", FRONTEND]).await;
    app.signed_up("mallory").await;
    let foreign = [
        ("origin", EVIL),
        ("referer", "https://evil.example/login-trap.html"),
        // A sandboxed frame or a data: URL.
        ("origin", "null"),
    ];
    for from in foreign {
        let response = post_form(&app, "/api/auth/login", "mallory", &[from]).await;
        assert_refused_without_cookies(&response);
    }
    // A foreign Origin decides even beside an own-looking Referer.
    let response = post_form(
        &app,
        "/api/auth/login",
        "mallory",
        &[("origin", EVIL), ("referer", FRONTEND)],
    )
    .await;
    assert_refused_without_cookies(&response);

    // Servers and curl send neither header; the allowed frontend and the
    // gateway's own pages name themselves.
    let own = app.url("");
    let own_page = app.url("/login");
    for from in [
        vec![],
        vec![("origin", FRONTEND)],
        vec![("referer", "https://app.example.com/sign-in")],
        vec![("origin", own.as_str())],
        vec![("referer", own_page.as_str())],
    ] {
        let response = post_form(&app, "/api/auth/login", "mallory", &from).await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{from:?}: {}",
            response.text()
        );
        assert!(response.set_cookie("tollgate_access").is_some());
    }
}

async fn a_cross_site_form_cannot_register_an_account(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--cors-origins", FRONTEND]).await;
    for (from, username) in [
        (("origin", EVIL), "planted1"),
        (("referer", "https://evil.example/x"), "planted2"),
    ] {
        let response = post_form(&app, "/api/auth/register", username, &[from]).await;
        assert_refused_without_cookies(&response);
        // The account was never created: its name is still free.
        assert_eq!(
            app.register(username, PASSWORD).await.status,
            StatusCode::CREATED
        );
    }
    let response = post_form(
        &app,
        "/api/auth/register",
        "welcome",
        &[("origin", FRONTEND)],
    )
    .await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text());
}

async fn a_junk_bearer_header_does_not_exempt_the_refresh_cookie(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tokens = app.signed_up("alice").await;
    let cookie = format!("tollgate_refresh={}", tokens.refresh);
    let own = app.url("");
    for path in ["/api/auth/refresh", "/api/auth/logout"] {
        // Without Origin and Referer the login-CSRF rule lets a request by,
        // so this is the cookie rule alone: the cookie is the credential
        // used, whatever `Authorization` says.
        for from in [vec![], vec![("origin", EVIL)]] {
            let mut headers = vec![
                ("cookie", cookie.as_str()),
                ("authorization", "Bearer junk"),
            ];
            headers.extend(from);
            app.send(Method::POST, path, &headers, None)
                .await
                .assert_error(StatusCode::FORBIDDEN, "csrf_rejected");
        }
    }
    let refreshed = app.refresh(&tokens.refresh).await;
    assert_eq!(
        refreshed.status,
        StatusCode::OK,
        "the refused requests spent and revoked nothing"
    );
    let refreshed = Tokens::from(&refreshed);
    let cookie = format!("tollgate_refresh={}", refreshed.refresh);
    let from_own_page = [
        ("cookie", cookie.as_str()),
        ("authorization", "Bearer junk"),
        ("origin", own.as_str()),
    ];
    let response = app
        .send(Method::POST, "/api/auth/refresh", &from_own_page, None)
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let cookie = format!("tollgate_refresh={}", Tokens::from(&response).refresh);
    let response = app
        .send(
            Method::POST,
            "/api/auth/logout",
            &[
                ("cookie", cookie.as_str()),
                ("authorization", "Bearer junk"),
                ("origin", own.as_str()),
            ],
            None,
        )
        .await;
    assert_eq!(
        response.status,
        StatusCode::NO_CONTENT,
        "{}",
        response.text()
    );
}

/// One POST over HTTP/2 carrying the access cookie.
async fn h2_cookie_post(app: &TestApp, tokens: &Tokens, headers: &[(&str, &str)]) -> TestResponse {
    let mut request = http::Request::post(app.url("/api/tickets"))
        .header("cookie", format!("tollgate_access={}", tokens.access));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = h2_client()
        .request(request.body(Full::new(Bytes::from_static(b"{}"))).unwrap())
        .await
        .expect("the gateway answers HTTP/2");
    assert_eq!(response.version(), Version::HTTP_2);
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    TestResponse {
        status,
        headers,
        body,
    }
}

async fn a_same_origin_cookie_post_over_http2_is_accepted(backend: Backend) {
    let upstream = EchoUpstream::start().await;
    let app = TestApp::spawn_with(backend, &["--upstream", &upstream.url()]).await;
    let tokens = app.signed_up("alice").await;
    let own = app.url("");
    let response = h2_cookie_post(&app, &tokens, &[("origin", &own)]).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(upstream.hits(), 1);
    let other_port = format!("http://127.0.0.1:{}", app.addr.port() + 1);
    for origin in [EVIL, other_port.as_str()] {
        h2_cookie_post(&app, &tokens, &[("origin", origin)])
            .await
            .assert_error(StatusCode::FORBIDDEN, "csrf_rejected");
    }
    assert_eq!(upstream.hits(), 1);
}

async fn the_scheme_is_part_of_the_own_origin(backend: Backend) {
    let upstream = EchoUpstream::start().await;
    // An untrusted peer on a plain-HTTP listener: `https://` is not the own
    // origin, whatever it claims in X-Forwarded-Proto.
    let app = TestApp::spawn_with(backend, &["--upstream", &upstream.url()]).await;
    let tokens = app.signed_up("alice").await;
    let https_own = format!("https://{}", app.addr);
    for headers in [
        vec![("origin", https_own.as_str())],
        vec![
            ("origin", https_own.as_str()),
            ("x-forwarded-proto", "https"),
        ],
    ] {
        h2_cookie_post(&app, &tokens, &headers)
            .await
            .assert_error(StatusCode::FORBIDDEN, "csrf_rejected");
    }
    assert_eq!(upstream.hits(), 0);

    // A trusted proxy that ended TLS says so.
    let app = TestApp::spawn_with(
        backend,
        &[
            "--upstream",
            &upstream.url(),
            "--trusted-proxies",
            "127.0.0.1/32",
        ],
    )
    .await;
    let tokens = app.signed_up("alice").await;
    let https_own = format!("https://{}", app.addr);
    let behind_tls = [
        ("origin", https_own.as_str()),
        ("x-forwarded-proto", "https"),
    ];
    let response = h2_cookie_post(&app, &tokens, &behind_tls).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let plain_own = app.url("");
    h2_cookie_post(
        &app,
        &tokens,
        &[
            ("origin", plain_own.as_str()),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "csrf_rejected");
}

async fn the_public_url_is_the_own_origin(backend: Backend) {
    let upstream = EchoUpstream::start().await;
    let app = TestApp::spawn_with(
        backend,
        &[
            "--upstream",
            &upstream.url(),
            "--public-url",
            "https://auth.example.com",
        ],
    )
    .await;
    let tokens = app.signed_up("alice").await;
    let response = h2_cookie_post(&app, &tokens, &[("origin", "https://auth.example.com")]).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    // The address the request happened to reach is not where users are.
    let reached = app.url("");
    h2_cookie_post(&app, &tokens, &[("origin", &reached)])
        .await
        .assert_error(StatusCode::FORBIDDEN, "csrf_rejected");
    // Login CSRF reads the same own origin.
    let response = post_form(
        &app,
        "/api/auth/login",
        "alice",
        &[("origin", "https://auth.example.com")],
    )
    .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_refused_without_cookies(
        &post_form(&app, "/api/auth/login", "alice", &[("origin", &reached)]).await,
    );
}

on_both_backends!(
    a_cross_site_form_cannot_log_a_victim_in,
    a_cross_site_form_cannot_register_an_account,
    a_junk_bearer_header_does_not_exempt_the_refresh_cookie,
    a_same_origin_cookie_post_over_http2_is_accepted,
    the_scheme_is_part_of_the_own_origin,
    the_public_url_is_the_own_origin,
);
