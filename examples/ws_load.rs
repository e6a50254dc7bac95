//! WebSocket echo load for `benches/load.sh`: CONNECTIONS clients, each
//! sending a small message and waiting for its echo, over and over, for
//! SECONDS; prints the echoes per second.
//!
//!     ws_load URL CONNECTIONS SECONDS [BEARER_TOKEN]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (url, connections, seconds) = match &args[1..] {
        [url, connections, seconds, ..] => (url.clone(), connections.parse()?, seconds.parse()?),
        _ => anyhow::bail!("usage: ws_load URL CONNECTIONS SECONDS [BEARER_TOKEN]"),
    };
    let token = args.get(4).cloned();
    let echoes = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut clients = Vec::new();
    for _ in 0..connections {
        let mut request = url.as_str().into_client_request()?;
        if let Some(token) = &token {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse()?);
        }
        let (socket, _) = tokio_tungstenite::connect_async(request).await?;
        let echoes = echoes.clone();
        clients.push(tokio::spawn(async move {
            let (mut outgoing, mut incoming) = socket.split();
            let message = Message::text("{\"ticket\":1,\"title\":\"printer on fire\"}");
            while Instant::now() < deadline {
                outgoing.send(message.clone()).await?;
                match incoming.next().await {
                    Some(Ok(_)) => echoes.fetch_add(1, Ordering::Relaxed),
                    _ => anyhow::bail!("the echo stopped"),
                };
            }
            anyhow::Ok(())
        }));
    }
    let started = Instant::now();
    for client in clients {
        client.await??;
    }
    let rate = echoes.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    println!("{rate:.0}");
    Ok(())
}
