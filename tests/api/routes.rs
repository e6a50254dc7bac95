//! What every route shares: request ids, and JSON answers for unknown routes
//! and wrong methods under the paths the gateway owns.

use std::collections::HashSet;

use http::{Method, StatusCode};

use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;

async fn every_response_carries_a_request_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut seen = HashSet::new();
    for path in ["/health", "/api/auth/me", "/api/auth/nope"] {
        let response = app.get(path).await;
        let id = response.header("x-request-id").expect("an X-Request-Id");
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{path}: {id}");
        seen.insert(id.to_string());
    }
    assert_eq!(
        seen.len(),
        3,
        "every request has an id of its own: {seen:?}"
    );
}

async fn a_sane_client_request_id_is_echoed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = "web-7f3a_b9.c2:e@1";
    for path in ["/health", "/api/auth/me"] {
        let response = app
            .send(Method::GET, path, &[("x-request-id", id)], None)
            .await;
        assert_eq!(response.header("x-request-id"), Some(id), "{path}");
    }
}

async fn an_insane_client_request_id_is_replaced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let too_long = "a".repeat(129);
    for insane in ["two words", "quote\"d", "new\tline", too_long.as_str()] {
        let response = app
            .send(Method::GET, "/health", &[("x-request-id", insane)], None)
            .await;
        let id = response.header("x-request-id").expect("an X-Request-Id");
        assert_ne!(id, insane);
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    }
}

async fn unknown_owned_routes_are_json_404s(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (method, path) in [
        (Method::GET, "/api/auth/nope"),
        (Method::POST, "/api/auth/nope"),
        (Method::GET, "/api/auth"),
        (Method::DELETE, "/api/auth/sessions/"),
        (Method::DELETE, "/api/auth/sessions/a/b"),
        (Method::GET, "/.well-known/nope"),
        (Method::GET, "/health/nope"),
        (Method::GET, "/metrics/nope"),
        (Method::GET, "/api/debug/session"),
    ] {
        let response = app.send(method.clone(), path, &[], None).await;
        assert_eq!(
            response.header("content-type"),
            Some("application/json"),
            "{method} {path}"
        );
        response.assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    // Owned prefixes cover whole segments: these belong to the upstream.
    for path in [
        "/healthcare",
        "/metricsx",
        "/api/authority",
        "/.well-knownx",
    ] {
        let response = app.send(Method::GET, path, &[], None).await;
        response.assert_error(StatusCode::BAD_GATEWAY, "upstream_not_configured");
    }
}

async fn wrong_methods_are_405s_naming_the_allowed_ones(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (method, path, allowed) in [
        (Method::GET, "/api/auth/login", "POST"),
        (Method::PUT, "/api/auth/register", "POST"),
        (Method::GET, "/api/auth/refresh", "POST"),
        (Method::GET, "/api/auth/logout", "POST"),
        (Method::GET, "/api/auth/logout-all", "POST"),
        (Method::GET, "/api/auth/password", "POST"),
        (Method::POST, "/api/auth/me", "GET, HEAD"),
        (Method::DELETE, "/api/auth/sessions", "GET, HEAD"),
        (Method::GET, "/api/auth/sessions/some-id", "DELETE"),
        (Method::POST, "/.well-known/jwks.json", "GET, HEAD"),
        (
            Method::POST,
            "/.well-known/openid-configuration",
            "GET, HEAD",
        ),
        (Method::POST, "/health", "GET, HEAD"),
        (Method::PATCH, "/health/detailed", "GET, HEAD"),
    ] {
        let response = app.send(method.clone(), path, &[], None).await;
        response.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        assert_eq!(response.header("allow"), Some(allowed), "{method} {path}");
    }
}

on_both_backends!(
    every_response_carries_a_request_id,
    a_sane_client_request_id_is_echoed,
    an_insane_client_request_id_is_replaced,
    unknown_owned_routes_are_json_404s,
    wrong_methods_are_405s_naming_the_allowed_ones,
);
