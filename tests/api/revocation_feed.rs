//! The revocation feed (contract section 11): `/.well-known/revoked-sessions`
//! lists revoked sessions whose access tokens may still be unexpired, from
//! what each instance already polls, with a cursor to read on from.

use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::Value;

use crate::helpers::{Backend, Deployment, GatewayClient, PASSWORD, TestApp, TestResponse, Tokens};
use crate::on_both_backends;

const FEED: &str = "/.well-known/revoked-sessions";

/// The session ids of a feed answer, after checking its shape.
#[track_caller]
fn revoked_sessions(response: &TestResponse) -> Vec<String> {
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let cache = response.header("cache-control").expect("Cache-Control");
    let max_age: u64 = cache
        .split(',')
        .find_map(|directive| directive.trim().strip_prefix("max-age="))
        .and_then(|age| age.parse().ok())
        .unwrap_or_else(|| panic!("a max-age: {cache}"));
    assert!(max_age <= 2, "{cache}");
    let body = response.json();
    assert!(
        body["cursor"].as_str().is_some_and(|c| !c.is_empty()),
        "{body}"
    );
    body["revoked"]
        .as_array()
        .expect("a revoked array")
        .iter()
        .map(|entry| {
            let revoked_at = entry["revoked_at"].as_str().expect("a revoked_at");
            assert!(humantime::parse_rfc3339(revoked_at).is_ok(), "{revoked_at}");
            entry["sid"].as_str().expect("a sid").to_string()
        })
        .collect()
}

fn cursor(response: &TestResponse) -> String {
    response.json()["cursor"].as_str().unwrap().to_string()
}

async fn since(gateway: &GatewayClient, cursor: &str) -> TestResponse {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("since", cursor)
        .finish();
    gateway.get(&format!("{FEED}?{query}")).await
}

async fn a_session_revoked_here_is_listed_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let kept = app.signed_up("alice").await;
    let logged_out = Tokens::from(&app.login("alice", PASSWORD).await);
    assert!(revoked_sessions(&app.get(FEED).await).is_empty());

    assert_eq!(
        app.logout(&logged_out.access).await.status,
        StatusCode::NO_CONTENT
    );
    let listed = revoked_sessions(&app.get(FEED).await);
    assert_eq!(listed, [logged_out.session_id()]);

    // Every way of revoking reaches the feed: here, logging out everywhere.
    let other = Tokens::from(&app.login("alice", PASSWORD).await);
    assert_eq!(
        app.logout_all(&kept.access).await.status,
        StatusCode::NO_CONTENT
    );
    let mut listed = revoked_sessions(&app.get(FEED).await);
    listed.sort();
    let mut expected = vec![
        kept.session_id(),
        logged_out.session_id(),
        other.session_id(),
    ];
    expected.sort();
    assert_eq!(listed, expected);
}

async fn a_cursor_reads_on_from_where_it_was_handed_out(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first = app.signed_up("alice").await;
    let second = Tokens::from(&app.login("alice", PASSWORD).await);
    app.logout(&first.access).await;
    let start = cursor(&app.get(FEED).await);

    app.logout(&second.access).await;
    let listed = revoked_sessions(&since(&app, &start).await);
    assert!(listed.contains(&second.session_id()), "{listed:?}");
    // Once the poll has read both back from the database, a cursor handed
    // out after them still re-reads the recent past: answers may repeat a
    // session, and never skip one.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let latest = app.get(FEED).await;
    let listed = revoked_sessions(&since(&app, &cursor(&latest)).await);
    assert!(listed.contains(&second.session_id()), "{listed:?}");
}

async fn an_invalid_cursor_is_a_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for query in [
        "since=",
        "since=not-a-cursor",
        "since=djIuMTIz",
        "cursor=djEuMTIz",
        "since=djEuMTIz&since=djEuMTIz",
    ] {
        app.get(&format!("{FEED}?{query}"))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
}

on_both_backends!(
    a_session_revoked_here_is_listed_at_once,
    a_cursor_reads_on_from_where_it_was_handed_out,
    an_invalid_cursor_is_a_400,
);

/// Another instance lists a revocation once its poll has read it, within
/// the bound it keeps itself, and reads on from a cursor the first handed
/// out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_lists_a_revocation_within_its_poll() {
    let deployment = Deployment::new(Backend::Postgres).await;
    let here = deployment.spawn(&[]).await;
    let there = deployment.spawn(&[]).await;
    let tokens = here.signed_up("alice").await;
    let handed_out = cursor(&here.get(FEED).await);

    assert_eq!(
        here.logout(&tokens.access).await.status,
        StatusCode::NO_CONTENT
    );
    let revoked_at = Instant::now();
    loop {
        let listed = revoked_sessions(&since(&there, &handed_out).await);
        if listed.contains(&tokens.session_id()) {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "not listed by the other instance: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all: Value = there.get(FEED).await.json();
    assert!(all.to_string().contains(&tokens.session_id()));
}
