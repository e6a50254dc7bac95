//! Password reset by mail: the request, the mail (by webhook and by SMTP),
//! the confirmation, and everything a token must not do.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tollgate::auth::reset::{hash_reset_token, new_reset_token};
use tollgate::domain::{Email, Roles, UserId, Username};
use tollgate::store::{NewReset, NewUser};
use tollgate::time::UnixMillis;

use crate::helpers::{
    Backend, Body, Deployment, GatewayClient, PASSWORD, TestApp, TestResponse, Tokens,
};
use crate::mailbox::{Mailbox, ReceivedMail, SinkTls, SmtpSink, WebhookReceiver};
use crate::on_both_backends;
use crate::process::Process;
use crate::test_ca::TestCa;

const PUBLIC_URL: &str = "https://auth.example.com";
const NEW_PASSWORD: &str = "battery staple horse";
/// The one answer to a well-formed reset request.
const SENT_IF_THE_ACCOUNT_EXISTS: &str = r#"{"status":"sent if the account exists"}"#;

/// A gateway whose mail goes to a webhook receiver.
async fn with_webhook(backend: Backend) -> (TestApp, WebhookReceiver) {
    with_webhook_failing_first(backend, 0).await
}

async fn with_webhook_failing_first(
    backend: Backend,
    failures: usize,
) -> (TestApp, WebhookReceiver) {
    let webhook = WebhookReceiver::failing_first(failures).await;
    let app = TestApp::spawn_with(
        backend,
        &["--public-url", PUBLIC_URL, "--mail-webhook", &webhook.url()],
    )
    .await;
    (app, webhook)
}

trait ResetRequests {
    async fn request_reset(&self, body: Value) -> TestResponse;
    async fn confirm_reset(&self, token: &str, new_password: &str) -> TestResponse;
}

impl ResetRequests for GatewayClient {
    async fn request_reset(&self, body: Value) -> TestResponse {
        self.post_json("/api/auth/password-reset", body).await
    }

    async fn confirm_reset(&self, token: &str, new_password: &str) -> TestResponse {
        self.post_json(
            "/api/auth/password-reset/confirm",
            json!({ "token": token, "new_password": new_password }),
        )
        .await
    }
}

#[track_caller]
fn assert_accepted(response: &TestResponse) {
    assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.text());
    assert_eq!(response.text(), SENT_IF_THE_ACCOUNT_EXISTS);
}

/// Registers alice with an email, logs her in a second time, asks for a
/// reset, confirms it with the mailed token, and checks that both sessions
/// are dead and only the new password works.
async fn reset_end_to_end(app: &TestApp, mailbox: &Mailbox) -> ReceivedMail {
    let registered = app
        .register_with_email("alice", PASSWORD, "alice@example.com")
        .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.text()
    );
    let first = Tokens::from(&registered);
    let second = Tokens::from(&app.login("alice", PASSWORD).await);

    assert_accepted(&app.request_reset(json!({ "username": "alice" })).await);
    let mail = mailbox.next().await;
    assert_eq!(mail.to, "alice@example.com");
    assert!(mail.subject.contains("password"), "{}", mail.subject);
    let token = mail.token();
    let link = format!("{PUBLIC_URL}/reset-password#token={token}");
    assert!(mail.text.contains(&link), "{}", mail.text);
    assert!(mail.text.contains("30 minutes"), "{}", mail.text);
    // The token itself too, for a page that asks for it.
    assert!(
        mail.text.lines().any(|line| line.trim() == token),
        "{}",
        mail.text
    );

    let confirmed = app.confirm_reset(&token, NEW_PASSWORD).await;
    assert_eq!(
        confirmed.status,
        StatusCode::NO_CONTENT,
        "{}",
        confirmed.text()
    );

    for tokens in [&first, &second] {
        app.me(&tokens.access).await.assert_rejected("revoked");
        app.refresh(&tokens.refresh)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    }
    app.login("alice", PASSWORD)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    let login = app.login("alice", NEW_PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());

    // Used once, never again.
    app.confirm_reset(&token, "yet another password")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_reset_token");
    let login = app.login("alice", NEW_PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());
    mail
}

async fn a_password_is_reset_through_the_mail_webhook(backend: Backend) {
    let (app, webhook) = with_webhook(backend).await;
    let mail = reset_end_to_end(&app, &webhook.mailbox).await;
    assert_eq!(mail.kind.as_deref(), Some("password_reset"));
    assert_eq!(
        mail.link,
        Some(format!(
            "{PUBLIC_URL}/reset-password#token={}",
            mail.token()
        ))
    );
}

async fn a_password_is_reset_through_smtp(backend: Backend) {
    let sink = SmtpSink::start(SinkTls::None).await;
    let app = TestApp::spawn_with(
        backend,
        &["--public-url", PUBLIC_URL, "--smtp-url", &sink.url("smtp")],
    )
    .await;
    reset_end_to_end(&app, &sink.mailbox).await;
}

