//! Log output, and where spans go. Logs are human-readable text or one JSON
//! object per line, the level from `RUST_LOG`. They go to stderr so command
//! output on stdout stays clean, through a writer thread, so a request never
//! waits on a write to stderr. A line written inside a request's span carries
//! the span's fields (request id, method, route, client, user id): in text
//! after the span's name, in JSON as top-level fields of the line's object.
//! With `--otlp-endpoint`, spans are exported too ([`crate::otel`]).
//!
//! A panic, in any thread or task, is one error line like any other (JSON
//! when logs are JSON), carrying the panic's message and location and the
//! fields of the span it happened in.

use std::cell::Cell;
use std::panic::PanicHookInfo;

use anyhow::Context;
use http::Uri;
use tracing::Subscriber;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::LogFormat;
use crate::otel::TraceExport;

/// What must outlive the process's work: the log writer thread and the
/// trace exporter.
pub struct Logging {
    _writer: WorkerGuard,
    traces: Option<TraceExport>,
}

impl Logging {
    /// Exports the spans still queued. Call it once the work is done, while
    /// the runtime the exporter sends on still runs, and not on one of its
    /// worker threads. Queued log lines are written when `self` drops.
    pub fn shutdown(self) {
        if let Some(traces) = self.traces {
            traces.shutdown();
        }
    }
}

/// Installs the global subscriber: logs at `default_level` unless `RUST_LOG`
/// says otherwise, and with an `otlp_endpoint` the trace export, whose
/// requests run on `runtime`.
pub fn init(
    format: LogFormat,
    default_level: &str,
    otlp_endpoint: Option<&Uri>,
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<Logging> {
    let traces = otlp_endpoint
        .map(|endpoint| {
            TraceExport::start(endpoint, runtime.clone())
                .with_context(|| format!("cannot export traces to {endpoint}"))
        })
        .transpose()?;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Buffered: the writer thread writes what queued up since its last
    // write in one system call, not one per line, and flushes after each
    // batch.
    let stderr = std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking(stderr);
    // A second initialisation keeps the first, and its panic hook.
    if subscriber(format, filter, writer, ansi, traces.as_ref())
        .try_init()
        .is_ok()
    {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| log_panic(info, &*default_hook)));
    }
    Ok(Logging {
        _writer: guard,
        traces,
    })
}

/// The subscriber [`init`] installs, writing logs to `writer`.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
    traces: Option<&TraceExport>,
) -> impl Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(ansi)
            .with_filter(filter)
            .boxed(),
        // Span fields at the top level, beside the event's: the spans' field
        // names and the events' are kept apart so no key appears twice.
        LogFormat::Json => json_subscriber::fmt::layer()
            .with_writer(writer)
            .flatten_event(true)
            .with_current_span(false)
            .flatten_span_list_on_top_level(true)
            .with_filter(filter)
            .boxed(),
    };
    let registry = tracing_subscriber::registry().with(logs);
    let export = traces.map(TraceExport::layer);
    registry.with(export)
}

thread_local! {
    /// Set while this thread logs a panic: a panic inside logging itself
    /// must not try to log again.
    static LOGGING_A_PANIC: Cell<bool> = const { Cell::new(false) };
}

