//! The audit trail: one row for each event of contract section 12 that a
//! request causes, with its actor, target, client address and request id,
//! never a secret; none for the proxied path; and a write that fails does
//! not fail what it records.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tollgate::audit::AuditView;
use tollgate::store::AuditQuery;

use crate::helpers::{Backend, Deployment, PASSWORD, TestApp, Tokens};
use crate::mailbox::WebhookReceiver;
use crate::on_both_backends;
use crate::upstream::EchoUpstream;

const NEW_PASSWORD: &str = "battery staple horse";

/// The whole trail, newest first, as the admin API and `tollgate audit
/// --json` show it.
pub async fn trail(app: &TestApp) -> Vec<Value> {
    app.app
        .store
        .audit_entries(AuditQuery {
            limit: 500,
            ..AuditQuery::default()
        })
        .await
        .expect("reading the audit trail")
        .into_iter()
        .map(|entry| serde_json::to_value(AuditView::from(entry)).unwrap())
        .collect()
}

/// The rows of `action`, oldest first, as `(outcome, actor, target)`.
fn rows_of(trail: &[Value], action: &str) -> Vec<(String, Value, Value)> {
    let mut rows: Vec<_> = trail
        .iter()
        .filter(|row| row["action"] == action)
        .map(|row| {
            (
                row["outcome"].as_str().unwrap().to_string(),
                row["actor"].clone(),
                row["target"].clone(),
            )
        })
        .collect();
    rows.reverse();
    rows
}

fn ok_by(user: &str) -> (String, Value, Value) {
    ("ok".into(), json!(user), json!(user))
}

async fn every_request_event_is_recorded_with_its_actor_and_target(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--refresh-reuse-grace", "1s"]).await;
    let alice = app.signed_up("alice").await;
    let a = alice.user_id.as_str();
    app.register("ALICE", PASSWORD)
        .await
        .assert_error(StatusCode::CONFLICT, "username_taken");

    let second = Tokens::from(&app.login("alice", PASSWORD).await);
    app.login("alice", "wrong password")
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    app.login("nobody", "wrong password")
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");

    // A refresh token reused after the grace.
    let rotated = Tokens::from(&app.refresh(&second.refresh).await);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    app.refresh(&second.refresh)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "refresh_token_reused");
    let _ = rotated;

    // Logout by access token and by refresh token, one session deleted,
    // logout everywhere.
    let third = Tokens::from(&app.login("alice", PASSWORD).await);
    let fourth = Tokens::from(&app.login("alice", PASSWORD).await);
    let fifth = Tokens::from(&app.login("alice", PASSWORD).await);
    assert_eq!(
        app.logout(&third.access).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.logout_by_refresh_token(&fourth.refresh).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.delete_session(&alice.access, &fifth.session_id())
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    app.change_password(&alice.access, "not the password", NEW_PASSWORD)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert_eq!(
        app.change_password(&alice.access, PASSWORD, NEW_PASSWORD)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.logout_all(&alice.access).await.status,
        StatusCode::NO_CONTENT
    );

    let trail = trail(&app).await;
    let anonymous_failure = ("failed".to_string(), Value::Null, Value::Null);
    assert_eq!(
        rows_of(&trail, "register"),
        [ok_by(a), anonymous_failure.clone()]
    );
    assert_eq!(
        rows_of(&trail, "login"),
        [
            ok_by(a),
            ("failed".into(), Value::Null, json!(a)),
            anonymous_failure,
            ok_by(a),
            ok_by(a),
            ok_by(a),
        ]
    );
    assert_eq!(
        rows_of(&trail, "refresh_reuse"),
        [("failed".into(), Value::Null, json!(a))]
    );
    assert_eq!(rows_of(&trail, "logout"), [ok_by(a), ok_by(a)]);
    assert_eq!(rows_of(&trail, "session_revoked"), [ok_by(a)]);
    assert_eq!(
        rows_of(&trail, "password_changed"),
        [("failed".into(), json!(a), json!(a)), ok_by(a)]
    );
    assert_eq!(rows_of(&trail, "logout_all"), [ok_by(a)]);

    // The gateway made its keys at start: rows of its own, with no actor.
    let generated = rows_of(&trail, "key_generated");
    assert_eq!(generated.len(), 2, "{generated:?}");
    assert!(generated.iter().all(|(_, actor, _)| actor.is_null()));

    // Each row of a request says where and which request it came from, to
    // the millisecond.
    for row in trail.iter().filter(|row| row["action"] != "key_generated") {
        assert_eq!(row["ip"], "127.0.0.1", "{row}");
        assert!(
            row["request_id"].as_str().is_some_and(|id| !id.is_empty()),
            "{row}"
        );
        assert!(row["time"].as_str().unwrap().ends_with('Z'), "{row}");
    }

    // Never a secret.
    let text = serde_json::to_string(&trail).unwrap();
    for secret in [
        PASSWORD,
        NEW_PASSWORD,
        "wrong password",
        &alice.access,
        &alice.refresh,
        &second.refresh,
        &rotated.refresh,
        &fourth.refresh,
    ] {
        assert!(!text.contains(secret), "a secret in the trail: {text}");
    }
}

