//! Restarts never log anyone out: a new process on the same database and
//! keys honours every token the old one issued, and every logout.

use http::StatusCode;

use crate::helpers::{Backend, PASSWORD, TestApp, Tokens};
use crate::on_both_backends;

async fn tokens_issued_before_a_restart_work_after_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tokens = app.signed_up("alice").await;
    let app = app.stop().await.spawn(&[]).await;

    let me = app.me(&tokens.access).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text());
    assert_eq!(me.json()["username"], "alice");
    let refreshed = app.refresh(&tokens.refresh).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text());
    assert_eq!(Tokens::from(&refreshed).session_id(), tokens.session_id());
}

async fn sessions_ended_before_a_restart_stay_ended(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tokens = app.signed_up("alice").await;
    let logged_out = Tokens::from(&app.login("alice", PASSWORD).await);
    let response = app.logout(&logged_out.access).await;
    assert_eq!(
        response.status,
        StatusCode::NO_CONTENT,
        "{}",
        response.text()
    );
    let app = app.stop().await.spawn(&[]).await;

    app.me(&logged_out.access).await.assert_rejected("revoked");
    app.refresh(&logged_out.refresh)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    assert_eq!(app.me(&tokens.access).await.status, StatusCode::OK);
}

on_both_backends!(
    tokens_issued_before_a_restart_work_after_it,
    sessions_ended_before_a_restart_stay_ended,
);
