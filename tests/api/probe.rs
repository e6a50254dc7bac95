//! `tollgate probe`, the real binary, against a real gateway started in this
//! process on port 0 (SQLite is enough: the probe only speaks HTTP).

use std::process::Stdio;
use std::time::Duration;

use http::{Method, StatusCode};
use tokio::io::AsyncWriteExt;

use crate::helpers::{Backend, PASSWORD, TestApp};
use crate::mailbox::{SinkTls, SmtpSink, WebhookReceiver};
use crate::upstream::EchoUpstream;

/// What one run of the probe printed, and how it ended.
struct ProbeRun {
    success: bool,
    stdout: String,
    stderr: String,
}

impl ProbeRun {
    /// The line of the check `name`.
    #[track_caller]
    fn line(&self, name: &str) -> &str {
        self.stdout
            .lines()
            .find(|line| line.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no line for the {name} check in:\n{}", self.stdout))
    }

    /// The lines of the checks, without the first and the summary.
    fn check_lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|line| {
                line.starts_with("ok ") || line.starts_with("warn ") || line.starts_with("fail ")
            })
            .collect()
    }

    /// Neither the password nor anything token-like: tokens and cookie
    /// values are runs of 40 or more base64url characters; the longest
    /// thing the probe prints on purpose is a 22-character kid.
    #[track_caller]
    fn assert_no_secrets(&self, password: &str) {
        for output in [&self.stdout, &self.stderr] {
            assert!(!output.contains(password), "the password leaked:\n{output}");
            let longest = output
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                .map(str::len)
                .max()
                .unwrap_or(0);
            assert!(longest < 40, "something token-like leaked:\n{output}");
        }
    }
}

async fn probe(app: &TestApp, username: &str, password: &str, extra: &[&str]) -> ProbeRun {
    probe_url(&app.url(""), username, password, extra).await
}

