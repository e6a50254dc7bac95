//! `GET /api/tickets/live`: a WebSocket on which every new ticket arrives as
//! `{"type": "ticket_created", "ticket": {…}}` (or `{"type": "resync"}` when
//! the connection fell too far behind: reload the list).
//!
//! The handshake is authenticated like every other request of the API (the
//! gateway forwards the token as `Authorization: Bearer`, also when the
//! browser used the cookie). Behind the gateway, the gateway closes the
//! connection when its session is revoked; this API also closes it itself
//! (1008, `session revoked`) once the revocation feed lists the session, for
//! a caller that reached it directly.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::{ApiResponse, Claims, REVOCATION_POLL, Ticket, TicketApi, reply};

/// Answers the handshake with 101 and serves the connection once hyper
/// hands it over.
pub fn upgrade(api: Arc<TicketApi>, request: Request<Incoming>, claims: Claims) -> ApiResponse {
    let headers = request.headers();
    let key = match headers.get(SEC_WEBSOCKET_KEY) {
        Some(key)
            if has_token(headers, &UPGRADE, "websocket")
                && has_token(headers, &CONNECTION, "upgrade")
                && headers
                    .get(SEC_WEBSOCKET_VERSION)
                    .map(HeaderValue::as_bytes)
                    == Some(b"13") =>
        {
            key.clone()
        }
        _ => {
            let mut response = reply(
                StatusCode::UPGRADE_REQUIRED,
                json!({ "error": "invalid_request", "message": "expected a WebSocket handshake" }),
            );
            response
                .headers_mut()
                .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            return response;
        }
    };
    let on_upgrade = hyper::upgrade::on(request);
    // Subscribed before the 101 goes out: a ticket created the moment the
    // client has its socket is sent too.
    let created = api.created.subscribe();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let socket =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                serve(&api, socket, created, &claims.sid).await;
            }
            Err(error) => eprintln!("live: the upgrade failed: {error}"),
        }
    });
    let mut response = Response::new(Full::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
            .expect("the accept key is base64"),
    );
    response
}

/// Sends each new ticket until the client goes, the session is revoked, or
/// the API stops.
async fn serve(
    api: &TicketApi,
    mut socket: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
    mut created: broadcast::Receiver<Ticket>,
    session: &str,
) {
    let mut revocation_check = tokio::time::interval(REVOCATION_POLL);
    loop {
        let message = tokio::select! {
            incoming = socket.next() => match incoming {
                // Pings are answered by the library; what the client says is
                // not read.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => continue,
            },
            ticket = created.recv() => match ticket {
                Ok(ticket) => json!({ "type": "ticket_created", "ticket": ticket }),
                Err(RecvError::Lagged(_)) => json!({ "type": "resync" }),
                Err(RecvError::Closed) => return,
            },
            _ = revocation_check.tick() => {
                if api.is_revoked(session) {
                    let _ = socket
                        .close(Some(CloseFrame {
                            code: CloseCode::Policy,
                            reason: "session revoked".into(),
                        }))
                        .await;
                    return;
                }
                continue;
            },
        };
        if socket
            .send(Message::text(message.to_string()))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Whether a comma-separated header lists `token`, in any case.
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}
