//! A small ticket API to run behind tollgate, and an example of how an
//! upstream validates the forwarded token itself instead of trusting headers.
//!
//! It fetches the gateway's JWKS, caches it, and re-fetches it (at most once a
//! second) when a token names a key it does not know: a key rotation needs no
//! restart. It polls the gateway's revocation feed every 2 seconds and
//! refuses the tokens of revoked sessions, so a logout reaches it as quickly
//! as it reaches the gateway. Tickets live in memory.
//!
//! It also serves its frontend (`examples/ticket_web/`: plain HTML and
//! JavaScript) on every path outside `/api`, so that the gateway can put both
//! on one origin: a public route for the frontend, a protected one for the
//! API.
//!
//! ```sh
//! cargo run --example ticket_api -- --listen 127.0.0.1:3000 \
//!     --gateway-url http://127.0.0.1:8080
//! cargo run -- --route "/=http://127.0.0.1:3000 public" \
//!     --route "/api=http://127.0.0.1:3000"
//! # then open http://localhost:8080
//! ```
//!
//! - `GET /api/tickets`: the tickets, newest last.
//! - `POST /api/tickets` `{"title": "…"}`: creates a ticket owned by the caller.
//! - `GET /api/tickets/live`: a WebSocket on which new tickets arrive
//!   (`live.rs`).
//! - `GET /`, `/app.js`, `/app.css`: the frontend, without a token.

mod live;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Where this API reaches the gateway: its JWKS and revocation feed.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    gateway_url: String,
    #[arg(long, default_value = "tollgate")]
    issuer: String,
    #[arg(long, default_value = "tollgate")]
    audience: String,
}

/// How often the revocation feed is read.
const REVOCATION_POLL: Duration = Duration::from_secs(2);
/// A revoked session is remembered this long: longer than any access token of
/// it can live (the gateway's default lifetime is 15 minutes).
const REMEMBER_REVOKED: Duration = Duration::from_secs(24 * 3600);

/// New tickets waiting for a slow live connection; past this it is told to
/// reload the list instead.
const LIVE_BACKLOG: usize = 64;

/// The frontend, served on every path outside `/api`.
const INDEX_HTML: &str = include_str!("../ticket_web/index.html");
const APP_JS: &str = include_str!("../ticket_web/app.js");
const APP_CSS: &str = include_str!("../ticket_web/app.css");

/// The claims this API uses; the gateway's tokens carry more.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    sid: String,
    preferred_username: String,
}

#[derive(Clone, Serialize)]
struct Ticket {
    id: u64,
    title: String,
    created_by: String,
}

/// The gateway's public keys, by `kid`, and when they were fetched.
struct KeyCache {
    keys: HashMap<String, (jsonwebtoken::Algorithm, DecodingKey)>,
    fetched_at: Option<Instant>,
}

/// One answer of the gateway's revocation feed.
#[derive(Deserialize)]
struct RevocationFeed {
    revoked: Vec<RevokedSession>,
    cursor: String,
}

#[derive(Deserialize)]
struct RevokedSession {
    sid: String,
}

struct TicketApi {
    args: Args,
    client: Client<HttpConnector, Empty<Bytes>>,
    keys: Mutex<KeyCache>,
    /// Revoked session ids, and when this API learned of each.
    revoked: Mutex<HashMap<String, Instant>>,
    tickets: Mutex<Vec<Ticket>>,
    /// Each new ticket, for the live connections.
    created: broadcast::Sender<Ticket>,
}

type ApiResponse = Response<Full<Bytes>>;

