//! What a request leaves behind for whoever runs the gateway: JSON log lines
//! that each carry the request's id, and with `--otlp-endpoint` its spans,
//! exported over OTLP/HTTP to a collector, here one inside the test that
//! decodes what arrives.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::helpers::{Backend, Deployment, PASSWORD, TestApp, Tokens, send_request};
use crate::on_both_backends;
use crate::process::Process;
use crate::upstream::EchoUpstream;

/// A trusted proxy's trace: the ids a `traceparent` from it names.
const PROXY_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PROXY_SPAN_ID: &str = "00f067aa0ba902b7";
/// What an untrusted client claims.
const CLIENT_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

/// The loopback address the tests' trusted proxy connects from; other
/// requests come from 127.0.0.1, which is not trusted.
const PROXY_ADDRESS: [u8; 4] = [127, 0, 0, 2];

/// One exported span, as the collector decoded it.
#[derive(Clone, Debug)]
struct ExportedSpan {
    service: Option<String>,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: Vec<KeyValue>,
}

impl ExportedSpan {
    fn attribute(&self, key: &str) -> Option<String> {
        let value = self.attributes.iter().find(|kv| kv.key == key)?;
        match value.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(text) => Some(text.clone()),
            AnyValue::IntValue(number) => Some(number.to_string()),
            other => Some(format!("{other:?}")),
        }
    }
}

/// An OTLP/HTTP collector on port 0: it decodes every protobuf export sent
/// to `/v1/traces` and keeps the spans; anything else is kept as a fault.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
    faults: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let faults = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (spans, faults) = (spans.clone(), faults.clone());
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (spans, faults) = (spans.clone(), faults.clone());
                    tokio::spawn(async move {
                        let service = service_fn(move |request| {
                            receive(request, spans.clone(), faults.clone())
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        });
        Collector {
            addr,
            spans,
            faults,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spans(&self) -> Vec<ExportedSpan> {
        let faults = self.faults.lock().unwrap();
        assert!(faults.is_empty(), "the collector got: {faults:?}");
        self.spans.lock().unwrap().clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    request: Request<Incoming>,
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
    faults: Arc<Mutex<Vec<String>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let content_type = parts.headers.get("content-type");
    if parts.method != Method::POST
        || parts.uri.path() != "/v1/traces"
        || content_type.is_none_or(|value| value != "application/x-protobuf")
    {
        faults
            .lock()
            .unwrap()
            .push(format!("{} {} {content_type:?}", parts.method, parts.uri));
        return Ok(Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::default())
            .unwrap());
    }
    match ExportTraceServiceRequest::decode(body) {
        Err(error) => faults.lock().unwrap().push(format!("undecodable: {error}")),
        Ok(export) => {
            let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect();
            let mut spans = spans.lock().unwrap();
            for resource_spans in export.resource_spans {
                let service = resource_spans.resource.and_then(|resource| {
                    resource
                        .attributes
                        .into_iter()
                        .find(|kv| kv.key == "service.name")
                        .and_then(|kv| kv.value?.value)
                        .map(|value| match value {
                            AnyValue::StringValue(name) => name,
                            other => format!("{other:?}"),
                        })
                });
                for span in resource_spans
                    .scope_spans
                    .into_iter()
                    .flat_map(|scope| scope.spans)
                {
                    spans.push(ExportedSpan {
                        service: service.clone(),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        attributes: span.attributes,
                    });
                }
            }
        }
    }
    // An empty ExportTraceServiceResponse: everything was accepted.
    Ok(Response::builder()
        .header("content-type", "application/x-protobuf")
        .body(Full::default())
        .unwrap())
}

/// The request span of the request with this id, and the spans under it.
fn request_and_children<'a>(
    spans: &'a [ExportedSpan],
    request_id: &str,
) -> (&'a ExportedSpan, Vec<&'a ExportedSpan>) {
    let request = spans
        .iter()
        .find(|span| {
            span.name == "request" && span.attribute("request_id").as_deref() == Some(request_id)
        })
        .unwrap_or_else(|| panic!("no request span for {request_id} in {spans:#?}"));
    let children = spans
        .iter()
        .filter(|span| span.trace_id == request.trace_id && span.parent_span_id == request.span_id)
        .collect();
    (request, children)
}

/// The ids of a `traceparent`: (trace id, parent span id).
fn traceparent_ids(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "a W3C traceparent: {traceparent}");
    (parts[1].to_string(), parts[2].to_string())
}