/// Runs `tollgate probe <url>` with the password on stdin.
async fn probe_url(url: &str, username: &str, password: &str, extra: &[&str]) -> ProbeRun {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("probe")
        .arg(url)
        .args(["--username", username, "--password-stdin"])
        .args(extra)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the tollgate binary runs");
    let mut stdin = child.stdin.take().expect("a piped stdin");
    stdin
        .write_all(format!("{password}\n").as_bytes())
        .await
        .expect("writing the password");
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the probe finishes in time")
        .expect("the probe's output");
    let run = ProbeRun {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    println!("{}{}", run.stdout, run.stderr);
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_passes_against_a_healthy_gateway_and_ends_its_session() {
    let upstream = EchoUpstream::start().await;
    let app = TestApp::spawn_with(Backend::Sqlite, &["--upstream", &upstream.url()]).await;
    let tokens = app.signed_up("alice").await;

    // The default proxied path, /api/tickets, through a real upstream.
    let run = probe(&app, "alice", PASSWORD, &[]).await;
    assert_eq!(upstream.last().path, "/api/tickets");

    assert!(run.success, "{}{}", run.stdout, run.stderr);
    let names: Vec<&str> = run
        .check_lines()
        .iter()
        .map(|line| line.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "health",
            "reset",
            "login",
            "cookies",
            "me-bearer",
            "me-cookie",
            "refresh",
            "jwks",
            "proxy",
            "logout"
        ]
    );
    for line in run.check_lines() {
        assert!(line.starts_with("ok "), "{line}");
    }
    // Lax cookies: fine, with a word for frontends on another site.
    assert!(
        run.line("cookies").contains("bearer mode"),
        "{}",
        run.line("cookies")
    );
    assert!(run.line("proxy").contains("200"), "{}", run.line("proxy"));
    assert!(
        run.stdout.ends_with("probe: 10 ok, 0 warn, 0 fail\n"),
        "{}",
        run.stdout
    );
    run.assert_no_secrets(PASSWORD);

    // Only alice's own session is left: the probe logged its one out.
    let sessions = app
        .send(
            Method::GET,
            "/api/auth/sessions",
            &[("authorization", &format!("Bearer {}", tokens.access))],
            None,
        )
        .await;
    assert_eq!(sessions.status, StatusCode::OK, "{}", sessions.text());
    assert_eq!(
        sessions.json().as_array().map(Vec::len),
        Some(1),
        "{}",
        sessions.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_the_login_check_and_skips_the_rest() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.signed_up("alice").await;
    let wrong = "not the password at all";

    let run = probe(&app, "alice", wrong, &["--path", "/api/auth/me"]).await;

    assert!(!run.success);
    assert!(run.line("health").starts_with("ok "));
    let login = run.line("login");
    assert!(login.starts_with("fail "), "{login}");
    assert!(login.contains("401 invalid_credentials"), "{login}");
    assert!(
        login.contains("fix: check the username/password"),
        "{login}"
    );
    let logout = run.line("logout");
    assert!(
        logout.starts_with("fail ") && logout.contains("skipped because the login check failed"),
        "{logout}"
    );
    run.assert_no_secrets(wrong);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_site_none_without_secure_fails_the_cookie_check() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &["--cookie-samesite", "none", "--cookie-secure=false"],
    )
    .await;
    app.signed_up("alice").await;

    let run = probe(&app, "alice", PASSWORD, &["--path", "/api/auth/me"]).await;

    assert!(!run.success);
    let cookies = run.line("cookies");
    assert!(cookies.starts_with("fail "), "{cookies}");
    assert!(
        cookies.contains("SameSite=None without Secure"),
        "{cookies}"
    );
    assert!(
        cookies.contains("fix: start the gateway with --cookie-secure=true"),
        "{cookies}"
    );
    // The gateway itself still reads the cookie: only browsers would drop it.
    assert!(
        run.line("me-cookie").starts_with("ok "),
        "{}",
        run.line("me-cookie")
    );
    run.assert_no_secrets(PASSWORD);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_upstream_the_proxy_check_says_to_configure_one() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.signed_up("alice").await;

    // The default --path, /api/tickets, goes to the upstream.
    let run = probe(&app, "alice", PASSWORD, &[]).await;

    assert!(!run.success);
    let proxy = run.line("proxy");
    assert!(proxy.starts_with("fail "), "{proxy}");
    assert!(proxy.contains("GET /api/tickets"), "{proxy}");
    assert!(proxy.contains("502 upstream_not_configured"), "{proxy}");
    assert!(proxy.contains("--upstream"), "{proxy}");
    // The session is still cleaned up.
    assert!(
        run.line("logout").starts_with("ok "),
        "{}",
        run.line("logout")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_gateway_fails_health_and_skips_the_rest() {
    // A loopback port that nothing listens on any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding port 0");
    let url = format!("http://{}", listener.local_addr().expect("a bound address"));
    drop(listener);

    let run = probe_url(&url, "alice", PASSWORD, &[]).await;

    assert!(!run.success);
    let health = run.line("health");
    assert!(
        health.starts_with("fail ") && health.contains("connection refused"),
        "{health}"
    );
    assert!(health.contains("fix: nothing listens at"), "{health}");
    for name in ["reset", "login", "jwks", "logout"] {
        let line = run.line(name);
        assert!(
            line.contains("skipped because the health check failed"),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_says_whether_password_reset_is_configured() {
    let without = TestApp::spawn(Backend::Sqlite).await;
    without.signed_up("alice").await;
    let run = probe(&without, "alice", PASSWORD, &["--path", "/api/auth/me"]).await;
    let reset = run.line("reset");
    assert!(
        reset.starts_with("ok ") && reset.contains("not configured"),
        "{reset}"
    );
    assert!(reset.contains("--smtp-url"), "{reset}");

    let webhook = WebhookReceiver::failing_first(0).await;
    let with = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            "--public-url",
            "https://auth.example.com",
            "--mail-webhook",
            &webhook.url(),
        ],
    )
    .await;
    with.signed_up("alice").await;
    let run = probe(&with, "alice", PASSWORD, &["--path", "/api/auth/me"]).await;
    let reset = run.line("reset");
    assert!(
        reset.starts_with("ok ") && reset.contains("is configured"),
        "{reset}"
    );
    // Without --check-mail, no mail check.
    assert!(
        run.check_lines()
            .iter()
            .all(|line| line.split_whitespace().nth(1) != Some("mail"))
    );
    // Asking told nothing to anyone: no mail, no throttle counted.
    webhook
        .mailbox
        .assert_none_within(Duration::from_millis(300))
        .await;
    assert_eq!(webhook.attempts(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_mail_sends_one_test_mail_through_the_gateway() {
    let sink = SmtpSink::start(SinkTls::None).await;
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            "--public-url",
            "https://auth.example.com",
            "--smtp-url",
            &sink.url("smtp"),
        ],
    )
    .await;
    app.signed_up_with_roles("root", &["admin"]).await;
    let run = probe(
        &app,
        "root",
        PASSWORD,
        &["--path", "/api/auth/me", "--check-mail", "ops@example.com"],
    )
    .await;
    assert!(run.success, "{}{}", run.stdout, run.stderr);
    let mail_line = run.line("mail");
    assert!(
        mail_line.starts_with("ok ") && mail_line.contains("ops@example.com"),
        "{mail_line}"
    );
    let names: Vec<&str> = run
        .check_lines()
        .iter()
        .map(|line| line.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(&names[names.len() - 3..], ["proxy", "mail", "logout"]);
    let mail = sink.mailbox.next().await;
    assert_eq!(mail.to, "ops@example.com");
    assert!(mail.text.contains("test mail"), "{}", mail.text);
    sink.mailbox
        .assert_none_within(Duration::from_millis(300))
        .await;
    run.assert_no_secrets(PASSWORD);

    // Not an admin: no mail, and the line says why.
    app.signed_up("alice").await;
    let run = probe(
        &app,
        "alice",
        PASSWORD,
        &["--path", "/api/auth/me", "--check-mail", "ops@example.com"],
    )
    .await;
    assert!(!run.success);
    let mail_line = run.line("mail");
    assert!(
        mail_line.starts_with("fail ") && mail_line.contains("insufficient_role"),
        "{mail_line}"
    );
    assert!(mail_line.contains("--role admin"), "{mail_line}");
    sink.mailbox
        .assert_none_within(Duration::from_millis(300))
        .await;

    // A bad address is refused before anything is asked.
    let run = probe(&app, "root", PASSWORD, &["--check-mail", "not-an-address"]).await;
    assert!(!run.success);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(run.stderr.contains("--check-mail"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_mail_reports_the_mail_servers_refusal_or_missing_mail() {
    // A webhook that fails: one attempt, its answer in the line.
    let webhook = WebhookReceiver::failing_first(100).await;
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            "--public-url",
            "https://auth.example.com",
            "--mail-webhook",
            &webhook.url(),
        ],
    )
    .await;
    app.signed_up_with_roles("root", &["admin"]).await;
    let extra = ["--path", "/api/auth/me", "--check-mail", "ops@example.com"];
    let run = probe(&app, "root", PASSWORD, &extra).await;
    assert!(!run.success);
    let mail_line = run.line("mail");
    assert!(
        mail_line.starts_with("fail ") && mail_line.contains("502 bad_gateway"),
        "{mail_line}"
    );
    assert!(mail_line.contains("503"), "{mail_line}");
    assert_eq!(webhook.attempts(), 1);

    // No mail at all on the gateway.
    let without = TestApp::spawn(Backend::Sqlite).await;
    without.signed_up_with_roles("root", &["admin"]).await;
    let run = probe(&without, "root", PASSWORD, &extra).await;
    assert!(!run.success);
    let mail_line = run.line("mail");
    assert!(
        mail_line.starts_with("fail ") && mail_line.contains("mail is not set up"),
        "{mail_line}"
    );
}
