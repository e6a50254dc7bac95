//! The test harness: a real gateway on port 0 over a real database (a fresh,
//! uniquely named Postgres database or a fresh SQLite file per test), and a
//! `TestApp` with one method per endpoint.

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tollgate::app::App;
use tollgate::cli::Cli;
use tollgate::config::Config;
use tollgate::domain::{Password, Role, Roles, Username};
use tollgate::store::NewUser;
use tollgate::time::UnixMillis;

pub use crate::database::{Backend, TestDatabase};

pub const PASSWORD: &str = "correct horse battery";

/// Generates one `#[tokio::test]` per backend for each named test function
/// `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
    };
}

/// Everything a gateway needs that outlives one process: its database and
/// its key store. Restart tests start a second gateway on the same one.
#[derive(Clone)]
pub struct Deployment {
    pub database: Arc<TestDatabase>,
    /// How gateways reach the database: its URL, unless a test routes it
    /// through something else.
    pub database_url: String,
    pub keys: Arc<tempfile::TempDir>,
    /// With the database key store: the key-encryption key (base64) every
    /// gateway of this deployment is given.
    pub key_encryption_key: Option<String>,
}

impl Deployment {
    pub async fn new(backend: Backend) -> Deployment {
        let database = TestDatabase::new(backend).await;
        Deployment {
            database_url: database.url.clone(),
            database,
            keys: Arc::new(tempfile::tempdir().expect("a keys directory")),
            key_encryption_key: None,
        }
    }

    /// Keeps the signing keys in the database (`--key-store database`),
    /// sealed under a key-encryption key of its own.
    pub fn with_keys_in_the_database(self) -> Deployment {
        Deployment {
            key_encryption_key: Some(new_key_encryption_key()),
            ..self
        }
    }

    pub fn keys_dir(&self) -> &Path {
        self.keys.path()
    }

    /// The key-store flags every gateway and command of this deployment gets.
    pub fn key_store_args(&self) -> Vec<String> {
        match self.key_encryption_key {
            Some(_) => vec!["--key-store".into(), "database".into()],
            None => Vec::new(),
        }
    }

    /// The environment every gateway and command of this deployment gets.
    pub fn environment(&self) -> Vec<(String, String)> {
        self.key_encryption_key
            .iter()
            .map(|key| ("TOLLGATE_KEY_ENCRYPTION_KEY".to_string(), key.clone()))
            .collect()
    }

    /// The configuration a gateway of this deployment gets: defaults, this
    /// database and keys directory, plus `extra` flags.
    pub fn config(&self, extra: &[&str]) -> Config {
        let mut args: Vec<String> = vec![
            "tollgate".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--database-url".into(),
            self.database_url.clone(),
            "--keys-dir".into(),
            self.keys_dir().display().to_string(),
        ];
        args.extend(self.key_store_args());
        args.extend(extra.iter().map(|arg| arg.to_string()));
        let cli = Cli::try_parse_from(args).expect("test flags parse");
        let environment = self.environment();
        cli.config
            .into_config(&|name| {
                environment
                    .iter()
                    .find(|(variable, _)| variable == name)
                    .map(|(_, value)| value.clone())
            })
            .expect("test configuration is valid")
    }

    pub async fn spawn(&self, extra: &[&str]) -> TestApp {
        TestApp::start(self.clone(), self.config(extra)).await
    }
}

