//! Registration and login: token bodies, cookies, credentials, accounts, and
//! the bodies the auth routes refuse.

use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use http::{Method, StatusCode};
use serde_json::json;
use tollgate::domain::UserId;
use tollgate::time::UnixMillis;

use crate::helpers::{Backend, Body, PASSWORD, TestApp, Tokens, claims_of};
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

async fn registration_can_be_turned_off(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_up("alice").await;
    let app = app
        .stop()
        .await
        .spawn(&["--allow-registration=false"])
        .await;
    app.register("bob", PASSWORD)
        .await
        .assert_error(StatusCode::FORBIDDEN, "registration_disabled");
    let login = app.login("alice", PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());
}

async fn login_returns_a_token_body_and_sets_both_cookies(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--access-ttl", "10m", "--refresh-ttl", "2d"]).await;
    let registered = app.signed_up("alice").await;
    let login = app.login("alice", PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());
    assert_eq!(login.header("cache-control"), Some("no-store"));
    let body = login.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 600);
    assert_eq!(body["refresh_expires_in"], 2 * 86_400);
    assert_eq!(body["user"]["id"], registered.user_id.as_str());
    let tokens = Tokens::from(&login);
    assert_ne!(tokens.session_id(), registered.session_id());

    let access = login.set_cookie("tollgate_access").unwrap();
    assert!(access.starts_with(&format!("tollgate_access={};", tokens.access)));
    assert_eq!(
        login.cookie_attributes("tollgate_access"),
        [
            "HttpOnly",
            "Max-Age=600",
            "Path=/",
            "SameSite=Lax",
            "Secure"
        ]
    );
    let refresh = login.set_cookie("tollgate_refresh").unwrap();
    assert!(refresh.starts_with(&format!("tollgate_refresh={};", tokens.refresh)));
    assert_eq!(
        login.cookie_attributes("tollgate_refresh"),
        [
            "HttpOnly",
            "Max-Age=172800",
            "Path=/api/auth",
            "SameSite=Lax",
            "Secure"
        ]
    );
}

async fn cookies_follow_the_configured_samesite_and_secure(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &["--cookie-samesite", "strict", "--cookie-secure=false"],
    )
    .await;
    app.signed_up("alice").await;
    let login = app.login("alice", PASSWORD).await;
    assert_eq!(
        login.cookie_attributes("tollgate_access"),
        ["HttpOnly", "Max-Age=900", "Path=/", "SameSite=Strict"]
    );
    assert_eq!(
        login.cookie_attributes("tollgate_refresh"),
        [
            "HttpOnly",
            "Max-Age=2678400",
            "Path=/api/auth",
            "SameSite=Strict"
        ]
    );
}

async fn cross_site_cookies_are_secure_and_partitioned(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--cookie-samesite", "none"]).await;
    app.signed_up("alice").await;
    let login = app.login("alice", PASSWORD).await;
    assert_eq!(
        login.cookie_attributes("tollgate_access"),
        [
            "HttpOnly",
            "Max-Age=900",
            "Partitioned",
            "Path=/",
            "SameSite=None",
            "Secure"
        ]
    );
    assert_eq!(
        login.cookie_attributes("tollgate_refresh"),
        [
            "HttpOnly",
            "Max-Age=2678400",
            "Partitioned",
            "Path=/api/auth",
            "SameSite=None",
            "Secure"
        ]
    );
}

async fn me_answers_by_bearer_and_by_cookie(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tokens = app.signed_up("alice").await;
    let by_bearer = app.me(&tokens.access).await;
    assert_eq!(by_bearer.status, StatusCode::OK, "{}", by_bearer.text());
    assert_eq!(
        by_bearer.json(),
        json!({
            "id": tokens.user_id,
            "username": "alice",
            "roles": [],
            "session_id": tokens.session_id(),
            "email": null,
        })
    );
    let cookie = format!("tollgate_access={}", tokens.access);
    let by_cookie = app
        .send(Method::GET, "/api/auth/me", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(by_cookie.status, StatusCode::OK, "{}", by_cookie.text());
    assert_eq!(by_cookie.json(), by_bearer.json());
}

async fn requests_without_credentials_are_unauthorized(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app.get("/api/auth/me").await;
    response.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    // No token was presented, so the challenge names no error (RFC 6750).
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer realm=\"tollgate\"")
    );
}

