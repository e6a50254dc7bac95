//! Login throttling (contract section 8): budgets kept in the database and
//! shared by every instance on it, client addresses behind proxies and on a
//! dual-stack listener, and the warning about a proxy left untrusted.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use tollgate::throttle::{LoginThrottle, ThrottleError};

use crate::faults::{LinkState, deployment_behind_a_link};
use crate::helpers::{Backend, Body, Deployment, GatewayClient, PASSWORD, TestApp, TestResponse};
use crate::on_both_backends;
use crate::operations::eventually;
use crate::process::Process;

/// The test client connects from loopback: trusted, it forwards for anyone.
const TRUST_LOOPBACK: [&str; 2] = ["--trusted-proxies", "127.0.0.0/8"];

/// A login forwarded for `client` by the proxy on loopback.
async fn login_from(
    gateway: &GatewayClient,
    client: &str,
    username: &str,
    password: &str,
) -> TestResponse {
    login_with(gateway, &[("x-forwarded-for", client)], username, password).await
}

async fn login_with(
    gateway: &GatewayClient,
    headers: &[(&str, &str)],
    username: &str,
    password: &str,
) -> TestResponse {
    let body = json!({ "username": username, "password": password });
    gateway
        .send(
            Method::POST,
            "/api/auth/login",
            headers,
            Some(Body::Json(body)),
        )
        .await
}

#[track_caller]
fn assert_limited(response: &TestResponse) -> u64 {
    response.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    response
        .header("retry-after")
        .expect("a 429 carries Retry-After")
        .parse()
        .expect("Retry-After in whole seconds")
}

async fn database(deployment: &Deployment) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(&deployment.database.url)
        .await
        .expect("connecting to the test database")
}

/// Moves every throttle counter `by` into the past, as if that much time
/// had gone by: the windows run on the database's clock, which a test
/// cannot move.
async fn age_counters(deployment: &Deployment, by: Duration) {
    let pool = database(deployment).await;
    sqlx::query(
        "UPDATE login_throttle SET window_start = window_start - $1, admitted_at = admitted_at - $1",
    )
    .bind(by.as_millis() as i64)
    .execute(&pool)
    .await
    .expect("ageing the counters");
    pool.close().await;
}

/// The events counted for `subject` under `budget`.
async fn events(deployment: &Deployment, budget: &str, subject: &str) -> Option<i64> {
    let pool = database(deployment).await;
    let events =
        sqlx::query_scalar("SELECT events FROM login_throttle WHERE budget = $1 AND subject = $2")
            .bind(budget)
            .bind(subject)
            .fetch_optional(&pool)
            .await
            .expect("reading the counters");
    pool.close().await;
    events
}

/// The subjects counted under `budget`, sorted.
async fn subjects(deployment: &Deployment, budget: &str) -> Vec<String> {
    let pool = database(deployment).await;
    let mut subjects: Vec<String> =
        sqlx::query_scalar("SELECT subject FROM login_throttle WHERE budget = $1")
            .bind(budget)
            .fetch_all(&pool)
            .await
            .expect("reading the counters");
    pool.close().await;
    subjects.sort();
    subjects
}

