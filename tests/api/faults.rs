//! Faults around the gateway: the database going away (through a link of our
//! own between the gateway and Postgres; the shared server is never stopped),
//! upstreams that misbehave, and clients that dawdle.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::helpers::{Backend, Deployment, PASSWORD, TestApp, TestResponse, Tokens};
use crate::upstream::EchoUpstream;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// Bytes flow both ways.
    Up,
    /// Connections stay open but nothing gets through: a partition.
    Silent,
    /// Every connection is closed at once: the server is gone.
    Refusing,
}

/// A TCP link to a target whose state the test sets. When the link comes
/// back up, connections that lived through an outage are closed, as a real
/// partition leaves them.
pub(crate) struct FaultyLink {
    addr: SocketAddr,
    state: watch::Sender<LinkState>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultyLink {
    async fn to(target: SocketAddr) -> FaultyLink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (state, _) = watch::channel(LinkState::Up);
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    tokio::spawn(carry(client, target, state.subscribe()));
                }
            }
        });
        FaultyLink { addr, state, task }
    }

    pub(crate) fn set(&self, state: LinkState) {
        self.state.send_replace(state);
    }
}

impl Drop for FaultyLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn carry(mut client: TcpStream, target: SocketAddr, mut state: watch::Receiver<LinkState>) {
    let current = *state.borrow_and_update();
    if current == LinkState::Refusing {
        return;
    }
    if current == LinkState::Up {
        let Ok(mut server) = TcpStream::connect(target).await else {
            return;
        };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
            _ = state.wait_for(|state| *state != LinkState::Up) => {}
        }
        if *state.borrow() == LinkState::Refusing {
            return;
        }
    }
    // Silent: hold the connection, pass nothing, until the link is back.
    let _ = state.wait_for(|state| *state != LinkState::Silent).await;
}

/// A Postgres deployment whose gateways reach the database through a link.
pub(crate) async fn deployment_behind_a_link() -> (Deployment, FaultyLink) {
    let mut deployment = Deployment::new(Backend::Postgres).await;
    let url: url_parts::Url = deployment.database_url.parse().unwrap();
    let link = FaultyLink::to(url.addr).await;
    deployment.database_url = url.with_addr(link.addr);
    (deployment, link)
}

/// Just enough URL handling to swap a Postgres URL's host and port.
mod url_parts {
    use std::net::SocketAddr;
    use std::str::FromStr;

    pub struct Url {
        pub addr: SocketAddr,
        scheme_and_user: String,
        rest: String,
    }

    impl FromStr for Url {
        type Err = String;
        fn from_str(url: &str) -> Result<Url, String> {
            let (scheme_and_user, after_at) = url.split_once('@').ok_or("no @ in the URL")?;
            let (host_port, rest) = after_at.split_once('/').ok_or("no path in the URL")?;
            let host_port = host_port.replace("localhost", "127.0.0.1");
            let addr = host_port.parse().map_err(|e| format!("{host_port}: {e}"))?;
            Ok(Url {
                addr,
                scheme_and_user: scheme_and_user.to_string(),
                rest: rest.to_string(),
            })
        }
    }

    impl Url {
        pub fn with_addr(&self, addr: SocketAddr) -> String {
            format!("{}@{}/{}", self.scheme_and_user, addr, self.rest)
        }
    }
}

/// The time `request` took, and its answer.
async fn timed(request: impl Future<Output = TestResponse>) -> (Duration, TestResponse) {
    let started = Instant::now();
    let response = request.await;
    (started.elapsed(), response)
}