/// A running gateway in this process. Its requests are those of
/// [`GatewayClient`], which it dereferences to.
pub struct TestApp {
    pub deployment: Deployment,
    pub app: Arc<App>,
    client: GatewayClient,
    /// The `--admin-listen` listener, when configured.
    pub admin: Option<GatewayClient>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl Deref for TestApp {
    type Target = GatewayClient;

    fn deref(&self) -> &GatewayClient {
        &self.client
    }
}

/// Requests to a gateway at `addr`, one method per endpoint.
pub struct GatewayClient {
    pub addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl TestApp {
    /// A gateway with default settings on a fresh deployment.
    pub async fn spawn(backend: Backend) -> TestApp {
        Deployment::new(backend).await.spawn(&[]).await
    }

    pub async fn spawn_with(backend: Backend, extra: &[&str]) -> TestApp {
        Deployment::new(backend).await.spawn(extra).await
    }

    pub async fn start(deployment: Deployment, config: Config) -> TestApp {
        let listeners = tollgate::server::bind(&config)
            .await
            .expect("binding port 0");
        let addr = listeners.public.local_addr().expect("a bound address");
        let admin = listeners
            .admin
            .as_ref()
            .map(|admin| GatewayClient::new(admin.local_addr().expect("a bound address")));
        let app = App::build(config).await.expect("the gateway starts");
        let (shutdown, on_shutdown) = oneshot::channel::<()>();
        let server = tokio::spawn({
            let app = app.clone();
            async move {
                tollgate::server::run(listeners, app, async {
                    let _ = on_shutdown.await;
                })
                .await
                .expect("the server runs");
            }
        });
        TestApp {
            deployment,
            app,
            client: GatewayClient::new(addr),
            admin,
            shutdown: Some(shutdown),
            server: Some(server),
        }
    }

    /// Creates `username` with [`PASSWORD`] and `roles` (registration gives
    /// none), logs in, and returns its tokens.
    pub async fn signed_up_with_roles(&self, username: &str, roles: &[&str]) -> Tokens {
        let password = Password::parse(PASSWORD.to_string()).unwrap();
        self.app
            .store
            .create_user(NewUser {
                username: &Username::parse(username).unwrap(),
                email: None,
                password_hash: self.app.passwords.hash(&password).await.unwrap(),
                roles: Roles::new(
                    roles
                        .iter()
                        .map(|role| Role::parse(role).unwrap())
                        .collect(),
                ),
                now: UnixMillis::now(),
            })
            .await
            .expect("a new user");
        let response = self.login(username, PASSWORD).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        Tokens::from(&response)
    }

    /// Stops the gateway gracefully; its deployment lives on.
    pub async fn stop(mut self) -> Deployment {
        self.shutdown.take().map(|shutdown| shutdown.send(()));
        if let Some(server) = self.server.take() {
            server.await.expect("the server stops cleanly");
        }
        self.app.store.close().await;
        self.deployment.clone()
    }
}

impl GatewayClient {
    pub fn new(addr: SocketAddr) -> GatewayClient {
        GatewayClient {
            addr,
            client: http_client(),
        }
    }

    /// The underlying client, for requests that stream.
    pub fn http(&self) -> &Client<HttpConnector, Full<Bytes>> {
        &self.client
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends one request; `body` is sent as JSON unless it is a string.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Body>,
    ) -> TestResponse {
        send_request(&self.client, method, &self.url(path), headers, body).await
    }

    /// Sends `request` as raw bytes on a new connection and returns the raw
    /// answer: for framings and targets a well-behaved client cannot send.
    pub async fn raw(&self, request: &[u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connecting");
        stream.write_all(request).await.expect("sending");
        let mut answer = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            stream.read_to_end(&mut answer),
        );
        let _ = read.await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    pub async fn post_json(&self, path: &str, body: Value) -> TestResponse {
        self.send(Method::POST, path, &[], Some(Body::Json(body)))
            .await
    }

    pub async fn register(&self, username: &str, password: &str) -> TestResponse {
        self.post_json(
            "/api/auth/register",
            json!({ "username": username, "password": password }),
        )
        .await
    }

    pub async fn register_with_email(
        &self,
        username: &str,
        password: &str,
        email: &str,
    ) -> TestResponse {
        self.post_json(
            "/api/auth/register",
            json!({ "username": username, "password": password, "email": email }),
        )
        .await
    }

    pub async fn login(&self, username: &str, password: &str) -> TestResponse {
        self.post_json(
            "/api/auth/login",
            json!({ "username": username, "password": password }),
        )
        .await
    }

    /// Registers `username` with [`PASSWORD`] and returns its tokens.
    pub async fn signed_up(&self, username: &str) -> Tokens {
        let response = self.register(username, PASSWORD).await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.text());
        Tokens::from(&response)
    }