async fn a_reset_can_be_asked_for_by_email_address(backend: Backend) {
    let (app, webhook) = with_webhook(backend).await;
    app.register_with_email("alice", PASSWORD, "Alice@Example.com")
        .await;
    assert_accepted(
        &app.request_reset(json!({ "email": "alice@EXAMPLE.com" }))
            .await,
    );
    let mail = webhook.mailbox.next().await;
    assert_eq!(mail.to, "Alice@Example.com");
    let confirmed = app.confirm_reset(&mail.token(), NEW_PASSWORD).await;
    assert_eq!(
        confirmed.status,
        StatusCode::NO_CONTENT,
        "{}",
        confirmed.text()
    );
}

async fn unknown_accounts_get_the_same_answer_and_no_mail(backend: Backend) {
    let (app, webhook) = with_webhook(backend).await;
    app.register_with_email("alice", PASSWORD, "alice@example.com")
        .await;
    app.signed_up("nomail").await;
    for body in [
        json!({ "username": "nobody" }),
        json!({ "email": "nobody@example.com" }),
        // An account without an email gets nothing either.
        json!({ "username": "nomail" }),
        json!({ "username": "alice" }),
    ] {
        let response = app.request_reset(body).await;
        assert_accepted(&response);
        assert!(response.set_cookies().is_empty());
    }
    // Only alice's mail, and nothing after it.
    assert_eq!(webhook.mailbox.next().await.to, "alice@example.com");
    webhook
        .mailbox
        .assert_none_within(Duration::from_millis(500))
        .await;
}