async fn failed_logins_are_throttled_per_user_and_address(backend: Backend) {
    let deployment = Deployment::new(backend).await;
    let app = deployment.spawn(&["--trusted-proxies", "10.0.0.0/8"]).await;
    app.signed_up("alice").await;
    for _ in 0..5 {
        app.login("alice", "wrong password")
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    let retry_after = assert_limited(&app.login("alice", PASSWORD).await);
    assert!(
        (15 * 60 - 5..=15 * 60).contains(&retry_after),
        "the window runs 15 minutes from the first failure: {retry_after}"
    );

    // The peer (loopback) is not a trusted proxy: its X-Forwarded-For is
    // ignored, so a made-up address does not reset the lock.
    assert_limited(&login_from(&app, "198.51.100.1", "alice", PASSWORD).await);

    // Another user from the same address is not locked.
    app.signed_up("bob").await;
    assert_eq!(app.login("bob", PASSWORD).await.status, StatusCode::OK);

    // Until the window passes.
    age_counters(&deployment, Duration::from_secs(15 * 60 - 30)).await;
    let retry_after = assert_limited(&app.login("alice", PASSWORD).await);
    assert!((25..=30).contains(&retry_after), "{retry_after}");
    age_counters(&deployment, Duration::from_secs(30)).await;
    assert_eq!(app.login("alice", PASSWORD).await.status, StatusCode::OK);
}

async fn concurrent_guesses_cannot_pass_the_pair_limit(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_up("alice").await;
    let guesses = (0..10).map(|_| app.login("alice", "wrong password"));
    let statuses: Vec<StatusCode> = futures_util::future::join_all(guesses)
        .await
        .iter()
        .map(|response| response.status)
        .collect();
    let checked = statuses
        .iter()
        .filter(|status| **status == StatusCode::UNAUTHORIZED)
        .count();
    let refused = statuses
        .iter()
        .filter(|status| **status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((checked, refused), (5, 5), "{statuses:?}");
}

async fn a_success_forgives_and_undecided_checks_give_their_count_back(backend: Backend) {
    let deployment = Deployment::new(backend).await;
    // A gateway migrates the database; the throttle is then driven directly.
    let _app = deployment.spawn(&[]).await;
    let throttle = LoginThrottle::new(deployment.database.store().await);
    let client: IpAddr = "198.51.100.1".parse().unwrap();
    let is_limited =
        |outcome: &Result<_, ThrottleError>| matches!(outcome, Err(ThrottleError::Limited { .. }));

    let mut under_way = Vec::new();
    for _ in 0..5 {
        under_way.push(throttle.begin("alice", client).await.unwrap());
    }
    assert!(
        is_limited(&throttle.begin("alice", client).await),
        "five checks under way count as five failures"
    );
    drop(under_way);
    let given_back = eventually(Duration::from_secs(5), async || {
        events(&deployment, "pair", "alice 198.51.100.1").await == Some(0)
    })
    .await;
    assert!(
        given_back,
        "checks dropped without a verdict give their count back"
    );
    for _ in 0..4 {
        throttle.begin("alice", client).await.unwrap().failed();
    }
    throttle
        .begin("alice", client)
        .await
        .unwrap()
        .succeeded()
        .await
        .unwrap();
    for _ in 0..5 {
        throttle.begin("alice", client).await.unwrap().failed();
    }
    assert!(
        is_limited(&throttle.begin("alice", client).await),
        "after a success, five new failures lock the pair again"
    );
}

async fn one_address_gets_thirty_login_attempts_a_minute(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let started = std::time::Instant::now();
    for n in 0..30 {
        let response = app.login(&format!("nobody{n}"), "wrong password").await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    }
    let retry_after = assert_limited(&app.login("nobody-else", "wrong password").await);
    // The minute started with the first attempt; on a busy machine the
    // thirty take a while.
    let earliest = 60 - started.elapsed().as_secs() - 2;
    assert!((earliest..=60).contains(&retry_after), "{retry_after}");
}

async fn registrations_count_against_the_address_budget(backend: Backend) {
    let app = TestApp::spawn_with(backend, &TRUST_LOOPBACK).await;
    let register_from = async |client: &str, username: &str| {
        let body = json!({ "username": username, "password": PASSWORD });
        app.send(
            Method::POST,
            "/api/auth/register",
            &[("x-forwarded-for", client)],
            Some(Body::Json(body)),
        )
        .await
    };
    for n in 0..30 {
        let response = register_from("198.51.100.1", &format!("user{n}")).await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.text());
    }
    assert_limited(&register_from("198.51.100.1", "one-more").await);
    assert_limited(&login_from(&app, "198.51.100.1", "user0", PASSWORD).await);
    assert_eq!(
        register_from("198.51.100.2", "one-more").await.status,
        StatusCode::CREATED,
        "another address has a budget of its own"
    );
}

async fn guessing_the_current_password_is_throttled(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tokens = app.signed_up("alice").await;
    for _ in 0..5 {
        app.change_password(&tokens.access, "not the password", "a new password")
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    assert_limited(
        &app.change_password(&tokens.access, PASSWORD, "a new password")
            .await,
    );
    assert_eq!(
        app.login("alice", PASSWORD).await.status,
        StatusCode::OK,
        "guesses at the password change do not lock the login"
    );
}

async fn a_username_is_slowed_not_locked_after_twenty_failures(backend: Backend) {
    let deployment = Deployment::new(backend).await;
    let app = deployment.spawn(&TRUST_LOOPBACK).await;
    app.signed_up("alice").await;
    app.signed_up("bob").await;
    for n in 0..20 {
        login_from(&app, &format!("198.51.100.{n}"), "alice", "wrong password")
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    let retry_after = assert_limited(&login_from(&app, "203.0.113.1", "alice", PASSWORD).await);
    assert!((55..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        login_from(&app, "203.0.113.1", "bob", PASSWORD)
            .await
            .status,
        StatusCode::OK,
        "other users are not slowed"
    );

    // One attempt a minute passes: the real user gets in.
    age_counters(&deployment, Duration::from_secs(60)).await;
    assert_eq!(
        login_from(&app, "203.0.113.1", "alice", PASSWORD)
            .await
            .status,
        StatusCode::OK
    );
    let retry_after = assert_limited(&login_from(&app, "203.0.113.2", "alice", PASSWORD).await);
    assert!((55..=60).contains(&retry_after), "{retry_after}");

    // Once the window passes, the username is not slowed any more.
    age_counters(&deployment, Duration::from_secs(15 * 60)).await;
    assert_eq!(
        login_from(&app, "203.0.113.2", "alice", "wrong password")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login_from(&app, "203.0.113.3", "alice", PASSWORD)
            .await
            .status,
        StatusCode::OK
    );
}

/// Two gateways on one Postgres database spend the same budgets: N
/// instances allow no more guesses than one.
async fn two_instances_share_every_budget(backend: Backend) {
    let deployment = Deployment::new(backend).await;
    let a = deployment.spawn(&TRUST_LOOPBACK).await;
    let b = deployment.spawn(&TRUST_LOOPBACK).await;
    a.signed_up("alice").await;
    b.signed_up("bob").await;

    // A pair's five failures, split across the instances, lock it on both.
    for gateway in [&a, &b, &a, &b, &a] {
        login_from(gateway, "198.51.100.1", "alice", "wrong password")
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    assert_limited(&login_from(&b, "198.51.100.1", "alice", PASSWORD).await);
    assert_limited(&login_from(&a, "198.51.100.1", "alice", PASSWORD).await);

    // Forty guesses at once from forty addresses, half on each instance:
    // twenty are checked, as on one instance.
    let guesses = (0..40).map(|n| {
        let gateway = if n % 2 == 0 { &a } else { &b };
        async move { login_from(gateway, &format!("203.0.113.{n}"), "bob", "wrong password").await }
    });
    let statuses: Vec<StatusCode> = futures_util::future::join_all(guesses)
        .await
        .iter()
        .map(|response| response.status)
        .collect();
    let checked = statuses
        .iter()
        .filter(|status| **status == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(checked, 20, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|status| *status == StatusCode::UNAUTHORIZED
                || *status == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );

    // The real user, from an address of their own, is slowed, not locked
    // out: one attempt a minute passes, on whichever instance.
    let retry_after = assert_limited(&login_from(&b, "192.0.2.1", "bob", PASSWORD).await);
    assert!((55..=60).contains(&retry_after), "{retry_after}");
    age_counters(&deployment, Duration::from_secs(60)).await;
    assert_eq!(
        login_from(&a, "192.0.2.1", "bob", PASSWORD).await.status,
        StatusCode::OK
    );
    assert_limited(&login_from(&b, "192.0.2.2", "bob", "wrong password").await);

    // An address's thirty attempts a minute, split across the instances.
    for n in 0..30 {
        let gateway = if n % 2 == 0 { &a } else { &b };
        let response = login_from(
            gateway,
            "198.51.100.99",
            &format!("nobody{n}"),
            "wrong password",
        )
        .await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED, "attempt {n}");
    }
    assert_limited(&login_from(&a, "198.51.100.99", "nobody", "wrong password").await);
    assert_limited(&login_from(&b, "198.51.100.99", "nobody", "wrong password").await);
}

async fn ipv6_clients_count_per_64_and_mapped_ipv4_as_ipv4(backend: Backend) {
    let app = TestApp::spawn_with(backend, &TRUST_LOOPBACK).await;
    app.signed_up("alice").await;
    for n in 1..=5 {
        login_from(
            &app,
            &format!("2001:db8:1:2::{n}"),
            "alice",
            "wrong password",
        )
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    assert_limited(&login_from(&app, "2001:db8:1:2:ffff::1", "alice", PASSWORD).await);
    assert_eq!(
        login_from(&app, "2001:db8:1:3::1", "alice", PASSWORD)
            .await
            .status,
        StatusCode::OK,
        "another /64 is another client"
    );

    app.signed_up("bob").await;
    for _ in 0..5 {
        login_from(&app, "::ffff:198.51.100.7", "bob", "wrong password")
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    assert_limited(&login_from(&app, "198.51.100.7", "bob", PASSWORD).await);
}

async fn a_dual_stack_listener_sees_ipv4_peers_as_ipv4(backend: Backend) {
    let deployment = Deployment::new(backend).await;
    let mut config = deployment.config(&TRUST_LOOPBACK);
    config.listen = "[::]:0".parse().unwrap();
    let app = TestApp::start(deployment.clone(), config).await;
    let port = app.addr.port();
    let over_ipv4 = GatewayClient::new(SocketAddr::from(([127, 0, 0, 1], port)));
    let over_ipv6 = GatewayClient::new(SocketAddr::from((Ipv6Addr::LOCALHOST, port)));
    over_ipv4.signed_up("alice").await;

    // The IPv4 peer arrives as ::ffff:127.0.0.1, counts as 127.0.0.1 and is
    // a trusted proxy: the clients it forwards for have budgets of their own.
    for _ in 0..5 {
        login_from(&over_ipv4, "198.51.100.1", "alice", "wrong password")
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    assert_limited(&login_from(&over_ipv4, "198.51.100.1", "alice", PASSWORD).await);
    assert_eq!(
        login_from(&over_ipv4, "198.51.100.2", "alice", PASSWORD)
            .await
            .status,
        StatusCode::OK
    );

    // ::1 is not in 127.0.0.0/8: what it forwards is ignored and it is the
    // client, counted by its /64.
    for n in 0..5 {
        login_from(
            &over_ipv6,
            &format!("198.51.100.{}", 10 + n),
            "alice",
            "wrong password",
        )
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    assert_limited(&login_from(&over_ipv6, "198.51.100.50", "alice", PASSWORD).await);

    assert_eq!(
        subjects(&deployment, "address").await,
        ["127.0.0.1", "198.51.100.1", "198.51.100.2", "::/64"],
        "the registration counted for the IPv4 peer itself"
    );
}

async fn the_client_ip_header_names_the_client_from_trusted_proxies_only(backend: Backend) {
    let trusted = TestApp::spawn_with(
        backend,
        &[
            "--trusted-proxies",
            "127.0.0.0/8",
            "--client-ip-header",
            "Fly-Client-IP",
        ],
    )
    .await;
    trusted.signed_up("alice").await;
    for n in 0..5 {
        let forwarded = format!("203.0.113.{n}");
        let headers = [
            ("fly-client-ip", "198.51.100.1"),
            ("x-forwarded-for", forwarded.as_str()),
        ];
        login_with(&trusted, &headers, "alice", "wrong password")
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    let same_client = [
        ("fly-client-ip", "198.51.100.1"),
        ("x-forwarded-for", "203.0.113.99"),
    ];
    assert_limited(&login_with(&trusted, &same_client, "alice", PASSWORD).await);
    let other_client = [("fly-client-ip", "198.51.100.2")];
    assert_eq!(
        login_with(&trusted, &other_client, "alice", PASSWORD)
            .await
            .status,
        StatusCode::OK
    );

    let untrusted = TestApp::spawn_with(backend, &["--client-ip-header", "Fly-Client-IP"]).await;
    untrusted.signed_up("alice").await;
    for n in 0..5 {
        let client = format!("198.51.100.{n}");
        login_with(
            &untrusted,
            &[("fly-client-ip", client.as_str())],
            "alice",
            "wrong password",
        )
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    assert_limited(
        &login_with(
            &untrusted,
            &[("fly-client-ip", "198.51.100.99")],
            "alice",
            PASSWORD,
        )
        .await,
    );
}

async fn old_counters_are_deleted(backend: Backend) {
    let deployment = Deployment::new(backend).await;
    let app = deployment.spawn(&TRUST_LOOPBACK).await;
    app.signed_up("alice").await;
    login_from(&app, "198.51.100.1", "alice", "wrong password").await;
    age_counters(&deployment, Duration::from_secs(15 * 60 + 1)).await;
    login_from(&app, "198.51.100.2", "bob", "wrong password").await;
    let fresh = [
        "198.51.100.2".to_string(),
        "bob".to_string(),
        "bob 198.51.100.2".to_string(),
    ];
    let all = async || {
        let mut all = Vec::new();
        for budget in ["address", "account", "pair"] {
            all.extend(subjects(&deployment, budget).await);
        }
        all.sort();
        all
    };
    assert_eq!(all().await.len(), 7, "{:?}", all().await);

    // Cleanup runs when a gateway starts, then every 15 minutes.
    let _second = deployment.spawn(&[]).await;
    let cleaned = eventually(Duration::from_secs(10), async || all().await == fresh).await;
    assert!(cleaned, "{:?}", all().await);
}

on_both_backends!(
    failed_logins_are_throttled_per_user_and_address,
    concurrent_guesses_cannot_pass_the_pair_limit,
    a_success_forgives_and_undecided_checks_give_their_count_back,
    one_address_gets_thirty_login_attempts_a_minute,
    registrations_count_against_the_address_budget,
    guessing_the_current_password_is_throttled,
    a_username_is_slowed_not_locked_after_twenty_failures,
    ipv6_clients_count_per_64_and_mapped_ipv4_as_ipv4,
    a_dual_stack_listener_sees_ipv4_peers_as_ipv4,
    the_client_ip_header_names_the_client_from_trusted_proxies_only,
    old_counters_are_deleted,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgres_share_every_budget() {
    two_instances_share_every_budget(Backend::Postgres).await;
}

/// Without the database nothing is admitted (it could not log anyone in
/// anyway): 503 with Retry-After, and nothing counted or lost meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_database_nothing_is_admitted_and_nothing_is_lost() {
    let (deployment, link) = deployment_behind_a_link().await;
    let app = deployment.spawn(&TRUST_LOOPBACK).await;
    let tokens = app.signed_up("alice").await;
    for _ in 0..4 {
        login_from(&app, "198.51.100.1", "alice", "wrong password")
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }

    link.set(LinkState::Refusing);
    for response in [
        login_from(&app, "198.51.100.1", "alice", PASSWORD).await,
        app.register("bob", PASSWORD).await,
        app.change_password(&tokens.access, PASSWORD, "a new password")
            .await,
    ] {
        response.assert_error(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable");
        assert!(response.header("retry-after").is_some());
    }

    link.set(LinkState::Up);
    let recovered = eventually(Duration::from_secs(15), async || {
        app.send(Method::GET, "/health/detailed", &[], None)
            .await
            .status
            == StatusCode::OK
    })
    .await;
    assert!(recovered);
    login_from(&app, "198.51.100.1", "alice", "wrong password")
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert_limited(&login_from(&app, "198.51.100.1", "alice", PASSWORD).await);
}

/// A GET /health from `source` (another loopback address) carrying
/// `X-Forwarded-For`, on a connection of its own.
async fn forwarded_health_check_from(source: IpAddr, gateway: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let mut stream = socket.connect(gateway).await.unwrap();
    stream
        .write_all(
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.7\r\n\
              Connection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// The warnings about an untrusted proxy in a gateway's logs.
fn untrusted_proxy_warnings(logs: &str) -> Vec<serde_json::Value> {
    logs.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| {
            event["level"] == "WARN"
                && event["message"]
                    .as_str()
                    .is_some_and(|message| message.contains("--trusted-proxies"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_peer_forwarding_untrusted_is_warned_about_once_per_peer() {
    let deployment = Deployment::new(Backend::Sqlite).await;
    let gateway = Process::start(&deployment, &[]).await;
    gateway.get("/health").await;
    gateway.register("alice", PASSWORD).await;
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let other_loopback: IpAddr = "127.0.0.2".parse().unwrap();
    for source in [loopback, loopback, other_loopback, loopback, other_loopback] {
        let answer = forwarded_health_check_from(source, gateway.addr).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let warned = eventually(Duration::from_secs(2), async || {
        untrusted_proxy_warnings(&gateway.logs()).len() >= 2
    })
    .await;
    assert!(warned, "{}", gateway.logs());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let warnings = untrusted_proxy_warnings(&gateway.logs());
    let peers: Vec<&str> = warnings
        .iter()
        .map(|warning| warning["peer"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(peers, ["127.0.0.1", "127.0.0.2"], "once per peer");
    assert!(
        warnings
            .iter()
            .all(|warning| !warning["span"]["request_id"].is_null()
                || !warning["request_id"].is_null()),
        "the warning names the request it came with: {warnings:?}"
    );

    let trusting = Process::start(&deployment, &TRUST_LOOPBACK).await;
    let answer = forwarded_health_check_from(loopback, trusting.addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        untrusted_proxy_warnings(&trusting.logs()).is_empty(),
        "a trusted proxy is not warned about"
    );
}
