//! The admin API: only an access token with the role `admin` gets in (the
//! `Origin` rule for cookies included); users listed a page at a time and
//! searched; disabling revokes every session, on every instance; a user's
//! sessions listed and revoked; the audit trail read back; every change
//! audited with the admin as its actor.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::Value;

use crate::audit::trail;
use crate::helpers::{Backend, PASSWORD, TestApp, TestResponse, Tokens};
use crate::on_both_backends;

impl TestApp {
    async fn as_admin(&self, method: Method, path: &str, token: &str) -> TestResponse {
        let bearer = format!("Bearer {token}");
        self.send(method, path, &[("authorization", &bearer)], None)
            .await
    }
}

/// Every page of a list, following its cursors; the items in order.
async fn all_pages(app: &TestApp, token: &str, path: &str, limit: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let separator = if path.contains('?') { '&' } else { '?' };
    for _ in 0..100 {
        let mut url = format!("{path}{separator}limit={limit}");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page = app.as_admin(Method::GET, &url, token).await;
        assert_eq!(page.status, StatusCode::OK, "{url}: {}", page.text());
        let body = page.json();
        let page_items = body["items"].as_array().unwrap();
        assert!(page_items.len() <= limit);
        items.extend(page_items.iter().cloned());
        match body["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(page_items.len(), limit, "only a full page has a next one");
                cursor = Some(next.to_string());
            }
            None => return items,
        }
    }
    panic!("the cursors never ended");
}

fn usernames(items: &[Value]) -> Vec<&str> {
    items
        .iter()
        .map(|user| user["username"].as_str().unwrap())
        .collect()
}

async fn every_admin_route_needs_the_admin_role(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_up_with_roles("root", &["admin"]).await;
    let user = app.signed_up("eve").await;
    let target = app.signed_up("alice").await;
    let id = &target.user_id;
    let routes = [
        (Method::GET, "/api/admin/users".to_string(), StatusCode::OK),
        (
            Method::POST,
            format!("/api/admin/users/{id}/disable"),
            StatusCode::OK,
        ),
        (
            Method::POST,
            format!("/api/admin/users/{id}/enable"),
            StatusCode::OK,
        ),
        (
            Method::GET,
            format!("/api/admin/users/{id}/sessions"),
            StatusCode::OK,
        ),
        (
            Method::DELETE,
            format!("/api/admin/users/{id}/sessions"),
            StatusCode::NO_CONTENT,
        ),
        (Method::GET, "/api/admin/audit".to_string(), StatusCode::OK),
    ];
    let own_origin = app.url("");
    for (method, path, success) in &routes {
        let changes = *method != Method::GET;
        app.send(method.clone(), path, &[], None)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        app.as_admin(method.clone(), path, &user.access)
            .await
            .assert_error(StatusCode::FORBIDDEN, "insufficient_role");
        app.as_admin(method.clone(), path, "not.a.token")
            .await
            .assert_rejected("malformed");

        // By cookie: a change needs the gateway's own (or an allowed) Origin.
        let cookie = format!("tollgate_access={}", admin.access);
        let by_cookie = app
            .send(method.clone(), path, &[("cookie", &cookie)], None)
            .await;
        if changes {
            by_cookie.assert_error(StatusCode::FORBIDDEN, "csrf_rejected");
            app.send(
                method.clone(),
                path,
                &[("cookie", &cookie), ("origin", "https://evil.example")],
                None,
            )
            .await
            .assert_error(StatusCode::FORBIDDEN, "csrf_rejected");
        } else {
            assert_eq!(by_cookie.status, *success, "{path}: {}", by_cookie.text());
        }
        let with_origin = app
            .send(
                method.clone(),
                path,
                &[("cookie", &cookie), ("origin", &own_origin)],
                None,
            )
            .await;
        assert_eq!(
            with_origin.status,
            *success,
            "{path}: {}",
            with_origin.text()
        );

        let by_bearer = app.as_admin(method.clone(), path, &admin.access).await;
        assert_eq!(by_bearer.status, *success, "{path}: {}", by_bearer.text());
    }
    // Wrong methods and unknown admin paths.
    let wrong = app
        .as_admin(Method::DELETE, "/api/admin/users", &admin.access)
        .await;
    wrong.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert_eq!(wrong.header("allow"), Some("GET, HEAD"));
    app.as_admin(
        Method::GET,
        &format!("/api/admin/users/{id}/disable"),
        &admin.access,
    )
    .await
    .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    for path in [
        "/api/admin",
        "/api/admin/nothing",
        &format!("/api/admin/users/{id}"),
        &format!("/api/admin/users/{id}/promote"),
    ] {
        app.as_admin(Method::GET, path, &admin.access)
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
    }
}

