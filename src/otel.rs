//! OpenTelemetry, with `--otlp-endpoint` only: each request's span and its
//! store and upstream child spans are exported over OTLP/HTTP (protobuf) to
//! `<endpoint>/v1/traces`, in batches, from a thread of their own; W3C trace
//! context is continued from a trusted proxy and passed to the upstream.
//! Without the flag none of this is built and a request pays nothing for it.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Status, TraceContextExt, TracerProvider as _};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::DynFilterFn;
use tracing_subscriber::registry::LookupSpan;

/// The name of the span every request gets; the only span that may start a
/// trace (background work is not traced).
pub const REQUEST_SPAN: &str = "request";

/// How long one export may take before the batch is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// A collector's answer is a small protobuf message; more is not read.
const MAX_COLLECTOR_ANSWER: usize = 64 * 1024;

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The running exporter. [`TraceExport::shutdown`] sends what is queued.
pub struct TraceExport {
    provider: SdkTracerProvider,
}

impl TraceExport {
    /// Starts exporting to `<endpoint>/v1/traces`. The HTTP requests run on
    /// `runtime`, which must outlive [`TraceExport::shutdown`].
    pub fn start(endpoint: &Uri, runtime: tokio::runtime::Handle) -> anyhow::Result<TraceExport> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(traces_url(endpoint))
            .with_timeout(EXPORT_TIMEOUT)
            .with_http_client(RuntimeClient::new(runtime)?)
            .build()?;
        let resource = Resource::builder()
            .with_service_name("tollgate")
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        Ok(TraceExport { provider })
    }

    /// The layer that turns spans into exported ones: the request spans, and
    /// the spans (debug level included) and events inside them.
    pub fn layer<S>(&self) -> impl Layer<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let in_a_request = DynFilterFn::new(|metadata, cx| {
            metadata.name() == REQUEST_SPAN || cx.lookup_current().is_some()
        })
        .with_callsite_filter(|metadata| {
            let ours = metadata.target().starts_with("tollgate")
                && *metadata.level() <= LevelFilter::DEBUG;
            if ours {
                Interest::sometimes()
            } else {
                Interest::never()
            }
        })
        .with_max_level_hint(LevelFilter::DEBUG);
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("tollgate"))
            .with_threads(false)
            .with_filter(in_a_request)
    }

    /// Exports the spans still queued, waiting for the collector's answer.
    /// Call it from outside the runtime's worker threads.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "cannot export the last spans");
        }
    }
}

/// The OTLP/HTTP traces URL under a collector's base URL.
fn traces_url(endpoint: &Uri) -> String {
    format!("{}/v1/traces", endpoint.to_string().trim_end_matches('/'))
}

/// Makes the request's span continue the trace a trusted proxy started:
/// its `traceparent` becomes the span's parent, its `tracestate` is kept.
/// Call it before the span is first entered.
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        // Only fails when the span is not exported: nothing to continue then.
        let _ = span.set_parent(parent);
    }
}

/// The answer's status on the request's span: the HTTP status, and an error
/// status for a 5xx.
pub fn record_status(span: &tracing::Span, status: u16) {
    span.set_attribute("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.set_status(Status::error("server error"));
    }
}

/// The W3C trace context headers that make the upstream's spans children
/// of the current span.
#[derive(Debug, Default)]
pub struct TraceHeaders {
    traceparent: Option<HeaderValue>,
    tracestate: Option<HeaderValue>,
}

impl TraceHeaders {
    /// The current span's context, when it is exported.
    pub fn of_current_span() -> TraceHeaders {
        let mut headers = TraceHeaders::default();
        TraceContextPropagator::new()
            .inject_context(&tracing::Span::current().context(), &mut headers);
        headers
    }

    /// Sets them on a request about to be forwarded, replacing any there.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if let Some(traceparent) = &self.traceparent {
            headers.insert(TRACEPARENT, traceparent.clone());
            match &self.tracestate {
                Some(tracestate) => headers.insert(TRACESTATE, tracestate.clone()),
                None => headers.remove(TRACESTATE),
            };
        }
    }
}

impl Injector for TraceHeaders {
    fn set(&mut self, key: &str, value: String) {
        let value = HeaderValue::try_from(value)
            .ok()
            .filter(|value| !value.is_empty());
        match key {
            "traceparent" => self.traceparent = value,
            "tracestate" => self.tracestate = value,
            _ => {}
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// The exporter's HTTP client: the batch thread awaits requests that run on
/// the gateway's runtime, over the same rustls stack as the upstreams.
#[derive(Debug)]
struct RuntimeClient {
    runtime: tokio::runtime::Handle,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl RuntimeClient {
    fn new(runtime: tokio::runtime::Handle) -> anyhow::Result<RuntimeClient> {
        let tls = crate::tls::client_config()?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(RuntimeClient { runtime, client })
    }
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let exchange = async move {
            let response = client.request(request.map(Full::new)).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_COLLECTOR_ANSWER)
                .collect()
                .await?
                .to_bytes();
            Ok::<_, HttpError>(http::Response::from_parts(parts, body))
        };
        // The timer too belongs to the runtime: made inside the task.
        self.runtime
            .spawn(async move { tokio::time::timeout(EXPORT_TIMEOUT, exchange).await })
            .await?
            .map_err(|_| "the collector did not answer in time")?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_goes_under_the_base_url() {
        let url = |raw: &str| traces_url(&raw.parse().unwrap());
        assert_eq!(
            url("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            url("http://collector:4318/"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            url("https://c.example/otlp/"),
            "https://c.example/otlp/v1/traces"
        );
    }

    #[test]
    fn the_gateways_trace_context_replaces_the_one_it_was_sent() {
        let mut ours = TraceHeaders::default();
        ours.set(
            "traceparent",
            format!("00-{}-{}-01", "1".repeat(32), "2".repeat(16)),
        );
        ours.set("tracestate", String::new());
        let mut headers = crate::test_support::headers(&[
            ("traceparent", "00-aaaa-bbbb-01"),
            ("tracestate", "stale=1"),
        ]);
        ours.apply(&mut headers);
        assert_eq!(
            headers["traceparent"],
            format!("00-{}-{}-01", "1".repeat(32), "2".repeat(16))
        );
        assert!(!headers.contains_key("tracestate"));
    }

    #[test]
    fn without_an_exported_span_the_headers_are_left_alone() {
        let mut headers = crate::test_support::headers(&[("traceparent", "00-aaaa-bbbb-01")]);
        TraceHeaders::of_current_span().apply(&mut headers);
        assert_eq!(headers["traceparent"], "00-aaaa-bbbb-01");
    }
}