    pub async fn refresh(&self, refresh_token: &str) -> TestResponse {
        self.post_json(
            "/api/auth/refresh",
            json!({ "refresh_token": refresh_token }),
        )
        .await
    }

    /// Refreshes the way a browser does: by the refresh cookie, with no body
    /// or a `body` naming no token.
    pub async fn refresh_by_cookie(&self, refresh_token: &str, body: Option<Body>) -> TestResponse {
        self.post_with_refresh_cookie("/api/auth/refresh", refresh_token, body)
            .await
    }

    /// Logs out the way a browser whose access cookie is gone does: by the
    /// refresh cookie alone.
    pub async fn logout_by_cookie(&self, refresh_token: &str) -> TestResponse {
        self.post_with_refresh_cookie("/api/auth/logout", refresh_token, None)
            .await
    }

    /// A POST carrying the refresh cookie, from the gateway's own origin as
    /// a browser would send it.
    async fn post_with_refresh_cookie(
        &self,
        path: &str,
        refresh_token: &str,
        body: Option<Body>,
    ) -> TestResponse {
        let cookie = format!("tollgate_refresh={refresh_token}");
        let origin = self.url("");
        self.send(
            Method::POST,
            path,
            &[("cookie", &cookie), ("origin", &origin)],
            body,
        )
        .await
    }

    pub async fn get_with_token(&self, path: &str, access_token: &str) -> TestResponse {
        let bearer = format!("Bearer {access_token}");
        self.send(Method::GET, path, &[("authorization", &bearer)], None)
            .await
    }

    pub async fn me(&self, access_token: &str) -> TestResponse {
        self.get_with_token("/api/auth/me", access_token).await
    }

    pub async fn post_with_token(
        &self,
        path: &str,
        access_token: &str,
        body: Option<Value>,
    ) -> TestResponse {
        let bearer = format!("Bearer {access_token}");
        self.send(
            Method::POST,
            path,
            &[("authorization", &bearer)],
            body.map(Body::Json),
        )
        .await
    }

    pub async fn logout(&self, access_token: &str) -> TestResponse {
        self.post_with_token("/api/auth/logout", access_token, None)
            .await
    }

    /// Logs out the session of a refresh token named in the body, without
    /// any access token.
    pub async fn logout_by_refresh_token(&self, refresh_token: &str) -> TestResponse {
        self.post_json(
            "/api/auth/logout",
            json!({ "refresh_token": refresh_token }),
        )
        .await
    }

    pub async fn logout_all(&self, access_token: &str) -> TestResponse {
        self.post_with_token("/api/auth/logout-all", access_token, None)
            .await
    }

    pub async fn sessions(&self, access_token: &str) -> TestResponse {
        self.get_with_token("/api/auth/sessions", access_token)
            .await
    }

    pub async fn delete_session(&self, access_token: &str, session_id: &str) -> TestResponse {
        let bearer = format!("Bearer {access_token}");
        self.send(
            Method::DELETE,
            &format!("/api/auth/sessions/{session_id}"),
            &[("authorization", &bearer)],
            None,
        )
        .await
    }

