//! The example ticket app (`examples/ticket_api/`, with its frontend in
//! `examples/ticket_web/`) as a child process, as a user runs it behind the
//! gateway.
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

use futures_util::StreamExt;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::helpers::{Backend, Body, Deployment, GatewayClient, PASSWORD, TestApp, Tokens};

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

/// A WebSocket to the example's live endpoint, straight to it (the gateway's
/// tunnel is tested on its own), with `access_token` as the gateway forwards
/// it.
async fn live(
    api: &TicketApi,
    access_token: Option<&str>,
) -> Result<LiveSocket, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://{}/api/tickets/live", api.addr)
        .into_client_request()
        .unwrap();
    if let Some(token) = access_token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

type LiveSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next message that is not a ping or pong, within `limit`.
async fn next_message(socket: &mut LiveSocket, limit: Duration) -> Message {
    tokio::time::timeout(limit, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(message)) => return message,
                other => panic!("the live connection ended: {other:?}"),
            }
        }
    })
    .await
    .expect("a message in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_websocket_streams_new_tickets_until_the_session_is_revoked() {
    let gateway = TestApp::spawn(Backend::Sqlite).await;
    let api = TicketApi::start(&gateway.url("")).await;
    let alice = gateway.signed_up("alice").await;

    for token in [None, Some("not-a-token")] {
        match live(&api, token).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{token:?}")
            }
            other => panic!("{token:?}: the handshake was not refused: {other:?}"),
        }
    }

    let mut socket = live(&api, Some(&alice.access)).await.expect("a handshake");
    let created = api
        .post_with_token(
            "/api/tickets",
            &alice.access,
            Some(json!({ "title": "printer on fire" })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    // Generous: the example is a child process, and the suite shares two
    // cores with it.
    let message = next_message(&mut socket, Duration::from_secs(10)).await;
    let message: Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
    assert_eq!(message["type"], "ticket_created");
    assert_eq!(message["ticket"]["title"], "printer on fire");
    assert_eq!(message["ticket"], created.json());

    // The API learns of the logout from the feed and closes the connection
    // as the gateway's tunnel would: 1008, "session revoked".
    assert_eq!(
        gateway.logout(&alice.access).await.status,
        StatusCode::NO_CONTENT
    );
    // It polls every 2 s.
    match next_message(&mut socket, Duration::from_secs(15)).await {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Policy);
            assert_eq!(frame.reason.as_str(), "session revoked");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// The recommended setup: the frontend through a public route and the API
/// through a protected one, on the gateway's origin. Cookies are first-party
/// and `SameSite=Lax`, and no CORS header is needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_frontend_and_its_api_share_the_gateways_origin() {
    let deployment = Deployment::new(Backend::Postgres).await;
    let keys_from = deployment.spawn(&[]).await;
    let api = TicketApi::start(&keys_from.url("")).await;
    let gateway = deployment
        .spawn(&[
            "--route",
            &format!("/={} public", api.url()),
            "--route",
            &format!("/api={}", api.url()),
        ])
        .await;

    for (path, content_type, mention) in [
        ("/", "text/html; charset=utf-8", "<script src=\"/app.js\">"),
        (
            "/app.js",
            "text/javascript; charset=utf-8",
            "/api/tickets/live",
        ),
        ("/app.css", "text/css; charset=utf-8", "main"),
    ] {
        let response = gateway.get(path).await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{path}: {}",
            response.text()
        );
        assert_eq!(response.header("content-type"), Some(content_type));
        assert!(response.text().contains(mention), "{path}");
    }
    assert!(
        gateway
            .get("/")
            .await
            .header("content-security-policy")
            .is_some_and(|csp| csp.contains("default-src 'self'"))
    );
    gateway
        .get("/api/tickets")
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");

    // Log in as the page does: the cookies are Lax, and then carry the API.
    let login = gateway
        .send(
            Method::POST,
            "/api/auth/register",
            &[("origin", &gateway.url(""))],
            Some(Body::Json(
                json!({ "username": "alice", "password": PASSWORD }),
            )),
        )
        .await;
    assert_eq!(login.status, StatusCode::CREATED, "{}", login.text());
    assert!(
        login
            .cookie_attributes("tollgate_access")
            .contains(&"SameSite=Lax".to_string())
    );
    let access = Tokens::from(&login).access;
    let cookie = format!("tollgate_access={access}");
    let own = gateway.url("");
    let created = gateway
        .send(
            Method::POST,
            "/api/tickets",
            &[("cookie", &cookie), ("origin", &own)],
            Some(Body::Json(json!({ "title": "one origin" }))),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    assert!(
        created.json()["created_by"]
            .as_str()
            .is_some_and(|by| by.starts_with("alice ")),
        "{}",
        created.text()
    );
    let listed = gateway
        .send(Method::GET, "/api/tickets", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.json()[0]["title"], "one origin");
    assert_eq!(listed.header("access-control-allow-origin"), None);
    // The CSRF rule still guards the cookie against other sites.
    gateway
        .send(
            Method::POST,
            "/api/tickets",
            &[("cookie", &cookie), ("origin", "https://evil.example")],
            Some(Body::Json(json!({ "title": "forged" }))),
        )
        .await
        .assert_error(StatusCode::FORBIDDEN, "csrf_rejected");
}
