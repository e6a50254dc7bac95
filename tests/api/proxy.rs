//! The reverse proxy: who gets through, what the upstream receives, and how
//! failures answer.

use http::{Method, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::{Backend, Body, TestApp};
use crate::on_both_backends;
use crate::upstream::{EchoUpstream, pattern_byte};

/// A gateway in front of a fresh echo upstream, with `extra` flags.
async fn gateway(backend: Backend, extra: &[&str]) -> (TestApp, EchoUpstream) {
    let upstream = EchoUpstream::start().await;
    let url = upstream.url();
    let mut flags = vec!["--upstream", url.as_str()];
    flags.extend_from_slice(extra);
    (TestApp::spawn_with(backend, &flags).await, upstream)
}

async fn unauthenticated_requests_never_reach_the_upstream(backend: Backend) {
    let (app, upstream) = gateway(backend, &[]).await;
    app.send(Method::GET, "/api/tickets", &[], None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    app.get_with_token("/api/tickets", "not.a.token")
        .await
        .assert_rejected("malformed");
    app.send(
        Method::GET,
        "/api/tickets",
        &[("cookie", "tollgate_access=garbage")],
        None,
    )
    .await
    .assert_rejected("malformed");
    app.send(Method::GET, "/api/tickets?access_token=whatever", &[], None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(upstream.hits(), 0);
}

async fn the_upstream_receives_the_identity_and_never_a_spoof(backend: Backend) {
    let (app, upstream) = gateway(backend, &[]).await;
    let tokens = app.signed_up("alice").await;
    let bearer = format!("Bearer {}", tokens.access);
    let response = app
        .send(
            Method::GET,
            "/api/tickets",
            &[
                ("authorization", &bearer),
                ("x-auth-user-id", "eve"),
                ("x_auth_user_id", "eve"),
                ("X-AUTH-ROLES", "admin"),
                ("x-auth-username", "eve"),
                ("x_auth-session_id", "stolen"),
                ("connection", "X-Auth-User-Id"),
            ],
            None,
        )
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let received = upstream.last();
    assert_eq!(received.header("authorization"), Some(bearer.as_str()));
    assert_eq!(
        received.header("x-auth-user-id"),
        Some(tokens.user_id.as_str())
    );
    assert_eq!(received.header("x-auth-username"), Some("alice"));
    assert_eq!(received.header("x-auth-roles"), Some(""));
    let sid = crate::helpers::claims_of(&tokens.access)["sid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(received.header("x-auth-session-id"), Some(sid.as_str()));
    for name in received.headers.keys() {
        let spelled = name.as_str().replace('_', "-");
        if spelled.starts_with("x-auth-") {
            assert_eq!(
                received.headers.get_all(name).iter().count(),
                1,
                "{name} once"
            );
            assert!(
                !name.as_str().contains('_'),
                "spoof {name} reached the upstream"
            );
        }
    }
    assert_eq!(received.headers.get_all("x-auth-user-id").iter().count(), 1);
}

async fn a_cookie_becomes_a_bearer_token_and_only_foreign_cookies_pass(backend: Backend) {
    let (app, upstream) = gateway(backend, &[]).await;
    let tokens = app.signed_up("alice").await;
    let cookie = format!(
        "theme=dark; tollgate_access={}; tollgate_refresh={}; lang=en",
        tokens.access, tokens.refresh
    );
    let response = app
        .send(Method::GET, "/api/tickets", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let received = upstream.last();
    assert_eq!(
        received.header("authorization"),
        Some(format!("Bearer {}", tokens.access).as_str())
    );
    assert_eq!(received.header("cookie"), Some("theme=dark; lang=en"));
}

async fn methods_paths_queries_and_bodies_pass_through_unchanged(backend: Backend) {
    let (app, upstream) = gateway(backend, &[]).await;
    let tokens = app.signed_up("alice").await;
    let bearer = format!("Bearer {}", tokens.access);
    for method in [
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::GET,
    ] {
        let body = format!(
            "{{\"method\":\"{method}\",\"padding\":\"{}\"}}",
            "x".repeat(5000)
        );
        let response = app
            .send(
                method.clone(),
                "/api/tickets/42?sort=desc&q=a%20b",
                &[("authorization", &bearer), ("x-custom", "kept")],
                Some(Body::Raw(body.clone())),
            )
            .await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{method}: {}",
            response.text()
        );
        let echo: Value = response.json();
        assert_eq!(echo["method"], method.as_str());
        assert_eq!(echo["path"], "/api/tickets/42");
        assert_eq!(echo["query"], "sort=desc&q=a%20b");
        assert_eq!(echo["body_len"], body.len());
        assert_eq!(
            echo["body_sha256"],
            format!("{:x}", Sha256::digest(body.as_bytes()))
        );
        assert_eq!(echo["headers"]["x-custom"][0], "kept");
    }
    assert_eq!(upstream.hits(), 5);
}

async fn upstream_statuses_and_cookies_come_back_unchanged(backend: Backend) {
    let (app, _upstream) = gateway(backend, &[]).await;
    let tokens = app.signed_up("alice").await;
    for status in [201, 204, 302, 404, 418, 500, 503] {
        let response = app
            .get_with_token(&format!("/status/{status}"), &tokens.access)
            .await;
        assert_eq!(response.status.as_u16(), status);
    }
    let response = app.get_with_token("/cookies", &tokens.access).await;
    assert_eq!(
        response.set_cookies(),
        ["upstream_a=1; Path=/", "upstream_b=2; Path=/; HttpOnly"]
    );
}

async fn hop_by_hop_headers_are_dropped_and_forwarding_headers_set(backend: Backend) {
    let (app, upstream) = gateway(backend, &[]).await;
    let tokens = app.signed_up("alice").await;
    let bearer = format!("Bearer {}", tokens.access);
    let response = app
        .send(
            Method::GET,
            "/api/tickets",
            &[
                ("authorization", &bearer),
                ("connection", "x-private, keep-alive, x-request-id"),
                ("x-private", "secret"),
                ("forwarded", "for=6.6.6.6;proto=https"),
                ("x-real-ip", "6.6.6.6"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("proxy-authorization", "Basic abc"),
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "https"),
                ("x-request-id", "trace-me-123"),
            ],
            None,
        )
        .await;
    assert_eq!(response.status, StatusCode::OK);
    let received = upstream.last();
    for dropped in [
        "x-private",
        "keep-alive",
        "te",
        "proxy-authorization",
        "forwarded",
        "x-real-ip",
    ] {
        assert!(
            received.header(dropped).is_none(),
            "{dropped} reached the upstream"
        );
    }
    // The peer is not a trusted proxy: its X-Forwarded-For is discarded,
    // not appended to.
    assert_eq!(received.header("x-forwarded-for"), Some("127.0.0.1"));
    // The peer is not a trusted proxy: its claim about the scheme is replaced.
    assert_eq!(received.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        received.header("x-forwarded-host"),
        Some(app.addr.to_string().as_str())
    );
    assert_eq!(
        received.header("x-request-id"),
        Some("trace-me-123"),
        "naming it in Connection does not drop the request id"
    );
    assert_eq!(response.header("x-request-id"), Some("trace-me-123"));
}

async fn unverified_bearer_tokens_never_reach_the_upstream_of_a_public_path(backend: Backend) {
    let (app, upstream) = gateway(backend, &["--public-paths", "/public"]).await;
    let tokens = app.signed_up("alice").await;
    assert_eq!(
        app.logout(&tokens.access).await.status,
        StatusCode::NO_CONTENT
    );
    // A revoked token in every spelling an upstream might parse.
    for authorization in [
        format!("Bearer {}", tokens.access),
        format!("bearer\t{}", tokens.access),
        format!("BEARER   {}", tokens.access),
        "Bearer".to_string(),
    ] {
        let response = app
            .send(
                Method::GET,
                "/public/page",
                &[("authorization", &authorization)],
                None,
            )
            .await;
        assert_eq!(response.status, StatusCode::OK, "{authorization:?}");
        assert!(
            upstream.last().header("authorization").is_none(),
            "{authorization:?} reached the upstream"
        );
    }
    let both = format!("Bearer {}", tokens.access);
    let request = format!(
        "GET /public/page HTTP/1.1\r\nHost: x\r\nAuthorization: Basic dXNlcjpwdw==\r\nAuthorization: {both}\r\nConnection: close\r\n\r\n"
    );
    assert!(
        app.raw(request.as_bytes())
            .await
            .starts_with("HTTP/1.1 200")
    );
    let received = upstream.last();
    let forwarded: Vec<&str> = received
        .headers
        .get_all("authorization")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        forwarded,
        ["Basic dXNlcjpwdw=="],
        "only the non-bearer credential passes"
    );
}

async fn the_upstreams_cors_headers_never_reach_the_browser(backend: Backend) {
    let (app, _upstream) = gateway(backend, &[]).await;
    let tokens = app.signed_up("alice").await;
    let bearer = format!("Bearer {}", tokens.access);
    let response = app
        .send(
            Method::GET,
            "/cors",
            &[
                ("authorization", &bearer),
                ("origin", "https://evil.example"),
            ],
            None,
        )
        .await;
    assert_eq!(response.status, StatusCode::OK);
    for name in [
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-expose-headers",
    ] {
        assert!(response.header(name).is_none(), "{name} passed through");
    }
}

async fn cookies_of_other_applications_may_carry_utf8(backend: Backend) {
    let (app, upstream) = gateway(backend, &[]).await;
    let tokens = app.signed_up("alice").await;
    let request = format!(
        "GET /api/tickets HTTP/1.1\r\nHost: x\r\nCookie: name=Zo\u{eb}; tollgate_access={}\r\nConnection: close\r\n\r\n",
        tokens.access
    );
    let answer = app.raw(request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let received = upstream.last();
    assert_eq!(
        received.headers.get("cookie").unwrap().as_bytes(),
        "name=Zo\u{eb}".as_bytes()
    );
}

async fn detailed_health_reports_whether_the_upstream_answers(backend: Backend) {
    let (app, _upstream) = gateway(backend, &[]).await;
    let health = app
        .send(Method::GET, "/health/detailed", &[], None)
        .await
        .json();
    assert_eq!(
        health["upstream"],
        serde_json::json!({
            "configured": true,
            "ok": true,
            "routes": [{ "prefix": "/", "ok": true }],
        })
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let app = TestApp::spawn_with(backend, &["--upstream", &url]).await;
    let response = app.send(Method::GET, "/health/detailed", &[], None).await;
    assert_eq!(
        response.status,
        StatusCode::OK,
        "the upstream does not make the gateway unready"
    );
    assert_eq!(response.json()["upstream"]["ok"], false);
    assert_eq!(response.json()["status"], "degraded");
}

async fn public_paths_match_whole_segments_after_normalisation(backend: Backend) {
    let (app, upstream) = gateway(backend, &["--public-paths", "/public,/docs/"]).await;
    let get = |path: &'static str| app.send(Method::GET, path, &[], None);

    let response = get("/public").await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(upstream.last().path, "/public");
    let response = get("/public/a/./b").await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        upstream.last().path,
        "/public/a/b",
        "the upstream gets the authorised path"
    );
    let response = get("/docs/guide").await;
    assert_eq!(response.status, StatusCode::OK);
    let hits = upstream.hits();

    for protected in [
        "/publicity",
        "/PUBLIC/x",
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/.%2E/admin",
        "/docs/../admin",
    ] {
        let response = get(protected).await;
        assert_eq!(
            response.status,
            StatusCode::UNAUTHORIZED,
            "{protected}: {}",
            response.text()
        );
    }
    for refused in [
        "/public/..%2fadmin",
        "/public%2F..%2Fadmin",
        "/public/..%5cadmin",
        "/public/..;/admin",
        "/public/%c0%ae%c0%ae/admin",
    ] {
        let response = get(refused).await;
        response.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    assert_eq!(upstream.hits(), hits, "no trick reached the upstream");
}

async fn raw_path_tricks_never_reach_a_protected_route(backend: Backend) {
    let (app, upstream) = gateway(backend, &["--public-paths", "/public"]).await;
    for target in [
        "//public/../admin",
        "/public//../admin",
        "/public/%2e%2e//admin",
        "/public\\..\\admin",
        "/public/..\\admin",
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let answer = app.raw(request.as_bytes()).await;
        let status = answer.split(' ').nth(1).unwrap_or("");
        assert!(status == "400" || status == "401", "{target}: {answer}");
    }
    assert_eq!(upstream.hits(), 0);
    let tokens = app.signed_up("alice").await;
    let bearer = format!("Bearer {}", tokens.access);
    let response = app
        .send(
            Method::GET,
            "/public/../admin/%7Euser",
            &[("authorization", &bearer)],
            None,
        )
        .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(upstream.last().path, "/admin/~user");
}

async fn an_unreachable_upstream_is_a_bad_gateway(backend: Backend) {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let app = TestApp::spawn_with(backend, &["--upstream", &url]).await;
    let tokens = app.signed_up("alice").await;
    app.get_with_token("/api/tickets", &tokens.access)
        .await
        .assert_error(StatusCode::BAD_GATEWAY, "bad_gateway");
}

async fn a_slow_upstream_is_a_gateway_timeout(backend: Backend) {
    let (app, _upstream) = gateway(backend, &["--upstream-timeout", "1s"]).await;
    let tokens = app.signed_up("alice").await;
    let started = std::time::Instant::now();
    app.get_with_token("/slow/5000", &tokens.access)
        .await
        .assert_error(StatusCode::GATEWAY_TIMEOUT, "gateway_timeout");
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
}

async fn bodies_over_the_limit_are_refused(backend: Backend) {
    let (app, upstream) = gateway(backend, &["--max-body", "1KiB"]).await;
    let tokens = app.signed_up("alice").await;
    let bearer = format!("Bearer {}", tokens.access);
    app.send(
        Method::POST,
        "/api/tickets",
        &[("authorization", &bearer)],
        Some(Body::Raw("x".repeat(2048))),
    )
    .await
    .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_eq!(
        upstream.hits(),
        0,
        "a declared oversize body never reaches the upstream"
    );

    let chunk = "y".repeat(700);
    let chunked = format!(
        "POST /api/tickets HTTP/1.1\r\nHost: x\r\nAuthorization: {bearer}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n0\r\n\r\n",
        len = chunk.len()
    );
    let answer = app.raw(chunked.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");

    let response = app
        .send(
            Method::POST,
            "/api/tickets",
            &[("authorization", &bearer)],
            Some(Body::Raw("z".repeat(1024))),
        )
        .await;
    assert_eq!(
        response.status,
        StatusCode::OK,
        "a body at the limit passes"
    );
}

async fn no_upstream_answers_upstream_not_configured(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tokens = app.signed_up("alice").await;
    app.get_with_token("/api/tickets", &tokens.access)
        .await
        .assert_error(StatusCode::BAD_GATEWAY, "upstream_not_configured");
}

async fn ambiguous_framing_never_reaches_the_upstream(backend: Backend) {
    let (app, upstream) = gateway(backend, &[]).await;
    let tokens = app.signed_up("alice").await;
    let smuggle = format!(
        "POST /api/tickets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n",
        tokens.access
    );
    // hyper frames it by Transfer-Encoding alone (RFC 9112 6.3), drops the
    // Content-Length and closes the connection after answering: the request
    // hidden behind the chunked body is never read, let alone forwarded.
    let answer = app.raw(smuggle.as_bytes()).await;
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    let received = upstream.last();
    assert_eq!(
        (received.path.as_str(), received.body_len),
        ("/api/tickets", 0)
    );
    assert!(
        received
            .header("content-length")
            .is_none_or(|length| length == "0")
    );
    let hits = upstream.hits();
    assert_eq!(hits, 1);

    let bad_chunk = format!(
        "POST /api/tickets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        tokens.access
    );
    let answer = app.raw(bad_chunk.as_bytes()).await;
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");

    let huge_header = format!(
        "GET /api/tickets HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let answer = app.raw(huge_header.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    assert_eq!(
        upstream.hits(),
        hits,
        "malformed framing and oversized heads never reach it"
    );
}

async fn a_large_response_streams_through_intact(backend: Backend) {
    let (app, _upstream) = gateway(backend, &[]).await;
    let tokens = app.signed_up("alice").await;
    let size = 32 * 1024 * 1024;
    let response = app
        .get_with_token(&format!("/bytes/{size}"), &tokens.access)
        .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body.len(), size);
    let expected: Vec<u8> = (0..size).map(pattern_byte).collect();
    assert_eq!(Sha256::digest(&response.body), Sha256::digest(&expected));
}

async fn preflight_answers_allowed_origins_only(backend: Backend) {
    let (app, upstream) = gateway(
        backend,
        &[
            "--cors-origins",
            "https://app.example.com,http://localhost:3000",
        ],
    )
    .await;
    let preflight = |origin: &'static str| {
        let app = &app;
        async move {
            let headers = [
                ("origin", origin),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type, x-trace"),
            ];
            app.send(Method::OPTIONS, "/api/tickets", &headers, None)
                .await
        }
    };
    let allowed = preflight("https://app.example.com").await;
    assert_eq!(allowed.status, StatusCode::NO_CONTENT);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        allowed.header("access-control-allow-credentials"),
        Some("true")
    );
    let methods = allowed.header("access-control-allow-methods").unwrap();
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{methods}"
    );
    let headers = allowed
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    for needed in ["authorization", "content-type", "x-request-id", "x-trace"] {
        assert!(headers.contains(needed), "{headers}");
    }
    assert!(allowed.header("vary").unwrap().contains("Origin"));

    let other = preflight("https://evil.example").await;
    assert_eq!(other.status, StatusCode::NO_CONTENT);
    for header in [
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-allow-methods",
    ] {
        assert!(
            other.header(header).is_none(),
            "{header} sent to another origin"
        );
    }
    assert_eq!(upstream.hits(), 0, "preflights are the gateway's");

    let tokens = app.signed_up("alice").await;
    let bearer = format!("Bearer {}", tokens.access);
    let actual = app
        .send(
            Method::GET,
            "/api/tickets",
            &[
                ("authorization", &bearer),
                ("origin", "http://localhost:3000"),
            ],
            None,
        )
        .await;
    assert_eq!(
        actual.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    assert_eq!(
        actual.header("access-control-allow-credentials"),
        Some("true")
    );
    assert!(
        actual
            .headers
            .get_all("vary")
            .iter()
            .any(|v| v.to_str().unwrap().contains("Origin"))
    );
    let foreign = app
        .send(
            Method::GET,
            "/api/auth/me",
            &[
                ("authorization", &bearer),
                ("origin", "https://evil.example"),
            ],
            None,
        )
        .await;
    assert!(foreign.header("access-control-allow-origin").is_none());
    assert!(foreign.header("access-control-allow-credentials").is_none());
}

async fn cookie_requests_that_change_state_need_an_allowed_origin(backend: Backend) {
    let (app, upstream) = gateway(backend, &["--cors-origins", "https://app.example.com"]).await;
    let tokens = app.signed_up("alice").await;
    let cookie = format!("tollgate_access={}", tokens.access);
    let post = |extra: Vec<(&'static str, &'static str)>| {
        let mut headers: Vec<(&str, &str)> = vec![("cookie", cookie.as_str())];
        headers.extend(extra);
        let app = &app;
        async move {
            app.send(
                Method::POST,
                "/api/tickets",
                &headers,
                Some(Body::Raw("{}".into())),
            )
            .await
        }
    };
    post(vec![("origin", "https://evil.example")])
        .await
        .assert_error(StatusCode::FORBIDDEN, "csrf_rejected");
    post(vec![("referer", "https://evil.example/page")])
        .await
        .assert_error(StatusCode::FORBIDDEN, "csrf_rejected");
    post(vec![])
        .await
        .assert_error(StatusCode::FORBIDDEN, "csrf_rejected");
    assert_eq!(upstream.hits(), 0);

    assert_eq!(
        post(vec![("origin", "https://app.example.com")])
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        post(vec![("referer", "https://app.example.com/tickets")])
            .await
            .status,
        StatusCode::OK
    );
    let bearer = format!("Bearer {}", tokens.access);
    let response = app
        .send(
            Method::POST,
            "/api/tickets",
            &[("authorization", &bearer)],
            Some(Body::Raw("{}".into())),
        )
        .await;
    assert_eq!(
        response.status,
        StatusCode::OK,
        "bearer requests are exempt"
    );
    assert_eq!(upstream.hits(), 3);

    // The gateway's own routes too.
    let refresh_cookie = format!("tollgate_refresh={}", tokens.refresh);
    app.send(
        Method::POST,
        "/api/auth/refresh",
        &[
            ("cookie", &refresh_cookie),
            ("origin", "https://evil.example"),
        ],
        None,
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "csrf_rejected");
    app.send(
        Method::POST,
        "/api/auth/logout",
        &[("cookie", &cookie)],
        None,
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "csrf_rejected");
    let refreshed = app
        .send(
            Method::POST,
            "/api/auth/refresh",
            &[
                ("cookie", &refresh_cookie),
                ("origin", "https://app.example.com"),
            ],
            None,
        )
        .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text());
}

/// The status code of a raw HTTP answer.
fn status_of(answer: &str) -> &str {
    answer.split(' ').nth(1).unwrap_or("")
}

async fn the_gateways_cookies_never_pass_beside_bytes_that_are_not_utf8(backend: Backend) {
    let (app, upstream) = gateway(backend, &["--public-paths", "/public"]).await;
    let tokens = app.signed_up("alice").await;
    let bearer = format!("Authorization: Bearer {}\r\n", tokens.access);
    for (path, authorization) in [("/api/tickets", bearer.as_str()), ("/public/page", "")] {
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{authorization}").into_bytes();
        request.extend_from_slice(b"Cookie: theme=\xff\xfe; tollgate_access=");
        request.extend_from_slice(tokens.access.as_bytes());
        request.extend_from_slice(b"; tollgate_refresh=");
        request.extend_from_slice(tokens.refresh.as_bytes());
        request.extend_from_slice(b";lang=en\r\nConnection: close\r\n\r\n");
        let answer = app.raw(&request).await;
        assert_eq!(status_of(&answer), "200", "{path}: {answer}");
        let received = upstream.last();
        assert_eq!(received.path, path);
        assert_eq!(
            received.headers.get("cookie").unwrap().as_bytes(),
            b"theme=\xff\xfe; lang=en",
            "{path}: only the other cookies pass, byte for byte"
        );
    }
}

async fn the_gateways_cookies_never_pass_behind_whitespace_that_is_not_ascii(backend: Backend) {
    let (app, upstream) = gateway(backend, &["--public-paths", "/public"]).await;
    let tokens = app.signed_up("alice").await;
    // Not the gateway's cookie (RFC 6265 trims spaces and tabs only), so no
    // credential...
    let disguised = format!("theme=dark; \u{a0}tollgate_access={}", tokens.access);
    app.send(Method::GET, "/api/tickets", &[("cookie", &disguised)], None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(upstream.hits(), 0);
    // ...but an upstream that trims more would read one: it never gets there.
    let disguised = format!(
        "theme=dark; \u{a0}tollgate_access={};\u{2003}tollgate_refresh={}",
        tokens.access, tokens.refresh
    );
    let response = app
        .send(Method::GET, "/public/page", &[("cookie", &disguised)], None)
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(upstream.last().header("cookie"), Some("theme=dark"));
}

async fn x_forwarded_host_is_the_host_the_client_addressed(backend: Backend) {
    let (app, upstream) = gateway(backend, &[]).await;
    let tokens = app.signed_up("alice").await;
    let bearer = format!("Bearer {}", tokens.access);

    app.send(
        Method::GET,
        "/api/tickets",
        &[("authorization", &bearer), ("host", "tickets.example.com")],
        None,
    )
    .await;
    assert_eq!(
        upstream.last().header("x-forwarded-host"),
        Some("tickets.example.com")
    );

    // HTTP/2 has no Host but `:authority`.
    let request = http::Request::get(app.url("/api/tickets"))
        .header("authorization", &bearer)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = crate::helpers::h2_client().request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        upstream.last().header("x-forwarded-host"),
        Some(app.addr.to_string().as_str())
    );

    // HTTP/1.0 may leave Host out: then there is nothing to forward, and
    // certainly not the upstream's own address.
    let request = format!("GET /api/tickets HTTP/1.0\r\nAuthorization: {bearer}\r\n\r\n");
    let answer = app.raw(request.as_bytes()).await;
    assert_eq!(status_of(&answer), "200", "{answer}");
    let received = upstream.last();
    assert_eq!(received.header("x-forwarded-host"), None);
}

async fn url_and_method_overrides_never_reach_the_upstream(backend: Backend) {
    let (app, upstream) = gateway(backend, &["--public-paths", "/public"]).await;
    let tokens = app.signed_up("alice").await;
    let bearer = format!("Bearer {}", tokens.access);
    let overrides = [
        ("x-original-url", "/admin/users"),
        ("x-rewrite-url", "/admin/users"),
        ("x-http-method-override", "DELETE"),
        ("X-HTTP-Method", "DELETE"),
        ("x-method-override", "DELETE"),
    ];
    for (path, authorization) in [("/public/page", None), ("/api/tickets", Some(&bearer))] {
        let mut headers: Vec<(&str, &str)> = overrides.to_vec();
        headers.extend(authorization.map(|bearer| ("authorization", bearer.as_str())));
        let response = app.send(Method::GET, path, &headers, None).await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{path}: {}",
            response.text()
        );
        let received = upstream.last();
        assert_eq!(
            (received.method.as_str(), received.path.as_str()),
            ("GET", path)
        );
        for (name, _) in overrides {
            assert!(
                received.header(name).is_none(),
                "{name} reached the upstream on {path}"
            );
        }
    }
}

async fn requests_without_exactly_one_host_are_invalid(backend: Backend) {
    let (app, upstream) = gateway(backend, &[]).await;
    let tokens = app.signed_up("alice").await;
    let auth = format!(
        "Authorization: Bearer {}\r\nConnection: close\r\n",
        tokens.access
    );
    for request in [
        format!("GET /api/tickets HTTP/1.1\r\n{auth}\r\n"),
        format!("GET http://x/api/tickets HTTP/1.1\r\n{auth}\r\n"),
        format!("GET /api/tickets HTTP/1.1\r\nHost: a\r\nHost: b\r\n{auth}\r\n"),
        format!("GET /api/tickets HTTP/1.0\r\nHost: a\r\nHost: a\r\n{auth}\r\n"),
        "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n".to_string(),
    ] {
        let answer = app.raw(request.as_bytes()).await;
        assert_eq!(status_of(&answer), "400", "{request:?}: {answer}");
        assert!(answer.contains("\"invalid_request\""), "{answer}");
    }
    assert_eq!(upstream.hits(), 0);
    for fine in [
        format!("GET /api/tickets HTTP/1.1\r\nHost: a\r\n{auth}\r\n"),
        format!("GET /api/tickets HTTP/1.0\r\n{auth}\r\n"),
    ] {
        let answer = app.raw(fine.as_bytes()).await;
        assert_eq!(status_of(&answer), "200", "{fine:?}: {answer}");
    }
}

async fn x_forwarded_for_is_appended_to_only_for_a_trusted_proxy(backend: Backend) {
    let upstream = EchoUpstream::start().await;
    let forwarding = [
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-for", "198.51.100.1"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "auth.example.com"),
    ];
    for (trusted, for_, proto, host) in [
        (false, "127.0.0.1", "http", "the-gateway"),
        (
            true,
            "203.0.113.7, 198.51.100.1, 127.0.0.1",
            "https",
            "auth.example.com",
        ),
    ] {
        let url = upstream.url();
        let mut flags = vec!["--upstream", url.as_str()];
        if trusted {
            flags.extend(["--trusted-proxies", "127.0.0.1/32"]);
        }
        let app = TestApp::spawn_with(backend, &flags).await;
        let tokens = app.signed_up("alice").await;
        let bearer = format!("Bearer {}", tokens.access);
        let mut headers = vec![("authorization", bearer.as_str()), ("host", "the-gateway")];
        headers.extend(forwarding);
        let response = app.send(Method::GET, "/api/tickets", &headers, None).await;
        assert_eq!(response.status, StatusCode::OK);
        let received = upstream.last();
        assert_eq!(
            received
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .collect::<Vec<_>>(),
            [for_],
            "trusted: {trusted}"
        );
        assert_eq!(received.header("x-forwarded-proto"), Some(proto));
        assert_eq!(received.header("x-forwarded-host"), Some(host));
    }
}

async fn a_bearer_of_two_words_is_an_invalid_request_everywhere(backend: Backend) {
    let (app, upstream) = gateway(backend, &["--public-paths", "/public"]).await;
    let tokens = app.signed_up("alice").await;
    let two_words = format!("Bearer {} extra", tokens.access);
    for (method, path) in [
        (Method::GET, "/api/auth/me"),
        (Method::GET, "/api/tickets"),
        (Method::GET, "/public/page"),
        (Method::POST, "/api/auth/logout-all"),
    ] {
        app.send(method, path, &[("authorization", &two_words)], None)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    // Not even beside a refresh cookie that would do on its own.
    let cookie = format!("tollgate_refresh={}", tokens.refresh);
    app.send(
        Method::POST,
        "/api/auth/logout",
        &[("authorization", &two_words), ("cookie", &cookie)],
        None,
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(upstream.hits(), 0);
    assert_eq!(app.me(&tokens.access).await.status, StatusCode::OK);
}

on_both_backends!(
    the_gateways_cookies_never_pass_beside_bytes_that_are_not_utf8,
    the_gateways_cookies_never_pass_behind_whitespace_that_is_not_ascii,
    x_forwarded_host_is_the_host_the_client_addressed,
    url_and_method_overrides_never_reach_the_upstream,
    requests_without_exactly_one_host_are_invalid,
    x_forwarded_for_is_appended_to_only_for_a_trusted_proxy,
    a_bearer_of_two_words_is_an_invalid_request_everywhere,
    unauthenticated_requests_never_reach_the_upstream,
    the_upstream_receives_the_identity_and_never_a_spoof,
    a_cookie_becomes_a_bearer_token_and_only_foreign_cookies_pass,
    methods_paths_queries_and_bodies_pass_through_unchanged,
    upstream_statuses_and_cookies_come_back_unchanged,
    hop_by_hop_headers_are_dropped_and_forwarding_headers_set,
    unverified_bearer_tokens_never_reach_the_upstream_of_a_public_path,
    the_upstreams_cors_headers_never_reach_the_browser,
    cookies_of_other_applications_may_carry_utf8,
    detailed_health_reports_whether_the_upstream_answers,
    public_paths_match_whole_segments_after_normalisation,
    raw_path_tricks_never_reach_a_protected_route,
    an_unreachable_upstream_is_a_bad_gateway,
    a_slow_upstream_is_a_gateway_timeout,
    bodies_over_the_limit_are_refused,
    no_upstream_answers_upstream_not_configured,
    ambiguous_framing_never_reaches_the_upstream,
    a_large_response_streams_through_intact,
    preflight_answers_allowed_origins_only,
    cookie_requests_that_change_state_need_an_allowed_origin,
);