    pub async fn change_password(
        &self,
        access_token: &str,
        current_password: &str,
        new_password: &str,
    ) -> TestResponse {
        self.post_with_token(
            "/api/auth/password",
            access_token,
            Some(json!({
                "current_password": current_password,
                "new_password": new_password,
            })),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.send(Method::GET, path, &[], None).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.take().map(|shutdown| shutdown.send(()));
    }
}

/// An HTTP client for the tests.
pub fn http_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A client that speaks HTTP/2 without TLS, with prior knowledge (h2c).
pub fn h2_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Sends one request; `body` is sent as JSON unless it is raw.
pub async fn send_request(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Body>,
) -> TestResponse {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let bytes = match body {
        None => Bytes::new(),
        Some(Body::Json(value)) => {
            request = request.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(&value).unwrap())
        }
        Some(Body::Raw(raw)) => Bytes::from(raw),
    };
    let request = request
        .body(Full::new(bytes))
        .expect("a valid test request");
    let response = client.request(request).await.expect("the gateway answers");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a complete body")
        .to_bytes();
    TestResponse {
        status,
        headers,
        body,
    }
}

pub enum Body {
    Json(Value),
    Raw(String),
}

pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("a JSON body, got {:?}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `error` code of an error body.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The `reason` of a 401 `invalid_token`.
    pub fn reason(&self) -> String {
        self.json()["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|value| value.to_str().unwrap().to_string())
            .collect()
    }

    /// The `Set-Cookie` header of the cookie `name`.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.set_cookies()
            .into_iter()
            .find(|cookie| cookie.starts_with(&format!("{name}=")))
    }

    /// The attributes of the `Set-Cookie` of cookie `name`, its value left
    /// out, sorted.
    #[track_caller]
    pub fn cookie_attributes(&self, name: &str) -> Vec<String> {
        let cookie = self
            .set_cookie(name)
            .unwrap_or_else(|| panic!("a Set-Cookie for {name}: {:?}", self.set_cookies()));
        let mut attributes: Vec<String> = cookie.split("; ").skip(1).map(str::to_string).collect();
        attributes.sort();
        attributes
    }

    /// Asserts an error answer: status, code, and the contract's headers.
    #[track_caller]
    pub fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert_eq!(self.error(), code, "body: {}", self.text());
        assert!(
            self.json()["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        if status == StatusCode::UNAUTHORIZED {
            let challenge = self
                .header("www-authenticate")
                .expect("a 401 carries WWW-Authenticate");
            assert!(
                challenge.starts_with("Bearer realm=\"tollgate\""),
                "{challenge}"
            );
        }
    }

    /// Asserts a 401 `invalid_token` with `reason`.
    #[track_caller]
    pub fn assert_rejected(&self, reason: &str) {
        self.assert_error(StatusCode::UNAUTHORIZED, "invalid_token");
        assert_eq!(self.reason(), reason, "body: {}", self.text());
        let challenge = self.header("www-authenticate").unwrap();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    }
}

/// The tokens of a token body.
#[derive(Clone, Debug)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
    pub user_id: String,
}

impl Tokens {
    /// The session the tokens belong to: the access token's `sid`.
    pub fn session_id(&self) -> String {
        claims_of(&self.access)["sid"]
            .as_str()
            .expect("a sid claim")
            .to_string()
    }
}

impl From<&TestResponse> for Tokens {
    fn from(response: &TestResponse) -> Tokens {
        let body = response.json();
        Tokens {
            access: body["access_token"]
                .as_str()
                .expect("an access token")
                .to_string(),
            refresh: body["refresh_token"]
                .as_str()
                .expect("a refresh token")
                .to_string(),
            user_id: body["user"]["id"].as_str().expect("a user id").to_string(),
        }
    }
}

/// The claims of a token, decoded without verification.
pub fn claims_of(token: &str) -> Value {
    tollgate::auth::tokens::decode_unverified(token)
        .expect("a decodable token")
        .1
}

/// The header of a token, decoded without verification.
pub fn header_of(token: &str) -> Value {
    tollgate::auth::tokens::decode_unverified(token)
        .expect("a decodable token")
        .0
}

/// 32 random bytes, base64: what `openssl rand -base64 32` makes.
pub fn new_key_encryption_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}

/// The PEM of the key `kid` in a keys directory.
pub fn private_key_pem(keys_dir: &Path, kid: &str) -> Vec<u8> {
    std::fs::read(keys_dir.join(format!("{kid}.pem"))).expect("the key's PEM file")
}
