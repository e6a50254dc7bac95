//! Ending sessions: logout, logout everywhere, the session list and deleting
//! one session, and password changes.

use std::collections::HashSet;

use http::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{Backend, Body, PASSWORD, TestApp, TestResponse, Tokens};
use crate::on_both_backends;

const NEW_PASSWORD: &str = "battery staple horse";

/// Asserts a session's tokens no longer work.
async fn assert_ended(app: &TestApp, tokens: &Tokens) {
    app.me(&tokens.access).await.assert_rejected("revoked");
    app.refresh(&tokens.refresh)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
}

/// Asserts a session's access token still works.
async fn assert_alive(app: &TestApp, tokens: &Tokens) {
    let me = app.me(&tokens.access).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text());
}

#[track_caller]
fn assert_cookies_cleared(response: &TestResponse) {
    for (name, path) in [("tollgate_access", "/"), ("tollgate_refresh", "/api/auth")] {
        let cookie = response.set_cookie(name).unwrap();
        assert!(cookie.starts_with(&format!("{name}=;")), "{cookie}");
        let attributes = response.cookie_attributes(name);
        assert!(attributes.contains(&"Max-Age=0".to_string()), "{cookie}");
        assert!(attributes.contains(&format!("Path={path}")), "{cookie}");
    }
}

/// Logs one of two sessions out with `logout`: it answers 204 and clears both
/// cookies, that session ends, the other lives on.
async fn check_logout_ends_only_that_session(
    backend: Backend,
    logout: impl AsyncFnOnce(&TestApp, &Tokens) -> TestResponse,
) {
    let app = TestApp::spawn(backend).await;
    let tokens = app.signed_up("alice").await;
    let elsewhere = Tokens::from(&app.login("alice", PASSWORD).await);
    let response = logout(&app, &tokens).await;
    assert_eq!(
        response.status,
        StatusCode::NO_CONTENT,
        "{}",
        response.text()
    );
    assert_cookies_cleared(&response);
    assert_ended(&app, &tokens).await;
    assert_alive(&app, &elsewhere).await;
}

async fn logout_ends_the_session_and_clears_both_cookies(backend: Backend) {
    check_logout_ends_only_that_session(backend, async |app, tokens| {
        app.logout(&tokens.access).await
    })
    .await;
}

async fn logout_by_refresh_token_ends_that_session(backend: Backend) {
    check_logout_ends_only_that_session(backend, async |app, tokens| {
        app.logout_by_refresh_token(&tokens.refresh).await
    })
    .await;
}

async fn logout_by_the_refresh_cookie_ends_that_session(backend: Backend) {
    check_logout_ends_only_that_session(backend, async |app, tokens| {
        app.logout_by_cookie(&tokens.refresh).await
    })
    .await;
}

async fn logout_needs_a_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.post_json("/api/auth/logout", json!({}))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    app.logout_by_refresh_token(&"A".repeat(43))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
}

async fn logout_all_ends_every_session_of_the_user(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let here = app.signed_up("alice").await;
    let elsewhere = Tokens::from(&app.login("alice", PASSWORD).await);
    let bob = app.signed_up("bob").await;
    let response = app.logout_all(&here.access).await;
    assert_eq!(
        response.status,
        StatusCode::NO_CONTENT,
        "{}",
        response.text()
    );
    assert_cookies_cleared(&response);
    assert_ended(&app, &here).await;
    assert_ended(&app, &elsewhere).await;
    assert_alive(&app, &bob).await;
    app.post_json("/api/auth/logout-all", json!({}))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

async fn the_session_list_shows_active_sessions_and_marks_the_current_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let registered = app.signed_up("alice").await;
    let login = app
        .send(
            Method::POST,
            "/api/auth/login",
            &[("user-agent", "tollgate-tests/1.0")],
            Some(Body::Json(
                json!({ "username": "alice", "password": PASSWORD }),
            )),
        )
        .await;
    let current = Tokens::from(&login);
    let logged_out = Tokens::from(&app.login("alice", PASSWORD).await);
    app.logout(&logged_out.access).await;
    app.signed_up("bob").await;

    let response = app.sessions(&current.access).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let sessions = response.json();
    let sessions = sessions.as_array().unwrap();
    let ids: HashSet<&str> = sessions
        .iter()
        .map(|session| session["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        HashSet::from([
            current.session_id().as_str(),
            registered.session_id().as_str()
        ])
    );
    for session in sessions {
        let is_current = session["id"] == current.session_id().as_str();
        assert_eq!(session["current"], is_current, "{session}");
        assert_eq!(session["ip"], "127.0.0.1", "{session}");
        for time in ["created_at", "last_used_at"] {
            let value = session[time].as_str().unwrap();
            assert!(humantime::parse_rfc3339(value).is_ok(), "{time}: {value}");
        }
        if is_current {
            assert_eq!(session["user_agent"], "tollgate-tests/1.0");
        }
    }
}

