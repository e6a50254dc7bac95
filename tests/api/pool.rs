//! The upstream connection pool: bounded, and safe when an upstream closes
//! its keep-alive connections under requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{Backend, Body, TestApp};
use crate::on_both_backends;

/// A raw HTTP/1.1 upstream that closes a keep-alive connection once it has
/// sat idle for `idle_close` after an answer, the way servers with short
/// keep-alive timeouts do (a new connection waits longer for its first
/// request, as they do too), and counts what it saw.
struct ClosingUpstream {
    addr: SocketAddr,
    /// Requests whose head arrived, by method.
    gets: Arc<AtomicUsize>,
    posts: Arc<AtomicUsize>,
    /// Connections open at once, at most.
    peak_connections: Arc<AtomicUsize>,
}

impl ClosingUpstream {
    async fn start(idle_close: Duration, answer_posts: bool, slow: Duration) -> ClosingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gets = Arc::new(AtomicUsize::new(0));
        let posts = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let peak_connections = Arc::new(AtomicUsize::new(0));
        tokio::spawn({
            let (gets, posts, peak) = (gets.clone(), posts.clone(), peak_connections.clone());
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    let (gets, posts, open) = (gets.clone(), posts.clone(), open.clone());
                    tokio::spawn(async move {
                        serve(stream, idle_close, answer_posts, slow, &gets, &posts).await;
                        open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            }
        });
        ClosingUpstream {
            addr,
            gets,
            posts,
            peak_connections,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Answers requests on one connection until it sits idle for `idle_close`
/// between two of them.
/// A POST is read whole and then, unless `answer_posts`, the connection is
/// closed without an answer.
async fn serve(
    mut stream: TcpStream,
    idle_close: Duration,
    answer_posts: bool,
    slow: Duration,
    gets: &AtomicUsize,
    posts: &AtomicUsize,
) {
    let mut buffer = Vec::new();
    let mut wait = Duration::from_secs(5);
    loop {
        let head_end = loop {
            if let Some(end) = find(&buffer, b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(wait, stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buffer.extend_from_slice(&chunk[..n]),
                // Idle for too long (or the peer went): close.
                _ => return,
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
        let body_len: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0);
        while buffer.len() < head_end + body_len {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(n) if n > 0 => buffer.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        }
        buffer.drain(..head_end + body_len);
        if head.starts_with("post") {
            posts.fetch_add(1, Ordering::SeqCst);
            if !answer_posts {
                return;
            }
        } else {
            gets.fetch_add(1, Ordering::SeqCst);
        }
        tokio::time::sleep(slow).await;
        if stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .is_err()
        {
            return;
        }
        wait = idle_close;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

async fn an_upstream_closing_idle_connections_causes_no_502(backend: Backend) {
    // Requests arrive about as often as the upstream closes idle
    // connections, so some are sent on a connection that is closing.
    let upstream = ClosingUpstream::start(Duration::from_millis(10), true, Duration::ZERO).await;
    let url = upstream.url();
    let app = TestApp::spawn_with(backend, &["--upstream", &url]).await;
    let token = app.signed_up("alice").await.access;
    let clients = (0..4u64).map(|client| {
        let (app, token) = (&app, &token);
        async move {
            let mut failures = Vec::new();
            for n in 0..150u64 {
                let response = app.get_with_token("/api/tickets", token).await;
                if response.status != StatusCode::OK {
                    failures.push(format!("{} {}", response.status, response.text()));
                }
                // 4 to 16 ms apart: around the upstream's 10 ms idle close.
                let pause = 4 + (n * 7 + client * 3) % 13;
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            failures
        }
    });
    let failures: Vec<String> = join_all(clients).await.into_iter().flatten().collect();
    assert!(
        failures.is_empty(),
        "{} of 600 requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(
        upstream.gets.load(Ordering::SeqCst),
        600,
        "each request once"
    );
}

async fn a_post_that_reached_the_upstream_is_never_sent_twice(backend: Backend) {
    // The upstream reads the POST and closes without answering.
    let upstream = ClosingUpstream::start(Duration::from_secs(5), false, Duration::ZERO).await;
    let url = upstream.url();
    let app = TestApp::spawn_with(backend, &["--upstream", &url]).await;
    let token = app.signed_up("alice").await.access;
    // A GET first, so that the POST goes out on a reused connection.
    assert_eq!(
        app.get_with_token("/api/tickets", &token).await.status,
        StatusCode::OK
    );
    let bearer = format!("Bearer {token}");
    let response = app
        .send(
            Method::POST,
            "/api/tickets",
            &[("authorization", &bearer)],
            Some(Body::Raw("{\"title\":\"once\"}".into())),
        )
        .await;
    response.assert_error(StatusCode::BAD_GATEWAY, "bad_gateway");
    assert_eq!(
        upstream.posts.load(Ordering::SeqCst),
        1,
        "a non-idempotent request whose bytes went out is never retried"
    );
}

async fn upstream_connections_stay_within_the_bound(backend: Backend) {
    let upstream =
        ClosingUpstream::start(Duration::from_secs(5), true, Duration::from_millis(50)).await;
    let url = upstream.url();
    let app = TestApp::spawn_with(
        backend,
        &["--upstream", &url, "--upstream-max-connections", "3"],
    )
    .await;
    let token = app.signed_up("alice").await.access;
    let responses = join_all((0..24).map(|_| app.get_with_token("/api/tickets", &token))).await;
    for response in &responses {
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    }
    assert!(
        upstream.peak_connections.load(Ordering::SeqCst) <= 3,
        "at most 3 upstream connections at once, saw {}",
        upstream.peak_connections.load(Ordering::SeqCst)
    );
}

on_both_backends!(
    an_upstream_closing_idle_connections_causes_no_502,
    a_post_that_reached_the_upstream_is_never_sent_twice,
    upstream_connections_stay_within_the_bound,
);
