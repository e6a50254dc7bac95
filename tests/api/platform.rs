//! What platforms set and expect: `PORT` (IPv4 and IPv6 on one port), and an
//! admin listener that keeps metrics and detailed health off the public port.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use http::StatusCode;
use serde_json::Value;

use crate::helpers::{Backend, Deployment, GatewayClient, PASSWORD, TestApp, Tokens};
use crate::on_both_backends;
use crate::process::Process;

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The addresses the sessions of `tokens`' user were recorded with.
async fn session_addresses(gateway: &GatewayClient, tokens: &Tokens) -> Vec<String> {
    let sessions = gateway.sessions(&tokens.access).await;
    assert_eq!(sessions.status, StatusCode::OK, "{}", sessions.text());
    let mut addresses: Vec<String> = sessions
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|session| session["ip"].as_str().unwrap_or("none").to_string())
        .collect();
    addresses.sort();
    addresses
}

async fn with_port_set_it_listens_on_ipv4_and_ipv6_and_sees_ipv4_clients_as_ipv4(backend: Backend) {
    let deployment = Deployment::new(backend).await;
    let port = free_port();
    let gateway = Process::start_with_port(port, &deployment, &[]).await;
    assert_eq!(
        gateway.addr,
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
        "[::]:$PORT"
    );
    let over_ipv4 = GatewayClient::new(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    let over_ipv6 = GatewayClient::new(SocketAddr::from((Ipv6Addr::LOCALHOST, port)));

    let tokens = over_ipv4.signed_up("alice").await;
    assert_eq!(session_addresses(&over_ipv4, &tokens).await, ["127.0.0.1"]);
    let login = over_ipv6.login("alice", PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());
    assert_eq!(
        session_addresses(&over_ipv6, &tokens).await,
        ["127.0.0.1", "::1"]
    );
    let logs = gateway.logs();
    assert!(!logs.contains("::ffff:"), "{logs}");
}

async fn the_admin_listener_alone_serves_metrics_and_detailed_health(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--admin-listen", "127.0.0.1:0"]).await;
    let admin = app.admin.as_ref().expect("an admin listener");
    let metrics = admin.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK, "{}", metrics.text());
    assert!(metrics.text().contains("tollgate_"), "{}", metrics.text());
    let detailed = admin.get("/health/detailed").await;
    assert_eq!(detailed.status, StatusCode::OK, "{}", detailed.text());
    assert_eq!(detailed.json()["database"]["ok"], Value::Bool(true));

    for path in ["/metrics", "/health/detailed"] {
        app.get(path)
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    assert_eq!(
        app.get("/health").await.status,
        StatusCode::OK,
        "the probe path stays public"
    );
    let tokens = app.signed_up("alice").await;
    assert_eq!(app.me(&tokens.access).await.status, StatusCode::OK);
    assert_eq!(
        admin.me(&tokens.access).await.status,
        StatusCode::NOT_FOUND,
        "the admin port serves nothing else"
    );

    let without = TestApp::spawn(backend).await;
    assert_eq!(without.get("/metrics").await.status, StatusCode::OK);
}

on_both_backends!(
    with_port_set_it_listens_on_ipv4_and_ipv6_and_sees_ipv4_clients_as_ipv4,
    the_admin_listener_alone_serves_metrics_and_detailed_health,
);
