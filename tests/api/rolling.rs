//! Guarantee 6 of the contract: three gateway processes on one Postgres
//! database behind a real nginx, restarted one at a time with SIGTERM while
//! several clients keep proxying and refreshing. No request fails and nobody
//! is logged out.
//!
//! nginx is the load balancer as a platform's would be: keep-alive
//! connections to the instances, and `proxy_next_upstream error timeout
//! non_idempotent`, so a request that meets a closing instance (its listener
//! gone, or a keep-alive connection it closed while the request was on the
//! way) is sent to the next one. For a refresh that is safe under the
//! contract: the same refresh token presented again within the reuse grace
//! is answered, in the same session.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use crate::helpers::{Backend, Deployment, GatewayClient, PASSWORD, Tokens};
use crate::ingress::Nginx;
use crate::process::Process;
use crate::upstream::EchoUpstream;

const INSTANCES: usize = 3;
/// Clients proxying quick GETs, and clients whose GETs take a while, so
/// that requests are in flight on the instance that is being stopped.
const CLIENTS: usize = 4;
const SLOW_CLIENTS: usize = 3;
const SLOW_PATH: &str = "/slow/600";
/// Each client refreshes this often, and proxies GETs in between.
const REFRESH_EVERY: Duration = Duration::from_millis(300);
/// A steady stream, not a flood: the suite runs timing-sensitive tests beside
/// this one on the same cores.
const PAUSE_BETWEEN_REQUESTS: Duration = Duration::from_millis(40);
/// How long nginx leaves an instance out after a failed attempt.
const NGINX_FAIL_TIMEOUT_S: u64 = 2;
/// Load before the first restart, and between a restart and the next one:
/// longer than nginx's fail timeout, so the restarted instance is back in
/// the rotation before the next one leaves it.
const SETTLE: Duration = Duration::from_secs(NGINX_FAIL_TIMEOUT_S + 2);

/// nginx balancing over `upstreams`.
fn load_balancer(upstreams: &[SocketAddr]) -> Nginx {
    let servers: String = upstreams
        .iter()
        .map(|addr| {
            format!("        server {addr} max_fails=1 fail_timeout={NGINX_FAIL_TIMEOUT_S}s;\n")
        })
        .collect();
    Nginx::start(|listen| {
        format!(
            r#"    upstream tollgate {{
{servers}        keepalive 32;
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://tollgate;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_connect_timeout 1s;
            # A request that meets a closing instance goes to the next one,
            # POST included (a refresh retried within the grace is answered).
            proxy_next_upstream error timeout non_idempotent;
            proxy_next_upstream_tries {INSTANCES};
            proxy_next_upstream_timeout 10s;
        }}
    }}"#
        )
    })
}

/// What happened when, for the failure message.
#[derive(Clone)]
struct Timeline {
    started: Instant,
    events: Arc<Mutex<Vec<String>>>,
}