async fn the_request_id_and_client_address_are_those_of_the_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_up("alice").await;
    let login = app
        .send(
            Method::POST,
            "/api/auth/login",
            &[("x-request-id", "audit-me-1")],
            Some(crate::helpers::Body::Json(
                json!({"username": "alice", "password": PASSWORD}),
            )),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK);
    let trail = trail(&app).await;
    assert_eq!(trail[0]["action"], "login");
    assert_eq!(trail[0]["request_id"], "audit-me-1");
}

async fn throttled_logins_are_recorded_against_the_account(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bob = app.signed_up("bob").await;
    for _ in 0..5 {
        app.login("bob", "wrong password")
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    app.login("bob", PASSWORD)
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let trail = trail(&app).await;
    let logins = rows_of(&trail, "login");
    assert_eq!(logins.len(), 6, "{logins:?}");
    assert_eq!(
        logins.last().unwrap(),
        &("throttled".to_string(), Value::Null, json!(bob.user_id))
    );
}

async fn password_resets_are_recorded_without_their_token(backend: Backend) {
    let webhook = WebhookReceiver::failing_first(0).await;
    let app = TestApp::spawn_with(
        backend,
        &[
            "--public-url",
            "https://auth.example.com",
            "--mail-webhook",
            &webhook.url(),
        ],
    )
    .await;
    let registered = app
        .register_with_email("alice", PASSWORD, "alice@example.com")
        .await;
    let alice = Tokens::from(&registered);
    let reset = |body: Value| app.post_json("/api/auth/password-reset", body);
    assert_eq!(
        reset(json!({"username": "alice"})).await.status,
        StatusCode::ACCEPTED
    );
    let token = webhook.mailbox.next().await.token();
    assert_eq!(
        reset(json!({"username": "nobody"})).await.status,
        StatusCode::ACCEPTED
    );
    let confirm = |token: String| {
        app.post_json(
            "/api/auth/password-reset/confirm",
            json!({"token": token, "new_password": NEW_PASSWORD}),
        )
    };
    assert_eq!(confirm(token.clone()).await.status, StatusCode::NO_CONTENT);
    confirm(token.clone())
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_reset_token");

    // The unknown account's row is written by the worker, after the answer.
    let mut trail = trail(&app).await;
    for _ in 0..50 {
        if rows_of(&trail, "password_reset_requested").len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        trail = self::trail(&app).await;
    }
    let a = alice.user_id.as_str();
    assert_eq!(
        rows_of(&trail, "password_reset_requested"),
        [
            ("ok".into(), Value::Null, json!(a)),
            ("ok".into(), Value::Null, Value::Null)
        ]
    );
    assert_eq!(
        rows_of(&trail, "password_reset_completed"),
        [ok_by(a), ("failed".into(), Value::Null, Value::Null)]
    );
    let text = serde_json::to_string(&trail).unwrap();
    for secret in [token.as_str(), NEW_PASSWORD, PASSWORD, &alice.refresh] {
        assert!(!text.contains(secret), "a secret in the trail: {text}");
    }
}

async fn the_proxied_path_writes_no_audit_row(backend: Backend) {
    let upstream = EchoUpstream::start().await;
    let app = TestApp::spawn_with(backend, &["--upstream", &upstream.url()]).await;
    let alice = app.signed_up("alice").await;
    let before = trail(&app).await.len();
    for _ in 0..3 {
        let proxied = app.get_with_token("/api/tickets", &alice.access).await;
        assert_eq!(proxied.status, StatusCode::OK);
        app.get("/api/tickets")
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_eq!(trail(&app).await.len(), before);
}

async fn a_failed_audit_write_is_counted_and_fails_nothing(backend: Backend) {
    let deployment = Deployment::new(backend).await;
    let app = deployment.spawn(&[]).await;
    app.signed_up("alice").await;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&deployment.database.url)
        .await
        .unwrap();
    sqlx::query("DROP TABLE audit_events")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let login = app.login("alice", PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());
    let metrics = app.get("/metrics").await.text();
    let failures = metrics
        .lines()
        .find_map(|line| line.strip_prefix("tollgate_audit_write_failures_total "))
        .unwrap_or_else(|| panic!("no audit failure counter: {metrics}"));
    assert!(failures.parse::<f64>().unwrap() >= 1.0, "{failures}");
}

on_both_backends!(
    every_request_event_is_recorded_with_its_actor_and_target,
    the_request_id_and_client_address_are_those_of_the_request,
    throttled_logins_are_recorded_against_the_account,
    password_resets_are_recorded_without_their_token,
    the_proxied_path_writes_no_audit_row,
    a_failed_audit_write_is_counted_and_fails_nothing,
);
