//! Refresh tokens: rotation, the cookie form, the reuse grace, reuse
//! detection, concurrent refreshes, and the end of a session.

use std::time::Duration;

use futures_util::future::join_all;
use http::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, Body, PASSWORD, TestApp, Tokens};
use crate::on_both_backends;

async fn refreshing_rotates_the_token_within_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first = app.signed_up("alice").await;
    let response = app.refresh(&first.refresh).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let body = response.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["user"]["username"], "alice");
    let second = Tokens::from(&response);
    assert_ne!(second.refresh, first.refresh);
    assert_ne!(second.access, first.access);
    assert_eq!(second.session_id(), first.session_id());
    assert!(
        response
            .set_cookie("tollgate_access")
            .unwrap()
            .starts_with(&format!("tollgate_access={};", second.access))
    );
    assert!(
        response
            .set_cookie("tollgate_refresh")
            .unwrap()
            .starts_with(&format!("tollgate_refresh={};", second.refresh))
    );
    assert_eq!(app.me(&second.access).await.status, StatusCode::OK);
    let third = app.refresh(&second.refresh).await;
    assert_eq!(third.status, StatusCode::OK, "{}", third.text());
}

async fn refresh_reads_the_refresh_cookie_when_the_body_names_no_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first = app.signed_up("alice").await;
    let empty_body = app.refresh_by_cookie(&first.refresh, None).await;
    assert_eq!(empty_body.status, StatusCode::OK, "{}", empty_body.text());
    let second = Tokens::from(&empty_body);
    assert_eq!(second.session_id(), first.session_id());
    let empty_object = app
        .refresh_by_cookie(&second.refresh, Some(Body::Json(json!({}))))
        .await;
    assert_eq!(
        empty_object.status,
        StatusCode::OK,
        "{}",
        empty_object.text()
    );
    assert_eq!(Tokens::from(&empty_object).session_id(), first.session_id());
}

async fn refreshing_without_a_token_is_unauthorized(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.post_json("/api/auth/refresh", json!({}))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

async fn unknown_refresh_tokens_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tokens = app.signed_up("alice").await;
    let well_formed_but_unknown = "A".repeat(43);
    for token in [
        well_formed_but_unknown.as_str(),
        "short",
        tokens.access.as_str(),
    ] {
        app.refresh(token)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    }
    let wrong_type = app
        .post_json("/api/auth/refresh", json!({ "refresh_token": 5 }))
        .await;
    wrong_type.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert!(
        wrong_type.json()["message"]
            .as_str()
            .unwrap()
            .contains("refresh_token")
    );
}

async fn a_spent_token_within_the_grace_gets_the_same_successor(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first = app.signed_up("alice").await;
    let second = Tokens::from(&app.refresh(&first.refresh).await);
    // A second tab (or a retry after a lost answer) presents the same token
    // a moment later: the same successor, a fresh access token.
    let again = app.refresh(&first.refresh).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
    let again = Tokens::from(&again);
    assert_eq!(again.session_id(), first.session_id());
    assert_eq!(again.refresh, second.refresh, "a session never forks");
    assert_eq!(app.me(&again.access).await.status, StatusCode::OK);
    let by_cookie = app.refresh_by_cookie(&first.refresh, None).await;
    assert_eq!(by_cookie.status, StatusCode::OK, "{}", by_cookie.text());
    assert!(
        by_cookie
            .set_cookie("tollgate_refresh")
            .unwrap()
            .starts_with(&format!("tollgate_refresh={};", second.refresh))
    );
    // The one successor goes on rotating.
    let third = app.refresh(&second.refresh).await;
    assert_eq!(third.status, StatusCode::OK, "{}", third.text());
}

async fn a_refresh_token_reused_after_the_grace_revokes_the_session(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--refresh-reuse-grace", "1s"]).await;
    let first = app.signed_up("alice").await;
    let elsewhere = Tokens::from(&app.login("alice", PASSWORD).await);
    let second = Tokens::from(&app.refresh(&first.refresh).await);
    let third = Tokens::from(&app.refresh(&second.refresh).await);
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    app.refresh(&first.refresh)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "refresh_token_reused");
    for tokens in [&first, &second, &third] {
        app.me(&tokens.access).await.assert_rejected("revoked");
    }
    app.refresh(&third.refresh)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    // The user's other sessions are not the thief's.
    assert_eq!(app.me(&elsewhere.access).await.status, StatusCode::OK);
    let other = app.refresh(&elsewhere.refresh).await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.text());
}

async fn simultaneous_refreshes_share_one_session_that_one_logout_ends(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first = app.signed_up("alice").await;
    let responses = join_all((0..16).map(|_| app.refresh(&first.refresh))).await;
    let branches: Vec<Tokens> = responses
        .iter()
        .map(|response| {
            assert_eq!(response.status, StatusCode::OK, "{}", response.text());
            Tokens::from(response)
        })
        .collect();
    for branch in &branches {
        assert_eq!(branch.session_id(), first.session_id());
        assert_eq!(
            branch.refresh, branches[0].refresh,
            "one successor: the session never has two live refresh tokens"
        );
    }

    let response = app.logout(&branches[7].access).await;
    assert_eq!(
        response.status,
        StatusCode::NO_CONTENT,
        "{}",
        response.text()
    );
    for branch in &branches {
        app.me(&branch.access).await.assert_rejected("revoked");
        app.refresh(&branch.refresh)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    }
    app.me(&first.access).await.assert_rejected("revoked");
}

async fn a_session_ends_at_the_refresh_ttl(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--access-ttl", "1s", "--refresh-ttl", "1s"]).await;
    let first = app.signed_up("alice").await;
    let second = app.refresh(&first.refresh).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text());
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    app.refresh(&Tokens::from(&second).refresh)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
}

async fn an_idle_session_cannot_be_refreshed(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--session-idle-timeout", "2s"]).await;
    let first = app.signed_up("alice").await;
    // Used within the timeout: each refresh starts it again.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let second = app.refresh(&first.refresh).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text());
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let third = app.refresh(&Tokens::from(&second).refresh).await;
    assert_eq!(third.status, StatusCode::OK, "{}", third.text());
    // Then left alone for longer than the timeout.
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let idle = app.refresh(&Tokens::from(&third).refresh).await;
    idle.assert_error(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    assert_eq!(idle.json()["reason"], "idle");
}

async fn an_empty_refresh_token_is_an_invalid_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.post_json("/api/auth/refresh", json!({ "refresh_token": "" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
}

on_both_backends!(
    an_idle_session_cannot_be_refreshed,
    an_empty_refresh_token_is_an_invalid_request,
    refreshing_rotates_the_token_within_the_session,
    refresh_reads_the_refresh_cookie_when_the_body_names_no_token,
    refreshing_without_a_token_is_unauthorized,
    unknown_refresh_tokens_are_refused,
    a_spent_token_within_the_grace_gets_the_same_successor,
    a_refresh_token_reused_after_the_grace_revokes_the_session,
    simultaneous_refreshes_share_one_session_that_one_logout_ends,
    a_session_ends_at_the_refresh_ttl,
);