async fn unknown_users_and_wrong_passwords_get_the_same_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_up("alice").await;
    let wrong_password = app.login("alice", "not the password").await;
    let unknown_user = app.login("nobody", "not the password").await;
    wrong_password.assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    unknown_user.assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert_eq!(unknown_user.body, wrong_password.body);
    assert_eq!(
        unknown_user.header("www-authenticate"),
        wrong_password.header("www-authenticate")
    );
    assert!(unknown_user.set_cookies().is_empty());
}

async fn unknown_users_take_as_long_as_wrong_passwords(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_up("alice").await;
    let timed = |username: &'static str| {
        let app = &app;
        async move {
            let started = Instant::now();
            let response = app.login(username, "not the password").await;
            assert_eq!(response.status, StatusCode::UNAUTHORIZED);
            started.elapsed()
        }
    };
    let (mut wrong_password, mut unknown_user) = (Vec::new(), Vec::new());
    // Interleaved, so that load from other tests hits both alike; the
    // fastest of each, since load only ever adds time (and hashing yields
    // to everything else on a busy machine). Five: the sixth failure would
    // be throttled.
    for _ in 0..5 {
        wrong_password.push(timed("alice").await);
        unknown_user.push(timed("nobody").await);
    }
    let fastest = |samples: Vec<Duration>| samples.into_iter().min().unwrap();
    let (wrong_password, unknown_user) = (fastest(wrong_password), fastest(unknown_user));
    // Without the dummy verify an unknown user answers in a fraction of
    // the time an argon2 verify takes.
    assert!(
        unknown_user * 2 >= wrong_password,
        "unknown user {unknown_user:?}, wrong password {wrong_password:?}"
    );
}

async fn disabled_accounts_can_neither_log_in_nor_refresh(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tokens = app.signed_up("alice").await;
    let store = app.deployment.database.store().await;
    let alice = UserId::parse(&tokens.user_id).unwrap();
    let revoked = store
        .set_disabled(&alice, true, UnixMillis::now())
        .await
        .unwrap();
    assert_eq!(revoked.len(), 1);

    app.login("alice", PASSWORD)
        .await
        .assert_error(StatusCode::FORBIDDEN, "account_disabled");
    // A wrong password says nothing about the account.
    app.login("alice", "not the password")
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    app.refresh(&tokens.refresh)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    // Disabled elsewhere (here: directly in the database), the session's
    // access token stops working within the contract's 5 seconds.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut me = app.me(&tokens.access).await;
    while me.status == StatusCode::OK && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        me = app.me(&tokens.access).await;
    }
    me.assert_rejected("revoked");

    store
        .set_disabled(&alice, false, UnixMillis::now())
        .await
        .unwrap();
    let login = app.login("alice", PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());
}

async fn passwords_hashed_with_old_parameters_are_rehashed_at_login(backend: Backend) {
    const CURRENT: &str = "$argon2id$v=19$m=19456,t=2,p=1$";
    let app = TestApp::spawn(backend).await;
    let alice = UserId::parse(&app.signed_up("alice").await.user_id).unwrap();
    let store = app.deployment.database.store().await;
    let stored_hash = || async {
        store
            .user_by_id(&alice)
            .await
            .unwrap()
            .unwrap()
            .password_hash
            .expose()
            .to_string()
    };
    assert!(stored_hash().await.starts_with(CURRENT));

    let weaker = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(8192, 1, 1, None).unwrap(),
    );
    let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
    let old_hash = weaker
        .hash_password(PASSWORD.as_bytes(), &salt)
        .unwrap()
        .to_string();
    store.update_password_hash(&alice, &old_hash).await.unwrap();

    let login = app.login("alice", PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());
    assert!(stored_hash().await.starts_with(CURRENT));
    let again = app.login("alice", PASSWORD).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
}