impl TicketApi {
    /// The caller's claims, if the bearer token is valid.
    async fn authenticate(&self, request: &Request<Incoming>) -> Result<Claims, String> {
        let token = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or("no bearer token")?;
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        if header.typ.as_deref() != Some("at+jwt") {
            return Err("not an access token".into());
        }
        let kid = header.kid.ok_or("token without kid")?;
        let (alg, key) = match self.key(&kid) {
            Some(found) => found,
            // Unknown key: the gateway may have rotated. Re-fetch, once.
            None => {
                self.refresh_keys().await?;
                self.key(&kid).ok_or("token signed by an unknown key")?
            }
        };
        // Pin the algorithm to the key's; require and check iss, aud, exp, sub.
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&self.args.issuer]);
        validation.set_audience(&[&self.args.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|e| format!("invalid token: {e}"))?;
        if self.is_revoked(&claims.sid) {
            return Err("the token's session was revoked".into());
        }
        Ok(claims)
    }

    fn is_revoked(&self, session: &str) -> bool {
        self.revoked.lock().unwrap().contains_key(session)
    }

    /// A GET to the gateway; the body of a 200.
    async fn fetch(&self, path_and_query: &str) -> Result<Bytes, String> {
        let url = format!(
            "{}{path_and_query}",
            self.args.gateway_url.trim_end_matches('/')
        );
        let uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
        let response = self
            .client
            .get(uri)
            .await
            .map_err(|e| format!("cannot reach {url}: {e}"))?;
        if response.status() != StatusCode::OK {
            return Err(format!("{url} answered {}", response.status()));
        }
        Ok(response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes())
    }

    /// Reads the revocation feed from `cursor`; the cursor to read on from.
    async fn read_revocations(&self, cursor: Option<&str>) -> Result<String, String> {
        let path = match cursor {
            // Cursors are URL-safe base64.
            Some(cursor) => format!("/.well-known/revoked-sessions?since={cursor}"),
            None => "/.well-known/revoked-sessions".to_string(),
        };
        let feed: RevocationFeed = serde_json::from_slice(&self.fetch(&path).await?)
            .map_err(|e| format!("bad revocation feed: {e}"))?;
        let now = Instant::now();
        let mut revoked = self.revoked.lock().unwrap();
        for session in feed.revoked {
            revoked.entry(session.sid).or_insert(now);
        }
        revoked.retain(|_, learned| learned.elapsed() < REMEMBER_REVOKED);
        Ok(feed.cursor)
    }

    /// Polls the revocation feed every [`REVOCATION_POLL`], forever. With the
    /// gateway unreachable, the revocations already known stay refused.
    async fn poll_revocations(self: Arc<Self>, mut cursor: Option<String>) {
        let mut interval = tokio::time::interval(REVOCATION_POLL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            match self.read_revocations(cursor.as_deref()).await {
                Ok(next) => cursor = Some(next),
                Err(why) => eprintln!("revocation feed: {why}; keeping the known revocations"),
            }
        }
    }

    fn key(&self, kid: &str) -> Option<(jsonwebtoken::Algorithm, DecodingKey)> {
        self.keys.lock().unwrap().keys.get(kid).cloned()
    }

    async fn refresh_keys(&self) -> Result<(), String> {
        {
            let cache = self.keys.lock().unwrap();
            if cache
                .fetched_at
                .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
            {
                return Ok(());
            }
        }
        let body = self.fetch("/.well-known/jwks.json").await?;
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("bad JWKS: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), Some(alg)) = (&jwk.common.key_id, jwk.common.key_algorithm) else {
                continue;
            };
            let (Ok(alg), Ok(key)) = (alg.to_string().parse(), DecodingKey::from_jwk(jwk)) else {
                continue;
            };
            keys.insert(kid.clone(), (alg, key));
        }
        *self.keys.lock().unwrap() = KeyCache {
            keys,
            fetched_at: Some(Instant::now()),
        };
        Ok(())
    }

    async fn handle(self: &Arc<Self>, request: Request<Incoming>) -> ApiResponse {
        if !request.uri().path().starts_with("/api/") {
            return frontend(request.method(), request.uri().path());
        }
        let claims = match self.authenticate(&request).await {
            Ok(claims) => claims,
            Err(why) => {
                return reply(
                    StatusCode::UNAUTHORIZED,
                    json!({ "error": "unauthorized", "message": why }),
                );
            }
        };
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/api/tickets/live") => live::upgrade(self.clone(), request, claims),
            (&Method::GET, "/api/tickets") => {
                let tickets = self.tickets.lock().unwrap().clone();
                reply(StatusCode::OK, json!(tickets))
            }
            (&Method::POST, "/api/tickets") => {
                let body = match Limited::new(request.into_body(), 16 * 1024).collect().await {
                    Ok(body) => body.to_bytes(),
                    Err(_) => {
                        return reply(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            json!({ "error": "payload_too_large" }),
                        );
                    }
                };
                #[derive(Deserialize)]
                struct NewTicket {
                    title: String,
                }
                let Ok(new) = serde_json::from_slice::<NewTicket>(&body) else {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        json!({ "error": "invalid_request", "message": "expected {\"title\": \"…\"}" }),
                    );
                };
                let mut tickets = self.tickets.lock().unwrap();
                let ticket = Ticket {
                    id: tickets.len() as u64 + 1,
                    title: new.title,
                    created_by: format!("{} ({})", claims.preferred_username, claims.sub),
                };
                tickets.push(ticket.clone());
                // Nobody listening is not an error.
                let _ = self.created.send(ticket.clone());
                reply(StatusCode::CREATED, json!(ticket))
            }
            _ => reply(StatusCode::NOT_FOUND, json!({ "error": "not_found" })),
        }
    }
}

/// A file of the frontend. It is public: the gateway routes it without a
/// token, and it holds nothing but code.
fn frontend(method: &Method, path: &str) -> ApiResponse {
    if method != Method::GET && method != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({ "error": "method_not_allowed" }),
        );
    }
    let (content_type, body) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", INDEX_HTML),
        "/app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "/app.css" => ("text/css; charset=utf-8", APP_CSS),
        _ => return reply(StatusCode::NOT_FOUND, json!({ "error": "not_found" })),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    // Only this origin's scripts, styles and connections (the API and the
    // WebSocket), and no framing by another site.
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(
            "default-src 'self'; connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    response
}

fn reply(status: StatusCode, body: serde_json::Value) -> ApiResponse {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await?;
    let api = Arc::new(TicketApi {
        args,
        client: Client::builder(TokioExecutor::new()).build_http(),
        keys: Mutex::new(KeyCache {
            keys: HashMap::new(),
            fetched_at: None,
        }),
        revoked: Mutex::new(HashMap::new()),
        tickets: Mutex::new(Vec::new()),
        created: broadcast::channel(LIVE_BACKLOG).0,
    });
    // Everything revoked that can still matter, before the first request.
    let cursor = match api.read_revocations(None).await {
        Ok(cursor) => Some(cursor),
        Err(why) => {
            eprintln!("revocation feed: {why}; starting without it");
            None
        }
    };
    tokio::spawn(api.clone().poll_revocations(cursor));
    // The first line says where it listens (tests start it on port 0).
    println!(
        "ticket API on http://{} (gateway {})",
        listener.local_addr()?,
        api.args.gateway_url
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let api = api.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(api.handle(request).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}
