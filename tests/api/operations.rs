//! What operators rely on: key rotation, several instances on one database,
//! metrics and the debug endpoint. (Login throttling: `throttle.rs`.)

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Backend, Deployment, PASSWORD, TestApp, claims_of, header_of};
use crate::on_both_backends;

/// Polls `condition` every 100 ms until it holds or `limit` passes.
pub(crate) async fn eventually(limit: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn jwks_kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap().to_string())
        .collect()
}

async fn a_rotation_is_picked_up_and_old_tokens_keep_working(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let before = app.signed_up("alice").await;
    let old_kid = header_of(&before.access)["kid"]
        .as_str()
        .unwrap()
        .to_string();
    let published_before = jwks_kids(
        &app.send(Method::GET, "/.well-known/jwks.json", &[], None)
            .await
            .json(),
    );

    let keys = tollgate::auth::keydir::KeyDir::open(app.deployment.keys_dir()).unwrap();
    let records = keys
        .rotate(None, tollgate::time::UnixMillis::now())
        .unwrap();
    let new_active = records
        .iter()
        .find(|key| key.state == tollgate::auth::keystore::KeyState::Active)
        .unwrap()
        .kid
        .clone();
    assert!(
        published_before.contains(&new_active),
        "the new signing key was published before the rotation"
    );

    let picked_up = eventually(Duration::from_secs(10), async || {
        app.app.keys.current().signing().kid == new_active
    })
    .await;
    assert!(
        picked_up,
        "the gateway picks up a rotation within 10 s without a signal"
    );

    let after = app.login("alice", PASSWORD).await;
    let new_kid = header_of(after.json()["access_token"].as_str().unwrap())["kid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(new_kid, new_active);
    assert_ne!(new_kid, old_kid);
    assert_eq!(
        app.me(&before.access).await.status,
        StatusCode::OK,
        "tokens of the retired key still verify"
    );
    let published_after = jwks_kids(
        &app.send(Method::GET, "/.well-known/jwks.json", &[], None)
            .await
            .json(),
    );
    assert!(published_after.contains(&old_kid) && published_after.contains(&new_kid));
    assert_eq!(
        published_after.len(),
        3,
        "retired, active and the new next key"
    );
}

async fn instances_with_separate_key_directories_accept_each_others_tokens(backend: Backend) {
    let first = Deployment::new(backend).await;
    let second = Deployment {
        keys: std::sync::Arc::new(tempfile::tempdir().unwrap()),
        ..first.clone()
    };
    let a = first.spawn(&[]).await;
    let b = second.spawn(&[]).await;
    let from_a = a.signed_up("alice").await;
    let from_b = b.login("alice", PASSWORD).await;
    assert_eq!(from_b.status, StatusCode::OK);
    let from_b = crate::helpers::Tokens::from(&from_b);
    assert_ne!(
        header_of(&from_a.access)["kid"],
        header_of(&from_b.access)["kid"]
    );

    assert_eq!(
        b.me(&from_a.access).await.status,
        StatusCode::OK,
        "b knows a's key"
    );
    assert_eq!(
        a.me(&from_b.access).await.status,
        StatusCode::OK,
        "a learns b's key on an unknown kid"
    );
    let refreshed_on_b = b.refresh(&from_a.refresh).await;
    assert_eq!(
        refreshed_on_b.status,
        StatusCode::OK,
        "refresh tokens move between instances"
    );
    let jwks = jwks_kids(
        &a.send(Method::GET, "/.well-known/jwks.json", &[], None)
            .await
            .json(),
    );
    assert!(
        jwks.contains(
            &header_of(&from_b.access)["kid"]
                .as_str()
                .unwrap()
                .to_string()
        )
    );
}

async fn a_lost_keys_directory_invalidates_no_live_token(backend: Backend) {
    let deployment = Deployment::new(backend).await;
    let app = deployment.spawn(&[]).await;
    let tokens = app.signed_up("alice").await;
    let deployment = app.stop().await;
    for entry in std::fs::read_dir(deployment.keys_dir()).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let app = deployment.spawn(&[]).await;
    assert_ne!(
        app.app.keys.current().signing().kid,
        header_of(&tokens.access)["kid"].as_str().unwrap()
    );
    assert_eq!(app.me(&tokens.access).await.status, StatusCode::OK);
    assert_eq!(app.refresh(&tokens.refresh).await.status, StatusCode::OK);
}

async fn a_revocation_reaches_the_other_instances_within_five_seconds(backend: Backend) {
    let deployment = Deployment::new(backend).await;
    let a = deployment.spawn(&[]).await;
    let b = deployment.spawn(&[]).await;
    let tokens = a.signed_up("alice").await;
    assert_eq!(b.me(&tokens.access).await.status, StatusCode::OK);

    let revoked_at = Instant::now();
    assert_eq!(
        a.logout(&tokens.access).await.status,
        StatusCode::NO_CONTENT
    );
    a.me(&tokens.access).await.assert_rejected("revoked");
    let refused = eventually(Duration::from_secs(5), async || {
        b.me(&tokens.access).await.status == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(
        refused,
        "b still accepted the token {:?} after the logout",
        revoked_at.elapsed()
    );
    b.me(&tokens.access).await.assert_rejected("revoked");
}

async fn revoked_sessions_stay_refused_after_a_restart(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tokens = app.signed_up("alice").await;
    assert_eq!(
        app.logout(&tokens.access).await.status,
        StatusCode::NO_CONTENT
    );
    let app = app.stop().await.spawn(&[]).await;
    app.me(&tokens.access).await.assert_rejected("revoked");
}

async fn finished_sessions_are_deleted_with_their_refresh_tokens(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tokens = app.signed_up("alice").await;
    let live = app.signed_up("bob").await;
    assert_eq!(
        app.logout(&tokens.access).await.status,
        StatusCode::NO_CONTENT
    );
    let store = app.deployment.database.store().await;
    let hash = tollgate::auth::refresh::hash_refresh_token(&tokens.refresh);
    assert!(
        store
            .session_of_refresh_token(&hash)
            .await
            .unwrap()
            .is_some()
    );

    let now = tollgate::time::UnixMillis::now();
    let deleted = store
        .delete_finished_sessions(now, now.plus(Duration::from_millis(1)))
        .await
        .unwrap();
    assert_eq!(deleted, 1, "the revoked session goes, the live one stays");
    assert!(
        store
            .session_of_refresh_token(&hash)
            .await
            .unwrap()
            .is_none(),
        "its refresh tokens went with it"
    );
    assert_eq!(app.refresh(&live.refresh).await.status, StatusCode::OK);
    let expired = store
        .delete_finished_sessions(
            now.plus(Duration::from_secs(32 * 86_400)),
            tollgate::time::UnixMillis::new(0),
        )
        .await
        .unwrap();
    assert_eq!(expired, 1, "sessions past their end go too");
}

async fn metrics_are_prometheus_text_with_the_tollgate_prefix(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tokens = app.signed_up("alice").await;
    app.login("alice", "wrong password").await;
    app.refresh(&tokens.refresh).await;
    app.me("garbage").await;
    let response = app.send(Method::GET, "/metrics", &[], None).await;
    assert_eq!(response.status, StatusCode::OK);
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text();
    for name in [
        "tollgate_http_requests_total{route=\"auth\",status=\"201\"} 1",
        "tollgate_auth_failures_total{reason=\"invalid_credentials\"} 1",
        "tollgate_auth_failures_total{reason=\"malformed\"} 1",
        "tollgate_logins_total{outcome=\"invalid_credentials\"} 1",
        "tollgate_refreshes_total{outcome=\"rotated\"} 1",
        "tollgate_refresh_reuse_detections_total 0",
        "tollgate_session_revocations_total 0",
        "tollgate_upstream_request_duration_seconds_count 0",
        "tollgate_argon2_queue_depth 0",
    ] {
        assert!(text.contains(name), "missing `{name}` in:\n{text}");
    }
    for line in text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
    {
        assert!(line.starts_with("tollgate_"), "{line}");
    }
}

async fn the_debug_endpoint_explains_without_echoing_secrets(backend: Backend) {
    let hidden = TestApp::spawn(backend).await;
    hidden
        .send(Method::GET, "/api/debug/session", &[], None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");

    let app = TestApp::spawn_with(backend, &["--debug-endpoints"]).await;
    let tokens = app.signed_up("alice").await;
    let cookie = format!(
        "tollgate_access={}; tollgate_refresh={}",
        tokens.access, tokens.refresh
    );
    let bearer = format!("Bearer {}", tokens.access);
    let response = app
        .send(
            Method::GET,
            "/api/debug/session",
            &[("authorization", &bearer), ("cookie", &cookie)],
            None,
        )
        .await;
    assert_eq!(response.status, StatusCode::OK);
    let text = response.text();
    let report = response.json();
    assert_eq!(report["verdict"]["valid"], true);
    assert_eq!(report["credentials"]["used"], "bearer");
    assert_eq!(
        report["credentials"]["cookies"],
        json!(["tollgate_access", "tollgate_refresh"])
    );
    assert_eq!(report["token"]["claims"]["sub"], tokens.user_id.as_str());
    let signature = tokens.access.rsplit('.').next().unwrap();
    for secret in [tokens.access.as_str(), tokens.refresh.as_str(), signature] {
        assert!(!text.contains(secret), "the report echoed a secret");
    }

    let schemeless = app
        .send(
            Method::GET,
            "/api/debug/session",
            &[("authorization", &tokens.access)],
            None,
        )
        .await;
    assert_eq!(
        schemeless.json()["credentials"]["authorization_scheme"],
        "(no scheme)"
    );
    assert!(
        !schemeless.text().contains(&tokens.access),
        "a token without a scheme is not echoed"
    );

    let expired = app
        .get_with_token("/api/debug/session", "a.b.c")
        .await
        .json();
    assert_eq!(expired["verdict"]["valid"], false);
    assert_eq!(expired["verdict"]["reason"], "malformed");
    let anonymous = app
        .send(Method::GET, "/api/debug/session", &[], None)
        .await
        .json();
    assert_eq!(anonymous["verdict"]["valid"], false);
    assert!(
        anonymous["verdict"]["explanation"]
            .as_str()
            .unwrap()
            .contains("Bearer")
    );
    assert_eq!(
        claims_of(&tokens.access)["iss"],
        report["gateway"]["issuer"]
    );
}

on_both_backends!(
    a_rotation_is_picked_up_and_old_tokens_keep_working,
    instances_with_separate_key_directories_accept_each_others_tokens,
    a_lost_keys_directory_invalidates_no_live_token,
    a_revocation_reaches_the_other_instances_within_five_seconds,
    revoked_sessions_stay_refused_after_a_restart,
    finished_sessions_are_deleted_with_their_refresh_tokens,
    metrics_are_prometheus_text_with_the_tollgate_prefix,
    the_debug_endpoint_explains_without_echoing_secrets,
);

/// Log lines written to memory.
#[derive(Clone, Default)]
struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// On one thread (the default test runtime), so that the gateway's
/// background tasks log to this test's subscriber.
#[tokio::test]
async fn background_loops_stop_quietly_once_the_store_is_closed() {
    let lines = Lines::default();
    let subscriber = tollgate::logging::subscriber(
        tollgate::config::LogFormat::Text,
        tracing_subscriber::EnvFilter::new("warn"),
        {
            let lines = lines.clone();
            move || lines.clone()
        },
        false,
        None,
    );
    let _logs = tracing::subscriber::set_default(subscriber);
    let gateway = Deployment::new(Backend::Sqlite)
        .await
        .with_keys_in_the_database()
        .spawn(&[])
        .await;
    // What shutting down does while the app is still held (by the SIGHUP
    // handler, by connections still draining, by the trace export).
    gateway.app.store.close().await;
    // Hours of polling, pruning and key checks go by at once.
    tokio::time::pause();
    tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
    let logged = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let first: Vec<&str> = logged.lines().take(3).collect();
    assert!(
        first.is_empty(),
        "the background loops kept going: {first:#?}"
    );
}