async fn check_outage(link_state: LinkState) {
    let upstream = EchoUpstream::start().await;
    let (deployment, link) = deployment_behind_a_link().await;
    let app = deployment.spawn(&["--upstream", &upstream.url()]).await;
    let tokens = app.signed_up("alice").await;
    let other = Tokens::from(&app.login("alice", PASSWORD).await);

    link.set(link_state);
    let (took, proxied) = timed(app.get_with_token("/api/tickets", &tokens.access)).await;
    assert_eq!(
        proxied.status,
        StatusCode::OK,
        "bearer requests are still proxied"
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
    let (took, verified) = timed(app.get_with_token("/api/auth/verify", &tokens.access)).await;
    assert_eq!(
        verified.status,
        StatusCode::OK,
        "forward-auth never reads the database"
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
    let (took, feed) = timed(app.get("/.well-known/revoked-sessions")).await;
    assert_eq!(
        feed.status,
        StatusCode::OK,
        "the feed never reads the database"
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(
        app.send(Method::GET, "/health", &[], None).await.status,
        StatusCode::OK
    );

    let (detailed, login, refresh, logout) = tokio::join!(
        timed(app.send(Method::GET, "/health/detailed", &[], None)),
        timed(app.login("alice", PASSWORD)),
        timed(app.refresh(&tokens.refresh)),
        timed(app.logout(&other.access)),
    );
    assert_eq!(
        detailed.1.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        detailed.1.text()
    );
    assert_eq!(detailed.1.json()["database"]["ok"], false);
    for (name, (took, response)) in [("login", login), ("refresh", refresh), ("logout", logout)] {
        response.assert_error(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable");
        let retry_after = response.header("retry-after");
        assert!(
            retry_after
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|s| s > 0),
            "{name}: a 503 says when to retry: {retry_after:?}"
        );
        assert!(took < Duration::from_secs(8), "{name} took {took:?}");
    }
    assert!(detailed.0 < Duration::from_secs(8), "{:?}", detailed.0);

    link.set(LinkState::Up);
    let started = Instant::now();
    loop {
        let login = app.login("alice", PASSWORD).await;
        if login.status == StatusCode::OK {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no recovery: {}",
            login.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing was half-written: the refresh token refused during the outage
    // was never spent, and the session logged out in vain is still live.
    let refreshed = app.refresh(&tokens.refresh).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text());
    assert_eq!(app.me(&other.access).await.status, StatusCode::OK);
    assert_eq!(
        app.logout(&other.access).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.send(Method::GET, "/health/detailed", &[], None)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_database_slows_nothing_that_does_not_need_it() {
    check_outage(LinkState::Silent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_database_is_reported_and_recovered_from() {
    check_outage(LinkState::Refusing).await;
}

/// An upstream that misbehaves in the way the path names.
async fn misbehaving_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = vec![0u8; 8192];
                let Ok(read) = stream.read(&mut head).await else {
                    return;
                };
                let head = String::from_utf8_lossy(&head[..read]).to_string();
                let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                match path.as_str() {
                    "/close" => {}
                    "/reset" => {
                        let _ = stream.set_zero_linger();
                    }
                    "/half-head" => {
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await;
                    }
                    "/cut-body" => {
                        let _ = stream
                            .write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly a little",
                            )
                            .await;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let _ = stream.shutdown().await;
                    }
                    "/hang" => tokio::time::sleep(Duration::from_secs(30)).await,
                    _ => {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                            .await;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_upstream_gets_clean_errors_and_harms_no_one_else() {
    let upstream = misbehaving_upstream().await;
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            "--upstream",
            &format!("http://{upstream}"),
            "--upstream-timeout",
            "2s",
        ],
    )
    .await;
    let tokens = app.signed_up("alice").await;

    let hanging = tokio::spawn({
        let client_app = app.url("/hang");
        let token = tokens.access.clone();
        async move {
            let client = crate::helpers::http_client();
            let bearer = format!("Bearer {token}");
            timed(crate::helpers::send_request(
                &client,
                Method::GET,
                &client_app,
                &[("authorization", &bearer)],
                None,
            ))
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    for path in ["/close", "/reset", "/half-head"] {
        let (took, response) = timed(app.get_with_token(path, &tokens.access)).await;
        response.assert_error(StatusCode::BAD_GATEWAY, "bad_gateway");
        assert!(
            took < Duration::from_secs(1),
            "{path} took {took:?} beside a hanging request"
        );
    }
    let fine = app.get_with_token("/fine", &tokens.access).await;
    assert_eq!(fine.status, StatusCode::OK, "{}", fine.text());

    // Headers already went out: the client sees an incomplete body, not a hang.
    let (took, cut) = timed(async {
        let request = http::Request::get(app.url("/cut-body"))
            .header("authorization", format!("Bearer {}", tokens.access))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let response = crate::helpers::http_client()
            .request(request)
            .await
            .unwrap();
        let status = response.status();
        let body = http_body_util::BodyExt::collect(response.into_body()).await;
        TestResponse {
            status,
            headers: Default::default(),
            body: bytes::Bytes::from(if body.is_err() { "error" } else { "complete" }),
        }
    })
    .await;
    assert_eq!(cut.status, StatusCode::OK);
    assert_eq!(cut.text(), "error");
    assert!(took < Duration::from_secs(3), "{took:?}");

    let (took, hung) = hanging.await.unwrap();
    hung.assert_error(StatusCode::GATEWAY_TIMEOUT, "gateway_timeout");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

/// Reads until the peer closes or `limit` passes; what arrived, and when it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(started.elapsed()),
            stream.read(&mut buffer),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&answer).into(),
                    Some(started.elapsed()),
                );
            }
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
            Err(_) => return (String::from_utf8_lossy(&answer).into(), None),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_time_out_and_idle_ones_exhaust_nothing() {
    let upstream = EchoUpstream::start().await;
    let app = TestApp::spawn_with(Backend::Sqlite, &["--upstream", &upstream.url()]).await;
    let tokens = app.signed_up("alice").await;

    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(app.addr).await.unwrap());
    }
    let mut slow_head = TcpStream::connect(app.addr).await.unwrap();
    slow_head
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut slow_login = TcpStream::connect(app.addr).await.unwrap();
    slow_login
        .write_all(
            b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"username\"",
        )
        .await
        .unwrap();
    let mut slow_upload = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /api/tickets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 100\r\n\r\n{{\"title\"",
        tokens.access
    );
    slow_upload.write_all(head.as_bytes()).await.unwrap();

    let (took, response) = timed(app.send(Method::GET, "/health", &[], None)).await;
    assert_eq!(response.status, StatusCode::OK);
    assert!(
        took < Duration::from_secs(1),
        "{took:?} with 300 idle connections"
    );

    let (head_answer, head_closed) =
        read_until_closed(&mut slow_head, Duration::from_secs(15)).await;
    assert!(
        head_closed.is_some(),
        "a stalled request head is cut off: {head_answer}"
    );
    let (login_answer, _) = read_until_closed(&mut slow_login, Duration::from_secs(15)).await;
    assert!(login_answer.starts_with("HTTP/1.1 408"), "{login_answer}");
    assert!(login_answer.contains("request_timeout"), "{login_answer}");
    let (upload_answer, _) = read_until_closed(&mut slow_upload, Duration::from_secs(20)).await;
    assert!(upload_answer.starts_with("HTTP/1.1 408"), "{upload_answer}");
    let (idle_answer, idle_closed) = read_until_closed(&mut idle[0], Duration::from_secs(5)).await;
    assert!(
        idle_closed.is_some(),
        "idle connections are closed too: {idle_answer}"
    );
    assert_eq!(app.login("alice", PASSWORD).await.status, StatusCode::OK);
}
