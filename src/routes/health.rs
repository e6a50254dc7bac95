//! `/health` (liveness, no database call), `/health/detailed` and `/metrics`.

use futures_util::future::join_all;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::app::App;
use crate::body::{Body, full, json};

pub fn health() -> Response<Body> {
    json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

#[derive(Serialize)]
struct Detailed {
    status: &'static str,
    version: &'static str,
    uptime_s: u64,
    database: DatabaseHealth,
    keys: KeysHealth,
    upstream: UpstreamHealth,
}

#[derive(Serialize)]
struct DatabaseHealth {
    ok: bool,
    backend: &'static str,
    latency_ms: Option<f64>,
}

#[derive(Serialize)]
struct KeysHealth {
    active_kid: String,
    count: usize,
}

#[derive(Serialize)]
struct UpstreamHealth {
    configured: bool,
    /// Every route's upstream accepts connections; none without routes.
    ok: Option<bool>,
    routes: Vec<RouteHealth>,
}

#[derive(Serialize)]
struct RouteHealth {
    prefix: String,
    ok: bool,
}

/// 503 when the database does not answer; everything else is reported.
pub async fn detailed(app: &App) -> Response<Body> {
    let routes = app.proxy.routes();
    let (ping, reachable) = tokio::join!(
        app.store.ping(),
        join_all(routes.iter().map(|route| route.reachable()))
    );
    let upstream_ok = (!routes.is_empty()).then(|| reachable.iter().all(|ok| *ok));
    let keys = app.keys.current();
    let database = DatabaseHealth {
        ok: ping.is_ok(),
        backend: app.store.backend().name(),
        latency_ms: ping
            .as_ref()
            .ok()
            .map(|latency| latency.as_secs_f64() * 1000.0),
    };
    let status = if database.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(
        status,
        &Detailed {
            status: if database.ok && upstream_ok != Some(false) {
                "ok"
            } else {
                "degraded"
            },
            version: env!("CARGO_PKG_VERSION"),
            uptime_s: app.started_at.elapsed().as_secs(),
            database,
            keys: KeysHealth {
                active_kid: keys.signing().kid.clone(),
                count: keys.len(),
            },
            upstream: UpstreamHealth {
                configured: app.proxy.is_configured(),
                ok: upstream_ok,
                routes: routes
                    .iter()
                    .zip(reachable)
                    .map(|(route, ok)| RouteHealth {
                        prefix: route.prefix.clone(),
                        ok,
                    })
                    .collect(),
            },
        },
    )
}

/// The Prometheus text exposition of this instance's metrics.
pub fn metrics(app: &App) -> Response<Body> {
    app.metrics
        .argon2_queue_depth
        .set(app.passwords.queue_depth() as i64);
    let mut response = Response::new(full(app.metrics.render()));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
