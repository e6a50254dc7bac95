//! What one request's telemetry costs the thread serving it: its span, the
//! user and route recorded on it, the upstream call's child span, and the
//! access line, through the production subscriber and the non-blocking
//! writer (into a sink): at `warn` (no line, as in the load benchmark), with
//! a text or a JSON line, and with the spans exported as well.
//!
//! `cargo bench --bench request_telemetry`
//!
//! Times are the serving thread's CPU time, not wall time, so
//! that other work on the machine does not count; the writer thread's share
//! is left out.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, Method};
use tollgate::client_addr::ClientInfo;
use tollgate::config::LogFormat;
use tollgate::domain::UserId;
use tollgate::logging;
use tollgate::otel::TraceExport;
use tollgate::pipeline;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

/// CPU time this thread has run.
fn thread_cpu() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// What the pipeline does for the telemetry of one proxied request.
fn one_request(headers: &HeaderMap, client: &ClientInfo, user: &UserId, child_span: bool) {
    let started = Instant::now();
    let span = pipeline::request_span(&Method::GET, headers, client);
    let serve = async {
        tracing::Span::current().record("route", "proxy");
        tollgate::request::note_user_id(user);
        let upstream = async { std::hint::black_box(200u16) };
        let status = if child_span {
            upstream
                .instrument(tracing::debug_span!("upstream", upstream = "/"))
                .await
        } else {
            upstream.await
        };
        // The access line, as `pipeline::handle` writes it.
        tracing::info!(
            path = "/api/tickets",
            status,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
    };
    serve
        .instrument(span)
        .now_or_never()
        .expect("nothing waits");
}

fn request_telemetry(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-request-id",
        HeaderValue::from_static("3f2c1a7e-8d4b-4c1e-9b2a-5e6f7a8b9c0d"),
    );
    let client = ClientInfo {
        peer: IpAddr::from([127, 0, 0, 1]),
        peer_is_trusted: false,
        address: IpAddr::from([127, 0, 0, 1]),
    };
    let user = UserId::parse("6553cb73-4e83-4e5a-b25b-283f3ee92a8e").unwrap();
    // Lossy, as a full queue must not make this thread wait on the sink.
    let (writer, _flush) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .finish(std::io::sink());

    // With an exporter whose collector never answers: the spans are made
    // and queued (then dropped once the queue is full) as with a real one.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let export = TraceExport::start(
        &"http://127.0.0.1:9".parse().unwrap(),
        runtime.handle().clone(),
    )
    .unwrap();

    let mut group = c.benchmark_group("request telemetry");
    for (name, format, level, traces) in [
        ("RUST_LOG=warn", LogFormat::Text, "warn", None),
        ("text line", LogFormat::Text, "info", None),
        ("json line", LogFormat::Json, "info", None),
        (
            "json line, spans exported",
            LogFormat::Json,
            "info",
            Some(&export),
        ),
    ] {
        let subscriber =
            logging::subscriber(format, EnvFilter::new(level), writer.clone(), false, traces);
        tracing::subscriber::with_default(subscriber, || {
            for (child, child_span) in [("", false), (" + upstream span", true)] {
                group.bench_function(format!("{name}{child}"), |b| {
                    b.iter_custom(|iterations| {
                        let before = thread_cpu();
                        for _ in 0..iterations {
                            one_request(&headers, &client, &user, child_span);
                        }
                        thread_cpu() - before
                    })
                });
            }
        });
    }
    group.finish();
}

criterion_group!(benches, request_telemetry);
criterion_main!(benches);
