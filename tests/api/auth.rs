//! Registration and login.

use http::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, PASSWORD, TestApp, Tokens, claims_of};
use crate::on_both_backends;

async fn registration_returns_a_token_body(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app.register("alice", PASSWORD).await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text());
    let body = response.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["refresh_expires_in"], 31 * 86_400);
    assert_eq!(body["user"]["username"], "alice");
    assert_eq!(body["user"]["roles"], json!([]));
    let tokens = Tokens::from(&response);
    assert_eq!(claims_of(&tokens.access)["sub"], tokens.user_id.as_str());
    let me = app.me(&tokens.access).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["username"], "alice");
}

async fn usernames_are_unique_without_regard_to_case(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_up("Alice").await;
    app.register("aLICE", PASSWORD)
        .await
        .assert_error(StatusCode::CONFLICT, "username_taken");
    let login = app.login("ALICE", PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());
    assert_eq!(login.json()["user"]["username"], "Alice");
}

on_both_backends!(
    registration_returns_a_token_body,
    usernames_are_unique_without_regard_to_case
);