async fn usernames_and_passwords_at_their_bounds_are_accepted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let longest = "a".repeat(64);
    for (username, password) in [
        (longest.as_str(), "12345678".to_string()),
        ("b", "x".repeat(1024)),
        ("c.d_e@f-G9", PASSWORD.to_string()),
    ] {
        let response = app.register(username, &password).await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.text());
        let login = app.login(username, &password).await;
        assert_eq!(login.status, StatusCode::OK, "{}", login.text());
    }
}

async fn malformed_bodies_are_invalid_requests_naming_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let long_username = "a".repeat(65);
    // Bounded in bytes: 513 two-byte characters are too many.
    let long_password = "é".repeat(513);
    let credentials = |username: &str, password: &str| {
        Body::Json(json!({ "username": username, "password": password }))
    };
    let cases = || {
        [
            (Body::Raw("not json".into()), "JSON"),
            (Body::Raw(String::new()), "JSON"),
            (Body::Raw("{\"username\": \"alice\",".into()), "JSON"),
            (
                Body::Json(json!({ "username": 5, "password": PASSWORD })),
                "username",
            ),
            (
                Body::Json(json!({ "username": "alice", "password": true })),
                "password",
            ),
            (Body::Json(json!({ "password": PASSWORD })), "username"),
            (Body::Json(json!({ "username": "alice" })), "password"),
            (credentials("", PASSWORD), "username"),
            (credentials(&long_username, PASSWORD), "username"),
            (credentials("al ice", PASSWORD), "username"),
            (credentials("älice", PASSWORD), "username"),
            (credentials("alice", "1234567"), "password"),
            (credentials("alice", &"x".repeat(1025)), "password"),
            (credentials("alice", &long_password), "password"),
        ]
    };
    for path in ["/api/auth/register", "/api/auth/login"] {
        for (body, field) in cases() {
            let response = app.send(Method::POST, path, &[], Some(body)).await;
            response.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
            let message = response.json()["message"].as_str().unwrap().to_string();
            assert!(message.contains(field), "{path}: {message}");
        }
    }
}

async fn a_missing_field_is_not_called_invalid_json(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .post_json("/api/auth/login", json!({ "username": "alice" }))
        .await;
    response.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let message = response.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("password"), "{message}");
    assert!(!message.contains("not valid JSON"), "{message}");
}

async fn bodies_over_64_kib_are_too_large(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let password = "x".repeat(64 * 1024);
    for path in ["/api/auth/register", "/api/auth/login"] {
        app.post_json(path, json!({ "username": "alice", "password": password }))
            .await
            .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    }
}

on_both_backends!(
    registration_returns_a_token_body,
    usernames_are_unique_without_regard_to_case,
    registration_can_be_turned_off,
    login_returns_a_token_body_and_sets_both_cookies,
    cookies_follow_the_configured_samesite_and_secure,
    cross_site_cookies_are_secure_and_partitioned,
    me_answers_by_bearer_and_by_cookie,
    requests_without_credentials_are_unauthorized,
    unknown_users_and_wrong_passwords_get_the_same_answer,
    unknown_users_take_as_long_as_wrong_passwords,
    disabled_accounts_can_neither_log_in_nor_refresh,
    passwords_hashed_with_old_parameters_are_rehashed_at_login,
    usernames_and_passwords_at_their_bounds_are_accepted,
    malformed_bodies_are_invalid_requests_naming_the_field,
    a_missing_field_is_not_called_invalid_json,
    bodies_over_64_kib_are_too_large,
);
