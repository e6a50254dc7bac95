//! Email addresses on accounts: recorded at registration, unique without
//! regard to case, validated, and shown in `/api/auth/me`.

use http::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, PASSWORD, TestApp, Tokens};
use crate::on_both_backends;

async fn registration_records_an_email_shown_in_me(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .register_with_email("alice", PASSWORD, "Alice@Example.com")
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text());
    let tokens = Tokens::from(&response);
    let me = app.me(&tokens.access).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text());
    assert_eq!(me.json()["email"], "Alice@Example.com");

    // Without one, `email` is null.
    let bob = app.signed_up("bob").await;
    assert_eq!(app.me(&bob.access).await.json()["email"], json!(null));
}

async fn emails_are_unique_without_regard_to_case(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first = app
        .register_with_email("alice", PASSWORD, "alice@example.com")
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    app.register_with_email("bob", PASSWORD, "ALICE@example.COM")
        .await
        .assert_error(StatusCode::CONFLICT, "email_taken");
    // The refused registration left no account behind.
    app.signed_up("bob").await;
    // A taken username is still a taken username, whatever the email.
    app.register_with_email("Alice", PASSWORD, "other@example.com")
        .await
        .assert_error(StatusCode::CONFLICT, "username_taken");
}

async fn malformed_emails_are_invalid_requests(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for email in [
        json!(""),
        json!("alice"),
        json!("alice@"),
        json!("@example.com"),
        json!("a b@example.com"),
        json!(5),
        json!("x".repeat(250) + "@example.com"),
    ] {
        let response = app
            .post_json(
                "/api/auth/register",
                json!({ "username": "alice", "password": PASSWORD, "email": email }),
            )
            .await;
        response.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
        let message = response.json()["message"].as_str().unwrap().to_string();
        assert!(message.contains("email"), "{email}: {message}");
    }
    // `null` is no email at all.
    let response = app
        .post_json(
            "/api/auth/register",
            json!({ "username": "alice", "password": PASSWORD, "email": null }),
        )
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text());
}

on_both_backends!(
    registration_records_an_email_shown_in_me,
    emails_are_unique_without_regard_to_case,
    malformed_emails_are_invalid_requests,
);
