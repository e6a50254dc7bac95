//! The real `tollgate` binary as a child process: what only a process can
//! show (SIGKILL, SIGTERM, SIGHUP, several instances starting at once, its
//! logs and its memory).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::ops::Deref;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Backend, Deployment, GatewayClient, PASSWORD, Tokens, header_of};
use crate::on_both_backends;
use crate::upstream::EchoUpstream;

/// A gateway process on port 0 with JSON logs. Its requests are those of
/// [`GatewayClient`], which it dereferences to.
pub struct Process {
    child: Child,
    logs: Arc<Mutex<String>>,
    client: GatewayClient,
}

impl Deref for Process {
    type Target = GatewayClient;

    fn deref(&self) -> &GatewayClient {
        &self.client
    }
}

impl Process {
    pub async fn start(deployment: &Deployment, extra: &[&str]) -> Process {
        Process::start_on("127.0.0.1:0", deployment, extra).await
    }

    /// A gateway process listening on `listen` (a restart on the same port).
    pub async fn start_on(listen: &str, deployment: &Deployment, extra: &[&str]) -> Process {
        Process::launch(Some(listen), deployment, extra, &[]).await
    }

    /// A gateway process on port 0 with `env` added to its environment.
    pub async fn start_with_env(
        deployment: &Deployment,
        extra: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Process {
        Process::launch(Some("127.0.0.1:0"), deployment, extra, env).await
    }

    /// A gateway process told only `PORT`, as platforms start it.
    pub async fn start_with_port(port: u16, deployment: &Deployment, extra: &[&str]) -> Process {
        let port = port.to_string();
        Process::launch(None, deployment, extra, &[("PORT", port.as_ref())]).await
    }

    /// Runs the gateway with the deployment's settings (and `--listen`
    /// unless it is `None`) and waits until it logs where it listens.
    async fn launch(
        listen: Option<&str>,
        deployment: &Deployment,
        extra: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Process {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        if let Some(listen) = listen {
            command.args(["--listen", listen]);
        }
        let mut child = command
            .args(["--log-format", "json"])
            .args(["--database-url", &deployment.database_url])
            .arg("--keys-dir")
            .arg(deployment.keys_dir())
            .args(deployment.key_store_args())
            .args(extra)
            .envs(deployment.environment())
            .env("RUST_LOG", "info")
            .env_remove("PORT")
            .env_remove("TOLLGATE_LISTEN")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting tollgate");
        let logs = Arc::new(Mutex::new(String::new()));
        let (listening, listen_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn({
            let logs = logs.clone();
            move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Ok(event) = serde_json::from_str::<Value>(&line)
                        && let Some(listen) = event["listen"].as_str()
                    {
                        let _ = listening.send(listen.parse::<SocketAddr>().unwrap());
                    }
                    let mut logs = logs.lock().unwrap();
                    logs.push_str(&line);
                    logs.push('\n');
                }
            }
        });
        let addr =
            tokio::task::spawn_blocking(move || listen_rx.recv_timeout(Duration::from_secs(30)))
                .await
                .unwrap()
                .unwrap_or_else(|_| panic!("tollgate did not start:\n{}", logs.lock().unwrap()));
        Process {
            child,
            logs,
            client: GatewayClient::new(addr),
        }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// The logs as they keep growing, also after the process is gone.
    pub fn logs_handle(&self) -> Arc<Mutex<String>> {
        self.logs.clone()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; its exit code.
    pub async fn exit_code(mut self, limit: Duration) -> Option<i32> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("tollgate did not exit within {limit:?}");
    }

    /// Resident memory now, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn tokens_and_refreshes_survive_kill_9(backend: Backend) {
    let upstream = EchoUpstream::start().await;
    let deployment = Deployment::new(backend).await;
    let flags = ["--upstream", &upstream.url()];
    let gateway = Process::start(&deployment, &flags).await;
    let response = gateway.register("alice", PASSWORD).await;
    assert_eq!(response.status, StatusCode::CREATED);
    let first = Tokens::from(&response);

    // Refresh chains and logins race the kill; remember the last refresh
    // token each chain was answered 200 with.
    let gateway = Arc::new(gateway);
    let mut chains = Vec::new();
    for chain in 0..4 {
        let gateway = gateway.clone();
        let response = gateway
            .post_json(
                "/api/auth/login",
                json!({ "username": "alice", "password": PASSWORD }),
            )
            .await;
        let mut latest = Tokens::from(&response).refresh;
        chains.push(tokio::spawn(async move {
            let mut acknowledged = latest.clone();
            for _ in 0..200 {
                let url = format!("http://{}/api/auth/refresh", gateway.addr);
                let request = http::Request::post(url)
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(
                        json!({ "refresh_token": latest }).to_string(),
                    )))
                    .unwrap();
                let Ok(response) = gateway.http().request(request).await else {
                    break;
                };
                if response.status() != StatusCode::OK {
                    panic!("chain {chain}: refresh answered {}", response.status());
                }
                let Ok(body) = http_body_util::BodyExt::collect(response.into_body()).await else {
                    break;
                };
                let body: Value = serde_json::from_slice(&body.to_bytes()).unwrap();
                latest = body["refresh_token"].as_str().unwrap().to_string();
                acknowledged = latest.clone();
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    gateway.signal("KILL");
    let mut acknowledged = Vec::new();
    for chain in chains {
        acknowledged.push(chain.await.unwrap());
    }
    drop(gateway);

    let gateway = Process::start(&deployment, &flags).await;
    assert_eq!(
        gateway
            .get_with_token("/api/auth/me", &first.access)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        gateway
            .get_with_token("/api/tickets", &first.access)
            .await
            .status,
        StatusCode::OK,
        "proxied"
    );
    assert_eq!(gateway.refresh(&first.refresh).await.status, StatusCode::OK);
    for (chain, token) in acknowledged.iter().enumerate() {
        let response = gateway.refresh(token).await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "chain {chain}: {}",
            response.text()
        );
    }
}

async fn sigterm_lets_a_slow_proxied_request_finish(backend: Backend) {
    let upstream = EchoUpstream::start().await;
    let deployment = Deployment::new(backend).await;
    let gateway = Process::start(&deployment, &["--upstream", &upstream.url()]).await;
    let tokens = Tokens::from(&gateway.register("alice", PASSWORD).await);
    let gateway = Arc::new(gateway);
    let slow = tokio::spawn({
        let gateway = gateway.clone();
        let token = tokens.access.clone();
        async move { gateway.get_with_token("/slow/1500", &token).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gateway.signal("TERM");
    let response = slow.await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.text(), "slow");
    let gateway = Arc::into_inner(gateway).unwrap();
    assert_eq!(gateway.exit_code(Duration::from_secs(10)).await, Some(0));
}

async fn sighup_picks_up_a_rotation_at_once(backend: Backend) {
    let deployment = Deployment::new(backend).await;
    let gateway = Process::start(&deployment, &[]).await;
    let before = Tokens::from(&gateway.register("alice", PASSWORD).await);
    let rotated = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--rotate-key")
        .arg("--keys-dir")
        .arg(deployment.keys_dir())
        .output()
        .unwrap();
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    gateway.signal("HUP");
    let started = Instant::now();
    while !gateway.logs().contains("SIGHUP: reloaded the signing keys") {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "no reload logged:\n{}",
            gateway.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let login = gateway
        .post_json(
            "/api/auth/login",
            json!({ "username": "alice", "password": PASSWORD }),
        )
        .await;
    let after = Tokens::from(&login);
    assert_ne!(
        header_of(&after.access)["kid"],
        header_of(&before.access)["kid"]
    );
    assert_eq!(
        gateway
            .get_with_token("/api/auth/me", &before.access)
            .await
            .status,
        StatusCode::OK
    );
}

async fn logs_never_carry_a_secret(backend: Backend) {
    let upstream = EchoUpstream::start().await;
    let deployment = Deployment::new(backend).await;
    let gateway = Process::start(&deployment, &["--upstream", &upstream.url()]).await;
    let tokens = Tokens::from(&gateway.register("alice", PASSWORD).await);
    let wrong = "a distinctive wrong password";
    gateway
        .post_json(
            "/api/auth/login",
            json!({ "username": "alice", "password": wrong }),
        )
        .await;
    let login = gateway
        .post_json(
            "/api/auth/login",
            json!({ "username": "alice", "password": PASSWORD }),
        )
        .await;
    let second = Tokens::from(&login);
    let cookie = format!("tollgate_access={}; other=cookie-value-xyz", second.access);
    gateway
        .send(Method::GET, "/api/tickets", &[("cookie", &cookie)], None)
        .await;
    gateway
        .get_with_token("/api/tickets?access_token=query-secret-abc", &tokens.access)
        .await;
    let refreshed = Tokens::from(&gateway.refresh(&tokens.refresh).await);
    gateway.refresh(&tokens.refresh).await;
    gateway
        .send(
            Method::POST,
            "/api/auth/logout",
            &[("authorization", &format!("Bearer {}", refreshed.access))],
            None,
        )
        .await;
    gateway
        .get_with_token("/api/auth/me", &format!("{}x", second.access))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let logs = gateway.logs();
    assert!(
        logs.contains("\"path\":\"/api/tickets\""),
        "the requests were logged:\n{logs}"
    );
    assert!(
        logs.contains("auth failure"),
        "auth failures were logged:\n{logs}"
    );
    let signature = |token: &str| token.rsplit('.').next().unwrap().to_string();
    for secret in [
        PASSWORD.to_string(),
        wrong.to_string(),
        tokens.access.clone(),
        signature(&tokens.access),
        tokens.refresh.clone(),
        second.access.clone(),
        signature(&second.access),
        second.refresh.clone(),
        refreshed.refresh.clone(),
        "cookie-value-xyz".to_string(),
        "query-secret-abc".to_string(),
    ] {
        assert!(
            !logs.contains(&secret),
            "the logs carry a secret ({} chars)",
            secret.len()
        );
    }
}

async fn a_large_response_streams_through_a_small_gateway(backend: Backend) {
    let upstream = EchoUpstream::start().await;
    let deployment = Deployment::new(backend).await;
    let gateway = Process::start(&deployment, &["--upstream", &upstream.url()]).await;
    let tokens = Tokens::from(&gateway.register("alice", PASSWORD).await);
    let baseline = gateway.rss_kib();
    let request = http::Request::get(format!(
        "http://{}/bytes/{}",
        gateway.addr,
        32 * 1024 * 1024
    ))
    .header("authorization", format!("Bearer {}", tokens.access))
    .body(http_body_util::Full::new(bytes::Bytes::new()))
    .unwrap();
    let mut body = gateway.http().request(request).await.unwrap().into_body();
    // Read slowly, so a gateway that buffered instead of streaming would
    // hold most of the body at once; sample its memory as we go.
    let (mut received, mut largest) = (0usize, 0u64);
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        let frame = frame.unwrap();
        let before = received / (1024 * 1024);
        received += frame.data_ref().map_or(0, |data| data.len());
        if received / (1024 * 1024) != before {
            largest = largest.max(gateway.rss_kib());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(received, 32 * 1024 * 1024);
    let grown = largest.saturating_sub(baseline);
    assert!(
        grown < 8 * 1024,
        "the gateway grew {grown} KiB while streaming 32 MiB"
    );
}

async fn three_instances_start_at_once_and_share_everything(backend: Backend) {
    let deployment = Deployment::new(backend).await;
    let separate_keys: Vec<Deployment> = (0..3)
        .map(|_| Deployment {
            keys: Arc::new(tempfile::tempdir().unwrap()),
            ..deployment.clone()
        })
        .collect();
    let (a, b, c) = tokio::join!(
        Process::start(&separate_keys[0], &[]),
        Process::start(&separate_keys[1], &[]),
        Process::start(&separate_keys[2], &[]),
    );
    let instances = [a, b, c];

    let attempts = instances
        .iter()
        .cycle()
        .take(9)
        .map(|instance| instance.register("contested", PASSWORD));
    let statuses: Vec<StatusCode> = futures_util::future::join_all(attempts)
        .await
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        8,
        "{statuses:?}"
    );

    let login = instances[0]
        .post_json(
            "/api/auth/login",
            json!({ "username": "contested", "password": PASSWORD }),
        )
        .await;
    let mut tokens = Tokens::from(&login);
    for instance in instances.iter().cycle().skip(1).take(6) {
        assert_eq!(
            instance
                .get_with_token("/api/auth/me", &tokens.access)
                .await
                .status,
            StatusCode::OK
        );
        let refreshed = instance.refresh(&tokens.refresh).await;
        assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text());
        tokens = Tokens::from(&refreshed);
    }
}

on_both_backends!(
    tokens_and_refreshes_survive_kill_9,
    sigterm_lets_a_slow_proxied_request_finish,
    sighup_picks_up_a_rotation_at_once,
    logs_never_carry_a_secret,
    a_large_response_streams_through_a_small_gateway,
);

mod postgres_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_instances_start_at_once_and_share_everything() {
        super::three_instances_start_at_once_and_share_everything(crate::helpers::Backend::Postgres)
            .await
    }
}