async fn request_spans_are_exported_with_their_store_and_upstream_calls(backend: Backend) {
    let collector = Collector::start().await;
    let upstream = EchoUpstream::start().await;
    let deployment = Deployment::new(backend).await;
    let gateway = Process::start(
        &deployment,
        &[
            "--upstream",
            &upstream.url(),
            "--otlp-endpoint",
            &collector.url(),
            "--trusted-proxies",
            "127.0.0.2/32",
        ],
    )
    .await;
    let tokens = Tokens::from(&gateway.register("alice", PASSWORD).await);
    let login = gateway
        .send(
            Method::POST,
            "/api/auth/login",
            &[("x-request-id", "req-login")],
            Some(crate::helpers::Body::Json(
                json!({ "username": "alice", "password": PASSWORD }),
            )),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK);

    let bearer = format!("Bearer {}", tokens.access);
    let untrusted = gateway
        .send(
            Method::GET,
            "/api/tickets",
            &[
                ("authorization", &bearer),
                ("x-request-id", "req-untrusted"),
                (
                    "traceparent",
                    &format!("00-{CLIENT_TRACE_ID}-b7ad6b7169203331-01"),
                ),
                ("tracestate", "client=claims"),
            ],
            None,
        )
        .await;
    assert_eq!(untrusted.status, StatusCode::OK);
    let untrusted_upstream = upstream.last();

    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(IpAddr::from(PROXY_ADDRESS)));
    let from_proxy = Client::builder(TokioExecutor::new()).build(connector);
    let trusted = send_request(
        &from_proxy,
        Method::GET,
        &gateway.url("/api/tickets"),
        &[
            ("authorization", &bearer),
            ("x-request-id", "req-trusted"),
            (
                "traceparent",
                &format!("00-{PROXY_TRACE_ID}-{PROXY_SPAN_ID}-01"),
            ),
            ("tracestate", "proxy=1"),
        ],
        None,
    )
    .await;
    assert_eq!(trusted.status, StatusCode::OK);
    let trusted_upstream = upstream.last();

    // Spans go out in batches; the last ones when the gateway stops.
    gateway.signal("TERM");
    assert_eq!(gateway.exit_code(Duration::from_secs(20)).await, Some(0));
    let spans = collector.spans();
    assert!(
        spans
            .iter()
            .all(|span| span.service.as_deref() == Some("tollgate")),
        "service.name: {spans:#?}"
    );

    // A login: its request span, and the store calls under it.
    let (request, children) = request_and_children(&spans, "req-login");
    assert_eq!(request.attribute("route").as_deref(), Some("auth"));
    assert_eq!(request.attribute("method").as_deref(), Some("POST"));
    assert_eq!(request.attribute("client").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        request.attribute("http.response.status_code").as_deref(),
        Some("200")
    );
    assert!(request.attribute("user_id").is_some(), "{request:#?}");
    assert!(request.parent_span_id.is_empty(), "a trace of its own");
    let names: Vec<&str> = children.iter().map(|span| span.name.as_str()).collect();
    assert!(names.contains(&"user_by_username"), "{names:?}");
    assert!(names.contains(&"start_session"), "{names:?}");

    // An untrusted client's trace context is neither continued nor passed on.
    let (request, children) = request_and_children(&spans, "req-untrusted");
    assert_ne!(request.trace_id, CLIENT_TRACE_ID);
    assert!(request.parent_span_id.is_empty(), "{request:#?}");
    assert_eq!(request.attribute("route").as_deref(), Some("proxy"));
    let forward = children
        .iter()
        .find(|span| span.name == "upstream")
        .unwrap_or_else(|| panic!("an upstream span under the request: {children:#?}"));
    let traceparent = untrusted_upstream
        .header("traceparent")
        .expect("the upstream gets the gateway's traceparent");
    assert_eq!(
        traceparent_ids(traceparent),
        (request.trace_id.clone(), forward.span_id.clone()),
        "the upstream's parent is the gateway's upstream call"
    );
    assert_eq!(untrusted_upstream.header("tracestate"), None);

    // A trusted proxy's trace goes on through the gateway to the upstream.
    let (request, children) = request_and_children(&spans, "req-trusted");
    assert_eq!(request.trace_id, PROXY_TRACE_ID);
    assert_eq!(request.parent_span_id, PROXY_SPAN_ID);
    assert_eq!(request.attribute("client").as_deref(), Some("127.0.0.2"));
    let forward = children
        .iter()
        .find(|span| span.name == "upstream")
        .unwrap_or_else(|| panic!("an upstream span under the request: {children:#?}"));
    let traceparent = trusted_upstream.header("traceparent").unwrap();
    assert_eq!(
        traceparent_ids(traceparent),
        (PROXY_TRACE_ID.to_string(), forward.span_id.clone())
    );
    assert_eq!(trusted_upstream.header("tracestate"), Some("proxy=1"));
}