async fn a_user_can_end_one_of_their_sessions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let here = app.signed_up("alice").await;
    let elsewhere = Tokens::from(&app.login("alice", PASSWORD).await);
    let response = app
        .delete_session(&here.access, &elsewhere.session_id())
        .await;
    assert_eq!(
        response.status,
        StatusCode::NO_CONTENT,
        "{}",
        response.text()
    );
    assert_ended(&app, &elsewhere).await;
    assert_alive(&app, &here).await;
    let sessions = app.sessions(&here.access).await.json();
    assert_eq!(sessions.as_array().unwrap().len(), 1, "{sessions}");
    assert_eq!(sessions[0]["id"], here.session_id().as_str());
}

async fn deleting_a_session_that_is_not_yours_is_not_found(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.signed_up("alice").await;
    let bob = app.signed_up("bob").await;
    app.delete_session(&alice.access, &bob.session_id())
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    assert_alive(&app, &bob).await;
    app.delete_session(&alice.access, &uuid::Uuid::new_v4().to_string())
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    let path = format!("/api/auth/sessions/{}", bob.session_id());
    app.send(Method::DELETE, &path, &[], None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_alive(&app, &bob).await;
}

async fn changing_the_password_ends_the_other_sessions_but_not_this_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let here = app.signed_up("alice").await;
    let elsewhere = Tokens::from(&app.login("alice", PASSWORD).await);
    let response = app
        .change_password(&here.access, PASSWORD, NEW_PASSWORD)
        .await;
    assert_eq!(
        response.status,
        StatusCode::NO_CONTENT,
        "{}",
        response.text()
    );
    assert_ended(&app, &elsewhere).await;
    assert_alive(&app, &here).await;
    let refreshed = app.refresh(&here.refresh).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text());
    app.login("alice", PASSWORD)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    let login = app.login("alice", NEW_PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());
}

async fn a_wrong_current_password_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let here = app.signed_up("alice").await;
    let elsewhere = Tokens::from(&app.login("alice", PASSWORD).await);
    app.change_password(&here.access, "not the password", NEW_PASSWORD)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert_alive(&app, &elsewhere).await;
    let login = app.login("alice", PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());
}

async fn password_change_bodies_name_the_bad_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tokens = app.signed_up("alice").await;
    for (body, field) in [
        (json!({ "current_password": PASSWORD }), "new_password"),
        (json!({ "new_password": NEW_PASSWORD }), "current_password"),
        (
            json!({ "current_password": PASSWORD, "new_password": "short" }),
            "new_password",
        ),
        (
            json!({ "current_password": 12345678, "new_password": NEW_PASSWORD }),
            "current_password",
        ),
    ] {
        let response = app
            .post_with_token("/api/auth/password", &tokens.access, Some(body))
            .await;
        response.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
        let message = response.json()["message"].as_str().unwrap().to_string();
        assert!(message.contains(field), "{message}");
    }
    app.post_json(
        "/api/auth/password",
        json!({ "current_password": PASSWORD, "new_password": NEW_PASSWORD }),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

on_both_backends!(
    logout_ends_the_session_and_clears_both_cookies,
    logout_by_refresh_token_ends_that_session,
    logout_by_the_refresh_cookie_ends_that_session,
    logout_needs_a_token,
    logout_all_ends_every_session_of_the_user,
    the_session_list_shows_active_sessions_and_marks_the_current_one,
    a_user_can_end_one_of_their_sessions,
    deleting_a_session_that_is_not_yours_is_not_found,
    changing_the_password_ends_the_other_sessions_but_not_this_one,
    a_wrong_current_password_changes_nothing,
    password_change_bodies_name_the_bad_field,
);