async fn users_are_listed_a_page_at_a_time_and_searched(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_up_with_roles("root", &["admin"]).await;
    for name in ["carol", "Alina", "bob", "dave", "erin", "frank", "alice"] {
        app.signed_up(name).await;
    }
    app.register_with_email("zed", PASSWORD, "Zed.Ali@example.com")
        .await;

    let everyone = all_pages(&app, &admin.access, "/api/admin/users", 3).await;
    assert_eq!(
        usernames(&everyone),
        [
            "alice", "Alina", "bob", "carol", "dave", "erin", "frank", "root", "zed"
        ]
    );
    let default_page = app
        .as_admin(Method::GET, "/api/admin/users", &admin.access)
        .await
        .json();
    assert_eq!(default_page["items"].as_array().unwrap().len(), 9);
    assert!(default_page["next_cursor"].is_null());

    let zed = everyone
        .iter()
        .find(|user| user["username"] == "zed")
        .unwrap();
    let mut fields: Vec<&String> = zed.as_object().unwrap().keys().collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "created_at",
            "disabled",
            "email",
            "id",
            "last_login_at",
            "roles",
            "username"
        ]
    );
    assert_eq!(zed["email"], "Zed.Ali@example.com");
    assert_eq!(zed["disabled"], false);
    assert!(
        zed["last_login_at"].is_string(),
        "registration logs in: {zed}"
    );
    let root = everyone
        .iter()
        .find(|user| user["username"] == "root")
        .unwrap();
    assert_eq!(root["roles"], serde_json::json!(["admin"]));

    // Search: username or email, in any case, a page at a time too.
    let found = all_pages(&app, &admin.access, "/api/admin/users?q=ALI", 1).await;
    assert_eq!(usernames(&found), ["alice", "Alina", "zed"]);
    let none = all_pages(&app, &admin.access, "/api/admin/users?q=a%25", 10).await;
    assert!(
        none.is_empty(),
        "% is a character, not a wildcard: {none:?}"
    );

    // Bad limits and cursors.
    let audit_cursor = {
        let page = app
            .as_admin(Method::GET, "/api/admin/audit?limit=1", &admin.access)
            .await
            .json();
        page["next_cursor"].as_str().unwrap().to_string()
    };
    for query in [
        "limit=0".to_string(),
        "limit=501".into(),
        "limit=ten".into(),
        "limit=-1".into(),
        "cursor=not-a-cursor".into(),
        "cursor=".into(),
        format!("cursor={audit_cursor}"),
        "q=".into(),
        "page=2".into(),
        "limit=1&limit=2".into(),
    ] {
        app.as_admin(
            Method::GET,
            &format!("/api/admin/users?{query}"),
            &admin.access,
        )
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let most = app
        .as_admin(Method::GET, "/api/admin/users?limit=500", &admin.access)
        .await;
    assert_eq!(most.status, StatusCode::OK);
}