async fn unknown_accounts_take_as_long_as_known_ones(backend: Backend) {
    let (app, webhook) = with_webhook(backend).await;
    // One account per round, so that no account's throttle (five requests
    // per account and address in 15 minutes) answers instead; made in the
    // store, so that the requests stay within the address's 30 a minute.
    const ROUNDS: usize = 13;
    let store = app.deployment.database.store().await;
    for n in 0..ROUNDS {
        let email = Email::parse(&format!("known{n}@example.com")).unwrap();
        store
            .create_user(NewUser {
                username: &Username::parse(&format!("known{n}")).unwrap(),
                email: Some(&email),
                password_hash: "not used".into(),
                roles: Roles::default(),
                now: UnixMillis::now(),
            })
            .await
            .unwrap();
    }
    let timed = |username: String| {
        let app = &app;
        async move {
            let started = Instant::now();
            assert_accepted(&app.request_reset(json!({ "username": username })).await);
            started.elapsed()
        }
    };
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    // Interleaved, so that load from other tests hits both alike, and each
    // timed once the work the previous request left behind is done.
    for n in 0..ROUNDS {
        known.push(timed(format!("known{n}")).await);
        webhook.mailbox.next().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        unknown.push(timed(format!("unknown{n}")).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The fastest of each: load from the rest of the suite only ever adds
    // time, and a median of thirteen still drifted by half on a saturated
    // machine.
    let fastest = |samples: Vec<Duration>| samples.into_iter().min().unwrap();
    let (known, unknown) = (fastest(known), fastest(unknown));
    // Looking the account up and recording its token before answering
    // would cost a known account a database write (a millisecond or more
    // here) that an unknown one does not pay.
    let alike = |a: Duration, b: Duration| a <= b * 3 / 2 + Duration::from_micros(300);
    assert!(
        alike(known, unknown) && alike(unknown, known),
        "known {known:?}, unknown {unknown:?}"
    );
}

async fn a_newer_request_voids_the_older_token(backend: Backend) {
    let (app, webhook) = with_webhook(backend).await;
    app.register_with_email("alice", PASSWORD, "alice@example.com")
        .await;
    app.request_reset(json!({ "username": "alice" })).await;
    let older = webhook.mailbox.next().await.token();
    app.request_reset(json!({ "username": "alice" })).await;
    let newer = webhook.mailbox.next().await.token();
    assert_ne!(older, newer);
    app.confirm_reset(&older, NEW_PASSWORD)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_reset_token");
    let confirmed = app.confirm_reset(&newer, NEW_PASSWORD).await;
    assert_eq!(
        confirmed.status,
        StatusCode::NO_CONTENT,
        "{}",
        confirmed.text()
    );
}

async fn an_expired_token_is_refused(backend: Backend) {
    let (app, _webhook) = with_webhook(backend).await;
    let alice = app
        .register_with_email("alice", PASSWORD, "alice@example.com")
        .await;
    let alice = UserId::parse(&Tokens::from(&alice).user_id).unwrap();
    // A token asked for 31 minutes ago, written as the gateway writes one.
    let store = app.deployment.database.store().await;
    let now = UnixMillis::now();
    let (token, token_hash) = new_reset_token();
    store
        .create_password_reset(NewReset {
            user_id: &alice,
            token_hash: &token_hash,
            created_at: now.minus(Duration::from_secs(31 * 60)),
            expires_at: now.minus(Duration::from_secs(60)),
        })
        .await
        .unwrap();
    app.confirm_reset(token.expose(), NEW_PASSWORD)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_reset_token");
    // The same row, a minute from expiry, works: only the time refused it.
    let (token, token_hash) = new_reset_token();
    store
        .create_password_reset(NewReset {
            user_id: &alice,
            token_hash: &token_hash,
            created_at: now.minus(Duration::from_secs(29 * 60)),
            expires_at: now.plus(Duration::from_secs(60)),
        })
        .await
        .unwrap();
    assert_eq!(hash_reset_token(token.expose()), token_hash);
    let confirmed = app.confirm_reset(token.expose(), NEW_PASSWORD).await;
    assert_eq!(
        confirmed.status,
        StatusCode::NO_CONTENT,
        "{}",
        confirmed.text()
    );
}

async fn unknown_and_malformed_tokens_are_refused(backend: Backend) {
    let (app, _webhook) = with_webhook(backend).await;
    let (unknown, _) = new_reset_token();
    for token in [unknown.expose(), "not a token", "x"] {
        app.confirm_reset(token, NEW_PASSWORD)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_reset_token");
    }
}

async fn a_disabled_account_cannot_be_reset(backend: Backend) {
    let (app, webhook) = with_webhook(backend).await;
    let alice = app
        .register_with_email("alice", PASSWORD, "alice@example.com")
        .await;
    let alice = UserId::parse(&Tokens::from(&alice).user_id).unwrap();
    app.request_reset(json!({ "username": "alice" })).await;
    let token = webhook.mailbox.next().await.token();
    let store = app.deployment.database.store().await;
    store
        .set_disabled(&alice, true, UnixMillis::now())
        .await
        .unwrap();
    app.confirm_reset(&token, NEW_PASSWORD)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_reset_token");
    // Nor is a mail sent for it.
    assert_accepted(&app.request_reset(json!({ "username": "alice" })).await);
    webhook
        .mailbox
        .assert_none_within(Duration::from_millis(500))
        .await;
}

async fn malformed_reset_bodies_are_invalid_requests(backend: Backend) {
    let (app, _webhook) = with_webhook(backend).await;
    for (body, field) in [
        (json!({}), "username or email"),
        (
            json!({ "username": "alice", "email": "alice@example.com" }),
            "username or email",
        ),
        (json!({ "username": "al ice" }), "username"),
        (json!({ "email": "alice" }), "email"),
        (json!({ "username": 5 }), "username"),
    ] {
        let response = app.request_reset(body).await;
        response.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
        let message = response.json()["message"].as_str().unwrap().to_string();
        assert!(message.contains(field), "{message}");
    }
    for (body, field) in [
        (json!({ "new_password": NEW_PASSWORD }), "token"),
        (
            json!({ "token": "", "new_password": NEW_PASSWORD }),
            "token",
        ),
        (json!({ "token": "abc" }), "new_password"),
        (
            json!({ "token": "abc", "new_password": "short" }),
            "new_password",
        ),
    ] {
        let response = app
            .post_json("/api/auth/password-reset/confirm", body)
            .await;
        response.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
        let message = response.json()["message"].as_str().unwrap().to_string();
        assert!(message.contains(field), "{message}");
    }
    let raw = app
        .send(
            Method::POST,
            "/api/auth/password-reset",
            &[],
            Some(Body::Raw("not json".into())),
        )
        .await;
    raw.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
}

async fn without_mail_the_reset_routes_are_not_found(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_up("alice").await;
    app.request_reset(json!({ "username": "alice" }))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    app.confirm_reset("whatever-token", NEW_PASSWORD)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}

async fn reset_requests_are_throttled_per_account_and_address(backend: Backend) {
    let (app, webhook) = with_webhook(backend).await;
    app.register_with_email("alice", PASSWORD, "alice@example.com")
        .await;
    for _ in 0..5 {
        assert_accepted(&app.request_reset(json!({ "username": "alice" })).await);
        webhook.mailbox.next().await;
    }
    let throttled = app.request_reset(json!({ "username": "ALICE" })).await;
    throttled.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(throttled.header("retry-after").is_some());
    // Another account from the same address still gets its mail.
    app.register_with_email("bob", PASSWORD, "bob@example.com")
        .await;
    assert_accepted(&app.request_reset(json!({ "username": "bob" })).await);
    assert_eq!(webhook.mailbox.next().await.to, "bob@example.com");
}

async fn a_cross_site_form_cannot_ask_for_a_reset(backend: Backend) {
    let (app, _webhook) = with_webhook(backend).await;
    let response = app
        .send(
            Method::POST,
            "/api/auth/password-reset",
            &[("origin", "https://evil.example")],
            Some(Body::Json(json!({ "username": "alice" }))),
        )
        .await;
    response.assert_error(StatusCode::FORBIDDEN, "csrf_rejected");
}

async fn failed_mail_is_retried_and_counted(backend: Backend) {
    let (app, webhook) = with_webhook_failing_first(backend, 1).await;
    app.register_with_email("alice", PASSWORD, "alice@example.com")
        .await;
    let started = Instant::now();
    assert_accepted(&app.request_reset(json!({ "username": "alice" })).await);
    // The answer did not wait for the failing webhook...
    assert!(started.elapsed() < Duration::from_secs(1));
    // ...and the mail arrives on the second attempt.
    let mail = webhook.mailbox.next().await;
    assert_eq!(webhook.attempts(), 2);
    // Counted once the webhook's answer is back, just after the mail.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut metrics = app.get("/metrics").await.text();
    while !metrics.contains("tollgate_mail_sent_total 1\n") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        metrics = app.get("/metrics").await.text();
    }
    assert!(
        metrics.contains("tollgate_mail_sent_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollgate_mail_failures_total 1\n"),
        "{metrics}"
    );
    let confirmed = app.confirm_reset(&mail.token(), NEW_PASSWORD).await;
    assert_eq!(
        confirmed.status,
        StatusCode::NO_CONTENT,
        "{}",
        confirmed.text()
    );
}

on_both_backends!(
    a_password_is_reset_through_the_mail_webhook,
    a_password_is_reset_through_smtp,
    a_reset_can_be_asked_for_by_email_address,
    unknown_accounts_get_the_same_answer_and_no_mail,
    unknown_accounts_take_as_long_as_known_ones,
    a_newer_request_voids_the_older_token,
    an_expired_token_is_refused,
    unknown_and_malformed_tokens_are_refused,
    a_disabled_account_cannot_be_reset,
    malformed_reset_bodies_are_invalid_requests,
    without_mail_the_reset_routes_are_not_found,
    reset_requests_are_throttled_per_account_and_address,
    a_cross_site_form_cannot_ask_for_a_reset,
    failed_mail_is_retried_and_counted,
);

/// `smtp://` upgrades with STARTTLS when the server offers it, `smtps://`
/// speaks TLS from the first byte, and either way the server's certificate
/// is checked against the system's trust store, which honours
/// `SSL_CERT_FILE` (hence a gateway process): a server whose certificate
/// another CA signed gets no mail, and the failures are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_mail_travels_over_verified_tls() {
    let trusted = TestCa::new("tollgate test CA");
    let stranger = TestCa::new("someone else's CA");
    let cases = [
        (
            "smtp",
            SinkTls::StartTls(trusted.server_config(&["127.0.0.1"])),
            true,
        ),
        (
            "smtps",
            SinkTls::Implicit(trusted.server_config(&["127.0.0.1"])),
            true,
        ),
        (
            "smtps",
            SinkTls::Implicit(stranger.server_config(&["127.0.0.1"])),
            false,
        ),
    ];
    for (scheme, tls, trusted_certificate) in cases {
        let sink = SmtpSink::start(tls).await;
        let deployment = Deployment::new(Backend::Sqlite).await;
        let gateway = Process::start_with_env(
            &deployment,
            &["--public-url", PUBLIC_URL, "--smtp-url", &sink.url(scheme)],
            &[("SSL_CERT_FILE", trusted.pem_file().as_os_str())],
        )
        .await;
        gateway
            .register_with_email("alice", PASSWORD, "alice@example.com")
            .await;
        assert_accepted(&gateway.request_reset(json!({ "username": "alice" })).await);
        if trusted_certificate {
            let mail = sink.mailbox.next().await;
            assert!(mail.encrypted, "{scheme}: the mail came over TLS");
            let confirmed = gateway.confirm_reset(&mail.token(), NEW_PASSWORD).await;
            assert_eq!(
                confirmed.status,
                StatusCode::NO_CONTENT,
                "{}",
                confirmed.text()
            );
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let failures_counted = || async {
            let metrics = gateway.get("/metrics").await.text();
            !metrics.contains("tollgate_mail_failures_total 0\n")
        };
        while !failures_counted().await {
            assert!(Instant::now() < deadline, "no mail failure counted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sink.mailbox
            .assert_none_within(Duration::from_millis(200))
            .await;
        let logs = gateway.logs();
        assert!(logs.contains("cannot send mail"), "{logs}");
        assert!(!logs.contains("#token="), "no link in the logs: {logs}");
    }
}