/// The panic hook: the panic as one error line through the subscriber, with
/// its message and location (and a backtrace when `RUST_BACKTRACE` asks for
/// one), never the request's headers or body. The default hook, which
/// writes several lines of plain text straight to stderr (breaking JSON
/// logs, and repeating the line), runs only when that line would not be
/// written: when error lines are filtered out, or when the panic happened
/// while logging.
fn log_panic(info: &PanicHookInfo<'_>, default_hook: &(dyn Fn(&PanicHookInfo<'_>) + Send + Sync)) {
    if LOGGING_A_PANIC.get() || !tracing::enabled!(tracing::Level::ERROR) {
        return default_hook(info);
    }
    LOGGING_A_PANIC.set(true);
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic without a message)");
    let location = info
        .location()
        .map(|location| location.to_string())
        .unwrap_or_default();
    let thread = std::thread::current();
    let backtrace = std::backtrace::Backtrace::capture();
    if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
        // Debug: its frames on one line.
        tracing::error!(
            panic = message,
            location,
            thread = thread.name(),
            ?backtrace,
            "panicked"
        );
    } else {
        tracing::error!(
            panic = message,
            location,
            thread = thread.name(),
            "panicked"
        );
    }
    LOGGING_A_PANIC.set(false);
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing::field;

    use super::*;

    /// Log lines written to memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What a request logs: a line in its span, another in a debug child
    /// span (seen when RUST_LOG asks for debug), and one after the user is
    /// known.
    fn log_a_request(format: LogFormat, level: &str) -> Vec<String> {
        let lines = Lines::default();
        let writer = {
            let lines = lines.clone();
            move || lines.clone()
        };
        let subscriber = subscriber(format, EnvFilter::new(level), writer, false, None);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                request_id = "req-1",
                method = "GET",
                route = field::Empty,
                client = "192.0.2.1",
                user_id = field::Empty,
            );
            let _request = span.enter();
            span.record("route", "proxy");
            tracing::info!(reason = "expired", "auth failure");
            tracing::debug_span!("upstream").in_scope(|| tracing::error!("request failed"));
            span.record("user_id", "u-1");
            tracing::info!(status = 200, "request");
        });
        let bytes = lines.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn json_lines_carry_the_span_fields_at_the_top_level() {
        for level in ["info", "debug"] {
            let lines = log_a_request(LogFormat::Json, level);
            assert_eq!(lines.len(), 3, "{lines:?}");
            for line in &lines {
                let object: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(object["request_id"], "req-1", "{line}");
                assert_eq!(object["method"], "GET", "{line}");
                assert_eq!(object["route"], "proxy", "{line}");
                assert_eq!(object["client"], "192.0.2.1", "{line}");
                assert!(object.get("span").is_none() && object.get("spans").is_none());
                assert_eq!(line.matches("\"request_id\"").count(), 1, "{line}");
            }
            let access: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
            assert_eq!(access["user_id"], "u-1");
            assert_eq!(access["status"], 200);
            assert_eq!(access["message"], "request");
        }
    }

    /// What the panic hook logs of a panic inside a request's span; the
    /// line the panic is on.
    fn log_a_panic(format: LogFormat) -> (Vec<String>, u32) {
        let lines = Lines::default();
        let writer = {
            let lines = lines.clone();
            move || lines.clone()
        };
        let subscriber = subscriber(format, EnvFilter::new("info"), writer, false, None);
        // The hook is process-wide: panics of other tests meanwhile go on to
        // the previous hook, since no subscriber is theirs.
        let previous: Arc<dyn Fn(&PanicHookInfo<'_>) + Send + Sync> =
            Arc::from(std::panic::take_hook());
        std::panic::set_hook(Box::new({
            let previous = previous.clone();
            move |info| log_panic(info, &*previous)
        }));
        let mut line = 0;
        tracing::subscriber::with_default(subscriber, || {
            let _request = tracing::info_span!("request", request_id = "req-1").entered();
            let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                line = line!() + 1;
                panic!("index {} out of range", 7);
            }));
            assert!(panicked.is_err());
        });
        let _ = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| previous(info)));
        let bytes = lines.0.lock().unwrap().clone();
        let lines = String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        (lines, line)
    }

    #[test]
    fn a_panic_is_one_error_line_with_its_message_and_location() {
        let (lines, line) = log_a_panic(LogFormat::Json);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let object: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(object["level"], "ERROR", "{object}");
        assert_eq!(object["message"], "panicked", "{object}");
        assert_eq!(object["panic"], "index 7 out of range", "{object}");
        assert_eq!(object["request_id"], "req-1", "{object}");
        let location = object["location"].as_str().unwrap();
        assert!(
            location.starts_with(&format!("src/logging.rs:{line}:")),
            "{location}"
        );

        let (lines, line) = log_a_panic(LogFormat::Text);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("ERROR"), "{}", lines[0]);
        assert!(
            lines[0].contains("panic=\"index 7 out of range\"")
                && lines[0].contains(&format!("src/logging.rs:{line}:")),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn text_lines_carry_the_span_fields_on_one_line() {
        let lines = log_a_request(LogFormat::Text, "info");
        assert_eq!(lines.len(), 3, "{lines:?}");
        for line in &lines {
            assert!(
                line.contains("request_id=\"req-1\"") && line.contains("client=\"192.0.2.1\""),
                "{line}"
            );
        }
        assert!(lines[2].contains("user_id=\"u-1\"") && lines[2].contains("status=200"));
    }
}
