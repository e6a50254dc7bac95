//! Client connections across parking: an HTTP/1 connection idle for two
//! seconds gives up its HTTP state and is served again when the client
//! sends, whatever it had sent before.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;
use crate::upstream::EchoUpstream;

/// Longer than a connection waits before it is parked.
const PARKED: Duration = Duration::from_millis(2600);

async fn gateway(backend: Backend) -> (TestApp, EchoUpstream, String) {
    let upstream = EchoUpstream::start().await;
    let app = TestApp::spawn_with(backend, &["--upstream", &upstream.url()]).await;
    let token = app.signed_up("alice").await.access;
    (app, upstream, token)
}

fn get(path: &str, token: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\n\r\n")
}

/// Reads one response (its head and a `Content-Length` body): its status.
async fn read_response(stream: &mut TcpStream) -> u16 {
    let mut buffer = Vec::new();
    let mut byte = [0u8; 1];
    while !buffer.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("an answer within 5 s")
            .expect("reading");
        assert_eq!(
            n,
            1,
            "the connection closed: {}",
            String::from_utf8_lossy(&buffer)
        );
        buffer.push(byte[0]);
    }
    let head = String::from_utf8(buffer).unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.expect("the body");
    head[9..12].parse().unwrap()
}

async fn a_parked_connection_is_served_again(backend: Backend) {
    let (app, upstream, token) = gateway(backend).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    for round in 0..3 {
        stream
            .write_all(get(&format!("/api/tickets/{round}"), &token).as_bytes())
            .await
            .unwrap();
        assert_eq!(read_response(&mut stream).await, 200, "round {round}");
        tokio::time::sleep(PARKED).await;
    }
    assert_eq!(upstream.hits(), 3);
    assert_eq!(upstream.last().path, "/api/tickets/2");
}

async fn a_request_split_around_the_pause_is_read_whole(backend: Backend) {
    let (app, upstream, token) = gateway(backend).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(get("/api/tickets/1", &token).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await, 200);
    // Half of the next request, then a pause past parking, then the rest.
    let request = get("/api/tickets/2", &token);
    let (first, rest) = request.split_at(request.len() / 2);
    stream.write_all(first.as_bytes()).await.unwrap();
    tokio::time::sleep(PARKED).await;
    stream.write_all(rest.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut stream).await, 200);
    assert_eq!(upstream.last().path, "/api/tickets/2");
}

async fn pipelined_requests_are_all_answered_across_parking(backend: Backend) {
    let (app, upstream, token) = gateway(backend).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let two = format!(
        "{}{}",
        get("/api/tickets/1", &token),
        get("/api/tickets/2", &token)
    );
    stream.write_all(two.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut stream).await, 200);
    assert_eq!(read_response(&mut stream).await, 200);
    tokio::time::sleep(PARKED).await;
    stream
        .write_all(get("/api/tickets/3", &token).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await, 200);
    assert_eq!(upstream.hits(), 3);
}

async fn a_client_that_closes_a_parked_connection_leaves_nothing_behind(backend: Backend) {
    let (app, _upstream, token) = gateway(backend).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(get("/api/tickets", &token).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await, 200);
    tokio::time::sleep(PARKED).await;
    // A half-close: the gateway closes its side too.
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "{read:?} {rest:?}");
}

on_both_backends!(
    a_parked_connection_is_served_again,
    a_request_split_around_the_pause_is_read_whole,
    pipelined_requests_are_all_answered_across_parking,
    a_client_that_closes_a_parked_connection_leaves_nothing_behind,
);