async fn every_json_log_line_of_a_request_carries_its_id(backend: Backend) {
    let upstream = EchoUpstream::start().await;
    // Nothing listens on the second route's port: its requests fail with a
    // 502, whose cause is logged.
    let unreachable = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let unreachable_url = format!("http://{}", unreachable.local_addr().unwrap());
    drop(unreachable);
    let deployment = Deployment::new(backend).await;
    let gateway = Process::start(
        &deployment,
        &[
            "--upstream",
            &upstream.url(),
            "--route",
            &format!("/down={unreachable_url}"),
        ],
    )
    .await;
    let tokens = Tokens::from(&gateway.register("alice", PASSWORD).await);
    let bearer = format!("Bearer {}", tokens.access);
    let requests: [(&str, Method, &str, Option<Value>); 4] = [
        (
            "req-refused",
            Method::POST,
            "/api/auth/login",
            Some(json!({ "username": "alice", "password": "wrong password" })),
        ),
        ("req-proxied", Method::GET, "/api/tickets", None),
        ("req-failed", Method::GET, "/down/x", None),
        ("req-unauthenticated", Method::GET, "/api/auth/me", None),
    ];
    for (id, method, path, body) in &requests {
        let authorization = match *id {
            "req-proxied" | "req-failed" => bearer.as_str(),
            _ => "",
        };
        let mut headers = vec![("x-request-id", *id)];
        if !authorization.is_empty() {
            headers.push(("authorization", authorization));
        }
        gateway
            .send(
                method.clone(),
                path,
                &headers,
                body.clone().map(crate::helpers::Body::Json),
            )
            .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let logs = gateway.logs();
    let lines: Vec<Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("a JSON line: {line}")))
        .collect();
    for line in logs.lines() {
        for key in ["request_id", "method", "status", "user_id"] {
            assert!(
                line.matches(&format!("\"{key}\":")).count() <= 1,
                "{key} twice in {line}"
            );
        }
    }
    let of_request = |id: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|line| line["request_id"] == id)
            .collect()
    };
    for (id, method, path, _) in &requests {
        let lines = of_request(id);
        let access = lines
            .iter()
            .find(|line| line["message"] == "request")
            .unwrap_or_else(|| panic!("no access line for {id} in:\n{logs}"));
        assert_eq!(access["method"], method.as_str(), "{access}");
        assert_eq!(access["path"], *path, "{access}");
        assert_eq!(access["client"], "127.0.0.1", "{access}");
        assert!(access.get("span").is_none() && access.get("spans").is_none());
    }
    let refused = of_request("req-refused");
    assert!(
        refused
            .iter()
            .any(|line| line["message"] == "login refused" && line["username"] == "alice"),
        "the refused login's line carries its request id:\n{logs}"
    );
    assert!(
        of_request("req-unauthenticated")
            .iter()
            .any(|line| line["message"] == "auth failure"),
        "the refused credential's line carries its request id:\n{logs}"
    );
    let failed = of_request("req-failed");
    let cause = failed
        .iter()
        .find(|line| line["message"] == "request failed")
        .unwrap_or_else(|| panic!("the 5xx cause carries its request id:\n{logs}"));
    assert_eq!(cause["level"], "ERROR");
    assert_eq!(cause["route"], "proxy");
    assert_eq!(cause["code"], "bad_gateway");
    assert_eq!(cause["user_id"], tokens_user_id(&tokens));
}

fn tokens_user_id(tokens: &Tokens) -> String {
    crate::helpers::claims_of(&tokens.access)["sub"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn only_a_trusted_proxy_may_pass_a_traceparent_on(backend: Backend) {
    let upstream = EchoUpstream::start().await;
    let app = TestApp::spawn_with(
        backend,
        &[
            "--upstream",
            &upstream.url(),
            "--public-paths",
            "/public",
            "--trusted-proxies",
            "127.0.0.2/32",
        ],
    )
    .await;
    let traceparent = format!("00-{PROXY_TRACE_ID}-{PROXY_SPAN_ID}-01");
    let headers = [
        ("traceparent", traceparent.as_str()),
        ("tracestate", "vendor=1"),
    ];
    let response = app.send(Method::GET, "/public/x", &headers, None).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(upstream.last().header("traceparent"), None);
    assert_eq!(upstream.last().header("tracestate"), None);

    // Without an exporter the gateway is not part of the trace: a trusted
    // proxy's context reaches the upstream as it was sent.
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(IpAddr::from(PROXY_ADDRESS)));
    let from_proxy = Client::builder(TokioExecutor::new()).build(connector);
    let url = format!("http://{}/public/x", app.addr);
    let response = send_request(&from_proxy, Method::GET, &url, &headers, None).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        upstream.last().header("traceparent"),
        Some(traceparent.as_str())
    );
    assert_eq!(upstream.last().header("tracestate"), Some("vendor=1"));
}

on_both_backends!(
    request_spans_are_exported_with_their_store_and_upstream_calls,
    every_json_log_line_of_a_request_carries_its_id,
    only_a_trusted_proxy_may_pass_a_traceparent_on,
);
