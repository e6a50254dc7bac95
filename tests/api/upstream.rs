//! An upstream for the proxy tests that reports what it received.
//!
//! - `/status/{code}` answers that status;
//! - `/slow/{ms}` answers after a delay;
//! - `/bytes/{n}` streams `n` bytes of a fixed pattern;
//! - `/cookies` answers with two `Set-Cookie` headers;
//! - `/cors` answers with CORS headers of its own;
//! - anything else answers 200 with a JSON echo of the request:
//!   `{method, path, query, headers: {name: [values]}, body_len, body_sha256}`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

type UpstreamBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What the upstream saw of one request.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: http::HeaderMap,
    pub body_len: usize,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

pub struct EchoUpstream {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoUpstream {
    pub async fn start() -> EchoUpstream {
        EchoUpstream::serve(None).await
    }

    /// The same upstream behind TLS, presenting `tls`'s certificate.
    pub async fn start_tls(tls: Arc<rustls::ServerConfig>) -> EchoUpstream {
        EchoUpstream::serve(Some(TlsAcceptor::from(tls))).await
    }

    async fn serve(tls: Option<TlsAcceptor>) -> EchoUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let received = received.clone();
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let received = received.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |request| answer(request, received.clone()));
                        let builder =
                            hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                        let _ = match tls {
                            None => {
                                builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await
                            }
                            // A client that refuses the certificate ends here.
                            Some(tls) => match tls.accept(stream).await {
                                Ok(stream) => {
                                    builder
                                        .serve_connection(TokioIo::new(stream), service)
                                        .await
                                }
                                Err(_) => return,
                            },
                        };
                    });
                }
            }
        });
        EchoUpstream {
            addr,
            received,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL of an upstream started with [`EchoUpstream::start_tls`].
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// How many requests reached the upstream.
    pub fn hits(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// The last request the upstream received.
    pub fn last(&self) -> Received {
        self.received
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream received a request")
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The byte at position `i` of a `/bytes/{n}` body.
pub fn pattern_byte(i: usize) -> u8 {
    (i % 251) as u8
}

async fn answer(
    request: Request<Incoming>,
    received: Arc<Mutex<Vec<Received>>>,
) -> Result<Response<UpstreamBody>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let record = Received {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers.clone(),
        body_len: body.len(),
    };
    received.lock().unwrap().push(record.clone());

    let segments: Vec<&str> = parts
        .uri
        .path()
        .trim_start_matches('/')
        .splitn(2, '/')
        .collect();
    let response = match segments.as_slice() {
        ["status", code] => {
            let status = code
                .parse()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::OK);
            let mut response = Response::new(full(Bytes::from_static(b"{}")));
            *response.status_mut() = status;
            response
        }
        ["slow", ms] => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(1000))).await;
            Response::new(full(Bytes::from_static(b"slow")))
        }
        ["bytes", n] => {
            let total: usize = n.parse().unwrap_or(0);
            let chunk = 64 * 1024;
            let chunks = (0..total).step_by(chunk).map(move |start| {
                let bytes: Vec<u8> = (start..(start + chunk).min(total))
                    .map(pattern_byte)
                    .collect();
                Ok::<_, Infallible>(Frame::data(Bytes::from(bytes)))
            });
            let stream = futures_util::stream::iter(chunks);
            Response::new(StreamBody::new(stream).boxed())
        }
        ["cors"] => Response::builder()
            .header("access-control-allow-origin", "*")
            .header("access-control-allow-credentials", "true")
            .header("access-control-expose-headers", "x-secret")
            .body(full(Bytes::from_static(b"{}")))
            .unwrap(),
        ["cookies"] => Response::builder()
            .header("set-cookie", "upstream_a=1; Path=/")
            .header("set-cookie", "upstream_b=2; Path=/; HttpOnly")
            .body(full(Bytes::from_static(b"{}")))
            .unwrap(),
        _ => {
            let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (name, value) in &parts.headers {
                headers
                    .entry(name.to_string())
                    .or_default()
                    .push(value.to_str().unwrap_or("<binary>").to_string());
            }
            let echo: Value = json!({
                "method": record.method,
                "path": record.path,
                "query": record.query,
                "headers": headers,
                "body_len": body.len(),
                "body_sha256": format!("{:x}", Sha256::digest(&body)),
            });
            Response::builder()
                .header("content-type", "application/json")
                .body(full(Bytes::from(serde_json::to_vec(&echo).unwrap())))
                .unwrap()
        }
    };
    Ok(response)
}

fn full(bytes: Bytes) -> UpstreamBody {
    Full::new(bytes).boxed()
}