async fn disabling_revokes_every_session_everywhere_and_refuses_login(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let other_instance = app.deployment.spawn(&[]).await;
    let admin = app.signed_up_with_roles("root", &["admin"]).await;
    let bob = app.signed_up("bob").await;
    let again = Tokens::from(&other_instance.login("bob", PASSWORD).await);
    assert_eq!(other_instance.me(&bob.access).await.status, StatusCode::OK);

    let disabled = app
        .as_admin(
            Method::POST,
            &format!("/api/admin/users/{}/disable", bob.user_id),
            &admin.access,
        )
        .await;
    assert_eq!(disabled.status, StatusCode::OK, "{}", disabled.text());
    assert_eq!(disabled.json()["disabled"], true);
    for tokens in [&bob, &again] {
        app.me(&tokens.access).await.assert_rejected("revoked");
        app.refresh(&tokens.refresh)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    }
    // The other instance learns of it from the database within 5 seconds.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let me = other_instance.me(&bob.access).await;
        if me.status == StatusCode::UNAUTHORIZED {
            me.assert_rejected("revoked");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still valid on the other instance"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.login("bob", PASSWORD)
        .await
        .assert_error(StatusCode::FORBIDDEN, "account_disabled");
    let sessions = app
        .as_admin(
            Method::GET,
            &format!("/api/admin/users/{}/sessions", bob.user_id),
            &admin.access,
        )
        .await;
    assert_eq!(sessions.json()["items"], serde_json::json!([]));

    let enabled = app
        .as_admin(
            Method::POST,
            &format!("/api/admin/users/{}/enable", bob.user_id),
            &admin.access,
        )
        .await;
    assert_eq!(enabled.status, StatusCode::OK);
    assert_eq!(enabled.json()["disabled"], false);
    assert_eq!(app.login("bob", PASSWORD).await.status, StatusCode::OK);

    let trail = trail(&app).await;
    let by_admin: Vec<(&str, &str)> = trail
        .iter()
        .filter(|row| row["actor"] == admin.user_id.as_str())
        .map(|row| {
            (
                row["action"].as_str().unwrap(),
                row["target"].as_str().unwrap(),
            )
        })
        .collect();
    let b = bob.user_id.as_str();
    assert_eq!(
        by_admin,
        [
            ("user_enabled", b),
            ("user_disabled", b),
            ("login", admin.user_id.as_str())
        ]
    );
}

async fn a_users_sessions_are_listed_a_page_at_a_time_and_revoked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_up_with_roles("root", &["admin"]).await;
    let bob = app.signed_up("bob").await;
    let mut all = vec![bob.clone()];
    for _ in 0..3 {
        all.push(Tokens::from(&app.login("bob", PASSWORD).await));
    }
    // One of them logged out: not listed.
    app.logout(&all[1].access).await;
    let path = format!("/api/admin/users/{}/sessions", bob.user_id);
    let sessions = all_pages(&app, &admin.access, &path, 2).await;
    let listed: Vec<&str> = sessions
        .iter()
        .map(|session| session["id"].as_str().unwrap())
        .collect();
    let mut expected: Vec<String> = [&all[0], &all[2], &all[3]]
        .iter()
        .map(|tokens| tokens.session_id())
        .collect();
    expected.reverse();
    assert_eq!(listed, expected, "newest first");
    let mut fields: Vec<&String> = sessions[0].as_object().unwrap().keys().collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "created_at",
            "expires_at",
            "id",
            "ip",
            "last_used_at",
            "user_agent"
        ]
    );
    app.as_admin(
        Method::GET,
        &format!("{path}?cursor={}", "c2Vzc2lvbnM6eDp5"),
        &admin.access,
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_request");

    let revoked = app.as_admin(Method::DELETE, &path, &admin.access).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.text());
    for tokens in &all {
        app.me(&tokens.access).await.assert_rejected("revoked");
    }
    assert!(all_pages(&app, &admin.access, &path, 10).await.is_empty());
    // Bob may log in again: revoking sessions is not disabling.
    assert_eq!(app.login("bob", PASSWORD).await.status, StatusCode::OK);
    let trail = trail(&app).await;
    let row = trail
        .iter()
        .find(|row| row["action"] == "session_revoked")
        .unwrap();
    assert_eq!(row["actor"], admin.user_id.as_str());
    assert_eq!(row["target"], bob.user_id.as_str());

    // A user id that is no user's, or no id at all.
    for id in [uuid::Uuid::new_v4().to_string(), "not-an-id".to_string()] {
        for (method, suffix) in [
            (Method::GET, "sessions"),
            (Method::DELETE, "sessions"),
            (Method::POST, "disable"),
            (Method::POST, "enable"),
        ] {
            app.as_admin(
                method,
                &format!("/api/admin/users/{id}/{suffix}"),
                &admin.access,
            )
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
        }
    }
}

async fn the_audit_trail_is_read_a_page_at_a_time_and_filtered(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_up_with_roles("root", &["admin"]).await;
    let bob = app.signed_up("bob").await;
    for _ in 0..3 {
        app.login("bob", "wrong password").await;
    }
    app.logout(&bob.access).await;

    // The same rows, in the same order, as the trail holds.
    let everything = all_pages(&app, &admin.access, "/api/admin/audit", 2).await;
    assert_eq!(everything, trail(&app).await);
    let bobs = all_pages(&app, &admin.access, "/api/admin/audit?user=bob", 2).await;
    let actions: Vec<&str> = bobs
        .iter()
        .map(|row| row["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["logout", "login", "login", "login", "register"]);
    let by_id = all_pages(
        &app,
        &admin.access,
        &format!("/api/admin/audit?user={}", bob.user_id),
        50,
    )
    .await;
    assert_eq!(by_id, bobs);
    assert_eq!(
        all_pages(&app, &admin.access, "/api/admin/audit?since=1h", 50)
            .await
            .len(),
        everything.len()
    );
    let later = humantime::format_rfc3339(std::time::SystemTime::now() + Duration::from_secs(60))
        .to_string();
    assert!(
        all_pages(
            &app,
            &admin.access,
            &format!("/api/admin/audit?since={later}"),
            50
        )
        .await
        .is_empty()
    );
    app.as_admin(Method::GET, "/api/admin/audit?user=nobody", &admin.access)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    for query in [
        "since=yesterday",
        "user=no%20body",
        "cursor=YXVkaXQ6MA",
        "limit=0",
    ] {
        app.as_admin(
            Method::GET,
            &format!("/api/admin/audit?{query}"),
            &admin.access,
        )
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    // Reading is not audited.
    assert_eq!(trail(&app).await.len(), everything.len());
}

on_both_backends!(
    every_admin_route_needs_the_admin_role,
    users_are_listed_a_page_at_a_time_and_searched,
    disabling_revokes_every_session_everywhere_and_refuses_login,
    a_users_sessions_are_listed_a_page_at_a_time_and_revoked,
    the_audit_trail_is_read_a_page_at_a_time_and_filtered,
);
