//! A WebSocket echo server for `benches/load.sh`: every message comes back
//! as it went out, on any path.
//!
//!     ws_echo 127.0.0.1:PORT

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_string());
    let listener = TcpListener::bind(&address).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(socket) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            let (mut outgoing, mut incoming) = socket.split();
            while let Some(Ok(message)) = incoming.next().await {
                if (message.is_text() || message.is_binary())
                    && outgoing.send(message).await.is_err()
                {
                    return;
                }
            }
        });
    }
}
