//! WebSocket tunnels: authenticated at the handshake, relayed both ways, and
//! closed by the gateway when their session is revoked or ends.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{Method, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{Backend, Deployment, TestApp};
use crate::on_both_backends;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An upstream that echoes every message and records the close frame it
/// was sent, if any.
struct EchoServer {
    addr: SocketAddr,
    closes: Arc<Mutex<Vec<Option<CloseFrame>>>>,
}

impl EchoServer {
    async fn start() -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let closes = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn({
            let closes = closes.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let closes = closes.clone();
                    tokio::spawn(async move {
                        let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                            return;
                        };
                        while let Some(Ok(message)) = socket.next().await {
                            match message {
                                Message::Close(frame) => {
                                    closes.lock().unwrap().push(frame);
                                    return;
                                }
                                Message::Text(_) | Message::Binary(_) => {
                                    let echoed = socket.send(message).await;
                                    if echoed.is_err() {
                                        return;
                                    }
                                }
                                _ => {}
                            }
                        }
                    });
                }
            }
        });
        EchoServer { addr, closes }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The close frames the upstream got, once one arrived.
    async fn wait_for_close(&self) -> Option<CloseFrame> {
        for _ in 0..100 {
            if let Some(frame) = self.closes.lock().unwrap().first() {
                return frame.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the upstream was never sent a close frame");
    }
}

/// Opens a WebSocket to `path` on the gateway with extra handshake headers.
async fn open(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://{}{}", app.addr, path)
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

async fn echoes(socket: &mut Socket, text: &str) {
    socket.send(Message::text(text)).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("an answer in time")
        .expect("the tunnel is open")
        .unwrap();
    assert_eq!(answer, Message::text(text));
}

/// Waits for the gateway to close the socket; the close frame it sent.
async fn closed_by_gateway(socket: &mut Socket, within: Duration) -> CloseFrame {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let next = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("the gateway closed the tunnel in time");
        match next {
            Some(Ok(Message::Close(Some(frame)))) => return frame,
            Some(Ok(Message::Close(None))) => panic!("a close frame without a code"),
            Some(Ok(_)) => continue,
            other => panic!("the tunnel ended without a close frame: {other:?}"),
        }
    }
}

async fn gateway(backend: Backend, extra: &[&str]) -> (TestApp, EchoServer) {
    let echo = EchoServer::start().await;
    let url = echo.url();
    let mut flags = vec!["--upstream", url.as_str()];
    flags.extend_from_slice(extra);
    (TestApp::spawn_with(backend, &flags).await, echo)
}

async fn a_websocket_echoes_through_the_gateway_by_bearer_and_by_cookie(backend: Backend) {
    let (app, _echo) = gateway(backend, &[]).await;
    let token = app.signed_up("alice").await.access;
    let bearer = format!("Bearer {token}");
    let mut socket = open(&app, "/live", &[("authorization", &bearer)])
        .await
        .unwrap();
    for n in 0..20 {
        echoes(&mut socket, &format!("ticket {n}")).await;
    }
    // A message larger than one read, in both directions.
    let big = "x".repeat(200_000);
    echoes(&mut socket, &big).await;

    let cookie = format!("tollgate_access={token}");
    let origin = app.url("");
    let mut by_cookie = open(&app, "/live", &[("cookie", &cookie), ("origin", &origin)])
        .await
        .unwrap();
    echoes(&mut by_cookie, "by cookie").await;
}

async fn a_websocket_needs_a_valid_token(backend: Backend) {
    let (app, _echo) = gateway(backend, &[]).await;
    let refused = open(&app, "/live", &[]).await.unwrap_err();
    assert!(
        matches!(&refused, tokio_tungstenite::tungstenite::Error::Http(response) if response.status() == StatusCode::UNAUTHORIZED),
        "{refused:?}"
    );
}

async fn a_cross_site_cookie_handshake_is_refused(backend: Backend) {
    let (app, echo) = gateway(backend, &[]).await;
    let token = app.signed_up("alice").await.access;
    let cookie = format!("tollgate_access={token}");
    for origin in [Some("https://evil.example"), None] {
        let mut headers = vec![("cookie", cookie.as_str())];
        headers.extend(origin.map(|origin| ("origin", origin)));
        let refused = open(&app, "/live", &headers).await.unwrap_err();
        assert!(
            matches!(&refused, tokio_tungstenite::tungstenite::Error::Http(response) if response.status() == StatusCode::FORBIDDEN),
            "{origin:?}: {refused:?}"
        );
    }
    assert!(
        echo.closes.lock().unwrap().is_empty(),
        "nothing reached the upstream"
    );
}

async fn logging_out_closes_the_tunnel(backend: Backend) {
    let (app, echo) = gateway(backend, &[]).await;
    let tokens = app.signed_up("alice").await;
    let bearer = format!("Bearer {}", tokens.access);
    let mut socket = open(&app, "/live", &[("authorization", &bearer)])
        .await
        .unwrap();
    echoes(&mut socket, "before").await;
    assert_eq!(
        app.logout(&tokens.access).await.status,
        StatusCode::NO_CONTENT
    );
    let frame = closed_by_gateway(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(u16::from(frame.code), 1008);
    assert_eq!(frame.reason.as_str(), "session revoked");
    let upstream_frame = echo
        .wait_for_close()
        .await
        .expect("a close frame with a code");
    assert_eq!(u16::from(upstream_frame.code), 1001);
}

async fn a_revocation_on_another_instance_closes_the_tunnel(backend: Backend) {
    let echo = EchoServer::start().await;
    let url = echo.url();
    let deployment = Deployment::new(backend).await;
    let here = deployment.spawn(&["--upstream", &url]).await;
    let elsewhere = deployment.spawn(&["--upstream", &url]).await;
    let tokens = here.signed_up("alice").await;
    let bearer = format!("Bearer {}", tokens.access);
    let mut socket = open(&here, "/live", &[("authorization", &bearer)])
        .await
        .unwrap();
    echoes(&mut socket, "before").await;
    assert_eq!(
        elsewhere.logout_all(&tokens.access).await.status,
        StatusCode::NO_CONTENT
    );
    let frame = closed_by_gateway(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(u16::from(frame.code), 1008);
    assert_eq!(frame.reason.as_str(), "session revoked");
}

async fn an_idle_session_ends_its_tunnel(backend: Backend) {
    let (app, _echo) = gateway(backend, &["--session-idle-timeout", "2s"]).await;
    let token = app.signed_up("alice").await.access;
    let bearer = format!("Bearer {token}");
    let mut socket = open(&app, "/live", &[("authorization", &bearer)])
        .await
        .unwrap();
    echoes(&mut socket, "before").await;
    // Traffic on the tunnel is not a refresh: the session still idles out.
    let frame = closed_by_gateway(&mut socket, Duration::from_secs(2 + 5)).await;
    assert_eq!(u16::from(frame.code), 1008);
    assert_eq!(frame.reason.as_str(), "session ended");
}

async fn a_public_route_tunnels_without_a_token(backend: Backend) {
    let echo = EchoServer::start().await;
    let route = format!("/=http://{} public", echo.addr);
    let app = TestApp::spawn_with(backend, &["--route", &route]).await;
    let mut socket = open(&app, "/live", &[]).await.unwrap();
    echoes(&mut socket, "anyone").await;
}

async fn the_upstreams_refusal_is_the_answer(backend: Backend) {
    // A plain HTTP upstream answers the handshake without switching.
    let (app, _upstream) = {
        let upstream = crate::upstream::EchoUpstream::start().await;
        let url = upstream.url();
        (
            TestApp::spawn_with(backend, &["--upstream", &url]).await,
            upstream,
        )
    };
    let token = app.signed_up("alice").await.access;
    let bearer = format!("Bearer {token}");
    let refused = open(&app, "/status/404", &[("authorization", &bearer)])
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, tokio_tungstenite::tungstenite::Error::Http(response) if response.status() == StatusCode::NOT_FOUND),
        "{refused:?}"
    );
    // CONNECT is never forwarded.
    let connect = app.send(Method::CONNECT, "/anything", &[], None).await;
    assert_eq!(connect.status, StatusCode::METHOD_NOT_ALLOWED);
}

async fn a_shutdown_says_goodbye_to_both_sides(backend: Backend) {
    let (app, echo) = gateway(backend, &[]).await;
    let token = app.signed_up("alice").await.access;
    let bearer = format!("Bearer {token}");
    let mut socket = open(&app, "/live", &[("authorization", &bearer)])
        .await
        .unwrap();
    echoes(&mut socket, "before").await;
    let stopping = tokio::spawn(app.stop());
    let frame = closed_by_gateway(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(u16::from(frame.code), 1001);
    let upstream_frame = echo
        .wait_for_close()
        .await
        .expect("a close frame with a code");
    assert_eq!(u16::from(upstream_frame.code), 1001);
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the drain does not wait for the tunnel's grace period")
        .unwrap();
}

on_both_backends!(
    a_shutdown_says_goodbye_to_both_sides,
    a_websocket_echoes_through_the_gateway_by_bearer_and_by_cookie,
    a_websocket_needs_a_valid_token,
    a_cross_site_cookie_handshake_is_refused,
    logging_out_closes_the_tunnel,
    a_revocation_on_another_instance_closes_the_tunnel,
    an_idle_session_ends_its_tunnel,
    a_public_route_tunnels_without_a_token,
    the_upstreams_refusal_is_the_answer,
);
