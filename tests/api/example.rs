//! The example ticket API (`examples/ticket_api.rs`) as a child process, as
//! a user runs it behind the gateway.
//!
//! The tests build it with the cargo that runs them
//! (`cargo build --example ticket_api --message-format=json`) and start the
//! executable cargo reports: never a stale binary, whatever the profile or
//! target directory, and nothing for CI to build beforehand.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::Value;

use crate::helpers::{Backend, Deployment, GatewayClient, PASSWORD, Tokens};

/// The example's executable, built once per test run.
fn executable() -> PathBuf {
    static EXECUTABLE: OnceLock<PathBuf> = OnceLock::new();
    EXECUTABLE
        .get_or_init(|| {
            let output = Command::new(env!("CARGO"))
                .args([
                    "build",
                    "--example",
                    "ticket_api",
                    "--message-format=json-render-diagnostics",
                ])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .stderr(Stdio::inherit())
                .output()
                .expect("running cargo build --example ticket_api");
            assert!(output.status.success(), "the example does not build");
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .filter(|message| {
                    message["reason"] == "compiler-artifact"
                        && message["target"]["name"] == "ticket_api"
                })
                .find_map(|message| message["executable"].as_str().map(PathBuf::from))
                .expect("cargo names the example's executable")
        })
        .clone()
}

/// The ticket API on a loopback port, reading keys and revocations from
/// the gateway at `gateway_url`. Its requests are those of
/// [`GatewayClient`], which it dereferences to.
pub struct TicketApi {
    child: Child,
    client: GatewayClient,
}

impl Deref for TicketApi {
    type Target = GatewayClient;

    fn deref(&self) -> &GatewayClient {
        &self.client
    }
}

impl TicketApi {
    pub async fn start(gateway_url: &str) -> TicketApi {
        let executable = tokio::task::spawn_blocking(executable).await.unwrap();
        let mut child = Command::new(executable)
            .args(["--listen", "127.0.0.1:0", "--gateway-url", gateway_url])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the example");
        let stdout = child.stdout.take().unwrap();
        let addr = tokio::task::spawn_blocking(move || {
            // "ticket API on http://ADDR (gateway …)"
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).unwrap();
            line.split_whitespace()
                .find_map(|word| word.strip_prefix("http://"))
                .and_then(|addr| addr.parse::<SocketAddr>().ok())
                .unwrap_or_else(|| panic!("the example did not say where it listens: {line:?}"))
        })
        .await
        .unwrap();
        TicketApi {
            child,
            client: GatewayClient::new(addr),
        }
    }

    pub fn url(&self) -> String {
        self.client.url("")
    }
}

impl Drop for TicketApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Contract section 11: an upstream polling the feed every 2 s refuses a
/// revoked session's tokens within the bound the gateway keeps (5 s), here
/// with the revocation made on one instance and the feed read from another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_refuses_a_revoked_session_as_soon_as_the_gateway_does() {
    let deployment = Deployment::new(Backend::Postgres).await;
    let read_from = deployment.spawn(&[]).await;
    let api = TicketApi::start(&read_from.url("")).await;
    let gateway = deployment.spawn(&["--upstream", &api.url()]).await;

    let alice = gateway.signed_up("alice").await;
    let kept = Tokens::from(&gateway.login("alice", PASSWORD).await);
    for client in [&*gateway, &*api] {
        let response = client.get_with_token("/api/tickets", &alice.access).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    }

    assert_eq!(
        gateway.logout(&alice.access).await.status,
        StatusCode::NO_CONTENT
    );
    let logged_out = Instant::now();
    gateway
        .get_with_token("/api/tickets", &alice.access)
        .await
        .assert_rejected("revoked");
    // Straight to the API, as a caller that bypassed the gateway would.
    loop {
        let response = api.get_with_token("/api/tickets", &alice.access).await;
        if response.status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        assert!(
            logged_out.elapsed() < Duration::from_secs(5),
            "the example still accepts the revoked session"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = api.get_with_token("/api/tickets", &kept.access).await;
    assert_eq!(
        response.status,
        StatusCode::OK,
        "the other session of the user is not revoked"
    );
}