impl Timeline {
    fn new() -> Timeline {
        Timeline {
            started: Instant::now(),
            events: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn note(&self, event: String) {
        let at = self.started.elapsed().as_secs_f64();
        self.events
            .lock()
            .unwrap()
            .push(format!("{at:8.3}s {event}"));
    }

    fn text(&self) -> String {
        self.events.lock().unwrap().join("\n")
    }
}

/// How many requests an instance answered after it logged the start of its
/// shutdown: those that were in flight when SIGTERM came.
fn requests_after_shutdown_began(logs: &str) -> usize {
    logs.lines()
        .skip_while(|line| !line.contains("shutting down"))
        .filter(|line| line.contains("\"message\":\"request\""))
        .count()
}

/// One request through the load balancer: its status and body, or why it
/// got none.
async fn send(
    lb: &GatewayClient,
    method: Method,
    path: &str,
    access_token: Option<&str>,
    body: Option<Value>,
) -> Result<(StatusCode, Bytes), String> {
    let mut request = Request::builder().method(method).uri(lb.url(path));
    if let Some(token) = access_token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Bytes::from(body.to_string())
        }
        None => Bytes::new(),
    };
    let response = lb
        .http()
        .request(request.body(Full::new(body)).unwrap())
        .await
        .map_err(|error| format!("no answer: {error:?}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|error| format!("{status}, body cut off: {error}"))?
        .to_bytes();
    Ok((status, body))
}

/// What every client shares: when to stop, how many requests were answered
/// and how many failed, and the timeline the failures are noted in.
#[derive(Clone)]
struct Load {
    stop: Arc<AtomicBool>,
    completed: Arc<AtomicUsize>,
    failures: Arc<AtomicUsize>,
    timeline: Timeline,
}

impl Load {
    fn new(timeline: Timeline) -> Load {
        Load {
            stop: Arc::new(AtomicBool::new(false)),
            completed: Arc::new(AtomicUsize::new(0)),
            failures: Arc::new(AtomicUsize::new(0)),
            timeline,
        }
    }

    fn failed(&self, what: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.timeline.note(format!("FAILED {what}"));
    }

    fn completed(&self) -> usize {
        self.completed.load(Ordering::Relaxed)
    }
}

/// One client with a session of its own: proxied GETs of `path` with its
/// newest access token, and a refresh every [`REFRESH_EVERY`], until the
/// load stops. Every failed request is noted; returns the newest tokens and
/// how many GETs and refreshes succeeded.
async fn keep_busy(
    client: usize,
    path: &'static str,
    lb: Arc<GatewayClient>,
    mut tokens: Tokens,
    load: Load,
) -> (Tokens, usize, usize) {
    let (mut gets, mut refreshes) = (0, 0);
    let mut last_refresh = Instant::now();
    while !load.stop.load(Ordering::Relaxed) {
        if last_refresh.elapsed() >= REFRESH_EVERY {
            last_refresh = Instant::now();
            let body = json!({ "refresh_token": tokens.refresh });
            match send(&lb, Method::POST, "/api/auth/refresh", None, Some(body)).await {
                Ok((StatusCode::OK, body)) => {
                    let body: Value = serde_json::from_slice(&body).unwrap();
                    tokens.access = body["access_token"].as_str().unwrap().to_string();
                    tokens.refresh = body["refresh_token"].as_str().unwrap().to_string();
                    refreshes += 1;
                }
                Ok((status, body)) => {
                    load.failed(format!(
                        "client {client} refresh: {status} {}",
                        String::from_utf8_lossy(&body)
                    ));
                }
                Err(error) => {
                    load.failed(format!("client {client} refresh: {error}"));
                }
            }
        } else {
            match send(&lb, Method::GET, path, Some(&tokens.access), None).await {
                Ok((StatusCode::OK, _)) => gets += 1,
                Ok((status, body)) => {
                    load.failed(format!(
                        "client {client} GET {path}: {status} {}",
                        String::from_utf8_lossy(&body)
                    ));
                }
                Err(error) => {
                    load.failed(format!("client {client} GET {path}: {error}"));
                }
            }
        }
        load.completed.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(PAUSE_BETWEEN_REQUESTS).await;
    }
    (tokens, gets, refreshes)
}

async fn three_instances_restarted_one_at_a_time_under_load(backend: Backend) {
    let upstream = EchoUpstream::start().await;
    let deployment = Deployment::new(backend).await;
    let upstream_url = upstream.url();
    let flags = [
        "--upstream",
        upstream_url.as_str(),
        "--trusted-proxies",
        "127.0.0.1/32",
    ];
    let mut instances = Vec::new();
    for _ in 0..INSTANCES {
        instances.push(Some(Process::start(&deployment, &flags).await));
    }
    let addrs: Vec<SocketAddr> = instances
        .iter()
        .map(|instance| instance.as_ref().unwrap().addr)
        .collect();
    let nginx = load_balancer(&addrs);
    let lb = Arc::new(GatewayClient::new(nginx.addr));

    let timeline = Timeline::new();
    let load = Load::new(timeline.clone());
    let mut clients = Vec::new();
    for client in 0..CLIENTS + SLOW_CLIENTS {
        let tokens = lb.signed_up(&format!("client{client}")).await;
        let path = if client < CLIENTS {
            "/api/tickets"
        } else {
            SLOW_PATH
        };
        clients.push(tokio::spawn(keep_busy(
            client,
            path,
            lb.clone(),
            tokens,
            load.clone(),
        )));
    }
    timeline.note(format!("{} clients busy", CLIENTS + SLOW_CLIENTS));
    tokio::time::sleep(SETTLE).await;

    // Each instance in turn: SIGTERM, wait for it to exit, start it again on
    // the same port, and let the load run on before the next one.
    let mut served_during_restarts = Vec::new();
    let mut finished_while_draining = Vec::new();
    for (index, slot) in instances.iter_mut().enumerate() {
        let instance = slot.take().unwrap();
        let before = load.completed();
        timeline.note(format!("SIGTERM to instance {index} ({})", addrs[index]));
        instance.signal("TERM");
        let logs = instance.logs_handle();
        let exit = instance.exit_code(Duration::from_secs(40)).await;
        // Its last log lines are still on their way through the pipe.
        tokio::time::sleep(Duration::from_millis(100)).await;
        finished_while_draining.push(requests_after_shutdown_began(&logs.lock().unwrap()));
        timeline.note(format!("instance {index} exited: {exit:?}"));
        assert_eq!(exit, Some(0), "instance {index} exit status");
        let listen = addrs[index].to_string();
        *slot = Some(Process::start_on(&listen, &deployment, &flags).await);
        timeline.note(format!("instance {index} listening again"));
        served_during_restarts.push(load.completed() - before);
        tokio::time::sleep(SETTLE).await;
    }

    load.stop.store(true, Ordering::Relaxed);
    let mut finals = Vec::new();
    let (mut gets, mut refreshes) = (0, 0);
    for client in clients {
        let (tokens, client_gets, client_refreshes) = client.await.unwrap();
        gets += client_gets;
        refreshes += client_refreshes;
        finals.push(tokens);
    }
    let failed = load.failures.load(Ordering::Relaxed);
    eprintln!(
        "rolling restart: {gets} proxied GETs and {refreshes} refreshes by {} clients, \
         {failed} failed; requests answered while each instance restarted: \
         {served_during_restarts:?}; finished by the stopping instance after SIGTERM: \
         {finished_while_draining:?}",
        CLIENTS + SLOW_CLIENTS
    );
    assert_eq!(
        failed,
        0,
        "requests failed during the rolling restart:\n{}\n\nnginx error log:\n{}\n\nnginx \
         access log (non-200 only):\n{}",
        timeline.text(),
        nginx.error_log(),
        nginx
            .access_log()
            .lines()
            .filter(|line| !line.contains(" 200 ") && !line.contains(" 201 "))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The load was real: every client kept going, every restart happened
    // under it, and every restarted instance took its share afterwards.
    let minimum_refreshes = (SETTLE.as_millis() / REFRESH_EVERY.as_millis()) as usize;
    assert!(
        refreshes >= CLIENTS * minimum_refreshes && gets >= refreshes,
        "too little load: {gets} GETs, {refreshes} refreshes"
    );
    assert!(
        served_during_restarts.iter().all(|&served| served > 0),
        "no request was answered while an instance restarted: {served_during_restarts:?}"
    );
    for (index, instance) in instances.iter().enumerate() {
        let logs = instance.as_ref().unwrap().logs();
        assert!(
            logs.contains("\"path\":\"/api/tickets\""),
            "restarted instance {index} was given no traffic:\n{logs}"
        );
    }

    // Nobody was logged out: each client's newest refresh token refreshes,
    // and the new access token works through nginx and on every instance.
    for (client, tokens) in finals.iter().enumerate() {
        let refreshed = lb.refresh(&tokens.refresh).await;
        assert_eq!(
            refreshed.status,
            StatusCode::OK,
            "client {client}'s final refresh: {}",
            refreshed.text()
        );
        let tokens = Tokens::from(&refreshed);
        assert_eq!(lb.me(&tokens.access).await.status, StatusCode::OK);
        for (index, instance) in instances.iter().enumerate() {
            let me = instance.as_ref().unwrap().me(&tokens.access).await;
            assert_eq!(
                me.status,
                StatusCode::OK,
                "client {client} on instance {index}: {}",
                me.text()
            );
            assert_eq!(me.json()["username"], format!("client{client}"));
        }
    }
    // The password still logs in: nothing about the accounts was lost.
    let login = lb.login("client0", PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());
}

mod postgres_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_instances_restarted_one_at_a_time_under_load() {
        super::three_instances_restarted_one_at_a_time_under_load(crate::helpers::Backend::Postgres)
            .await
    }
}
